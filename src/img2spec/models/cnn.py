"""The image CNN: (H, W, bands) stretched cutouts -> (2L,) = concat(latent mean, log-variance)
in the target's own units (VAE latents or PCA coefficients), or (2L + 2,) with a redshift
head: concat(latent mean, latent log-variance, z mean, z log-variance).

The network predicts standardised targets; the standardisation (train-split mean and
std of the target means) is folded into the model as two built-in `Normalization(invert=True)`
layers, so the saved `cnn.keras` outputs latent units directly and inference needs no
side file.

Latent hypotheses (`cnn.hypotheses` = K > 1): the head predicts K latent means and
log-variances and K logits; the output is the most probable hypothesis (`SelectHypothesis`),
in the same layout, so everything downstream reads it as a one-hypothesis network. Training
reads every hypothesis through `hypothesis_view` (multiple-choice learning, `trainer.py`).

Hybrid input (`cnn.photometry: true`, after Wu & Peek 2020): a second input named
"photometry" takes the catalogue photometry a survey ships with each cutout, as
`photometry_features` builds it: the PS1 Kron colours g-r, r-i, i-z, z-y, the r magnitude
and a last column, the "missing" indicator (1: no usable photometry). The features'
train-split mean/std are folded in (like the target standardisation) and the model itself
sets the features of a missing row to 0 (the train mean) under the indicator, so the
images-only path is the same network with the indicator set. Training withholds the
photometry of a random `cnn.photometry_missing_fraction` of objects per batch, so that
path is trained too (one network, not a second training).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..config.models import CNNParams
from .contract import (N_PHOTOMETRY, N_REDSHIFT_OUTPUTS, PHOTOMETRY_BANDS, PHOTOMETRY_FEATURES,  # noqa: F401
                       PHOTOMETRY_INPUT, PHOTOMETRY_MAG_BAND, REDSHIFT_LAYER, has_redshift_head,
                       photometry_features, split_output, uses_photometry)

LOGVAR_INIT_BIAS = 0.0
"""Initial predicted log-variance in standardised units (variance = target variance)."""
HYPOTHESIS_LAYER = "latent_hypothesis"
"""Name of the layer that picks the most probable latent hypothesis (`cnn.hypotheses` > 1)."""
MIN_PHOTOMETRY_STD = 1e-6
"""Floor of a photometry feature's train-split std."""


def photometry_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the features (indicator column excluded) over the rows that have photometry."""
    feats = np.asarray(features, np.float64)
    present = feats[feats[:, -1] < 0.5, :-1]
    if len(present) == 0:
        raise ValueError("cnn.photometry: no training object has finite photometry in every band")
    return present.mean(axis=0), np.maximum(present.std(axis=0), MIN_PHOTOMETRY_STD)


@keras.saving.register_keras_serializable(package="img2spec")
class MaskMissing(layers.Layer):
    """(N, F + 1) [standardised features, missing indicator] -> features set to 0 (the train
    mean) where the indicator is 1, indicator kept: whatever a missing row carries is never read."""

    def call(self, inputs):
        feats, flag = inputs[:, :-1], inputs[:, -1:]
        feats = ops.where(flag > 0.5, ops.zeros_like(feats), feats)
        return ops.concatenate([feats, flag], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def _photometry_branch(params: CNNParams, mean: np.ndarray, std: np.ndarray):
    """(input, features): the photometry input standardised (folded train stats), masked, through dense layers."""
    phot = keras.Input((N_PHOTOMETRY,), name=PHOTOMETRY_INPUT)
    shift = np.append(np.asarray(mean, np.float32).reshape(N_PHOTOMETRY - 1), 0.0).astype(np.float32)
    var = np.append(np.asarray(std, np.float32).reshape(N_PHOTOMETRY - 1) ** 2, 1.0).astype(np.float32)
    y = layers.Normalization(mean=shift, variance=var, name="photometry_std")(phot)
    y = MaskMissing(name="photometry_mask")(y)
    for i, units in enumerate(params.photometry_units):
        y = layers.Dense(units, activation="relu", name=f"photometry_dense{i}")(y)
    return phot, y


def _plain_blocks(x, params: CNNParams, size: int):
    """conv-BN-ReLU-maxpool per entry of `params.filters`."""
    for i, n in enumerate(params.filters):
        x = layers.Conv2D(n, params.kernel_size, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=params.bn_momentum, name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if params.pool > 1 and size // params.pool >= 1:
            x = layers.MaxPooling2D(params.pool, name=f"pool{i}")(x)
            size //= params.pool
    return x


def _residual_blocks(x, params: CNNParams, size: int):
    """Per entry of `params.filters`: a pre-pooled residual block (ResNet "basic block":
    conv-BN-ReLU-conv-BN plus a 1x1 projection shortcut, then ReLU). Pooling comes first, so
    the two convs of block b run at the resolution the plain network's single conv of block
    b+1 runs at: the same output size and about the plain blocks' CPU time."""
    for i, n in enumerate(params.filters):
        if params.pool > 1 and size // params.pool >= 1:
            x = layers.MaxPooling2D(params.pool, name=f"pool{i}")(x)
            size //= params.pool
        short = layers.Conv2D(n, 1, use_bias=False, name=f"res{i}_proj")(x)
        short = layers.BatchNormalization(momentum=params.bn_momentum, name=f"res{i}_proj_bn")(short)
        y = layers.Conv2D(n, params.kernel_size, padding="same", use_bias=False, name=f"res{i}_conv_a")(x)
        y = layers.BatchNormalization(momentum=params.bn_momentum, name=f"res{i}_bn_a")(y)
        y = layers.Activation("relu", name=f"res{i}_relu_a")(y)
        y = layers.Conv2D(n, params.kernel_size, padding="same", use_bias=False, name=f"res{i}_conv_b")(y)
        y = layers.BatchNormalization(momentum=params.bn_momentum, name=f"res{i}_bn_b", gamma_initializer="zeros")(y)
        x = layers.Activation("relu", name=f"res{i}_relu")(layers.Add(name=f"res{i}_add")([short, y]))
    return x


@keras.saving.register_keras_serializable(package="img2spec")
class SelectHypothesis(layers.Layer):
    """[means (N, K L), log-variances (N, K L), logits (N, K)] -> (mean (N, L), log-variance (N, L))
    of the most probable hypothesis. A one-hot mask from the row maximum (no arg-max or gather), so
    the exported graph needs only elementwise operations and reductions."""

    def __init__(self, hypotheses: int, **kwargs):
        super().__init__(**kwargs)
        self.hypotheses = int(hypotheses)

    def call(self, inputs):
        means, logvars, logits = inputs
        k = self.hypotheses
        top = ops.cast(ops.equal(logits, ops.max(logits, axis=-1, keepdims=True)), means.dtype)
        top = top / ops.sum(top, axis=-1, keepdims=True)  # an exact tie averages (never seen in practice)

        def pick(a):
            return ops.sum(ops.reshape(a, (-1, k, a.shape[-1] // k)) * top[:, :, None], axis=1)

        return [pick(means), pick(logvars)]

    def compute_output_shape(self, input_shape):
        n, width = input_shape[0]
        return [(n, width // self.hypotheses)] * 2

    def get_config(self):
        return {**super().get_config(), "hypotheses": self.hypotheses}


def _latent_heads(x, hypotheses: int, target_mean: np.ndarray, target_std: np.ndarray):
    """(latent mean, log-variance) in target units; with `hypotheses` > 1 those of the most probable of
    that many heads (`SelectHypothesis`, its inputs read back by `hypothesis_view`)."""
    k, latent_dim = int(hypotheses), len(target_mean)
    z_mean = layers.Dense(k * latent_dim, name="z_mean_std")(x)
    z_logvar = layers.Dense(k * latent_dim, name="z_logvar_std", kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant(LOGVAR_INIT_BIAS))(x)
    # Back to target units: mean*std + mu; logvar + log(std^2) (per hypothesis, the same statistics).
    suffix = "" if k == 1 else "_hypotheses"
    mean_out = layers.Normalization(mean=np.tile(target_mean, k), variance=np.tile(target_std**2, k), invert=True,
                                    name=f"z_mean{suffix}")(z_mean)
    logvar_out = layers.Normalization(mean=np.tile(np.log(target_std**2), k),
                                      variance=np.ones(k * latent_dim, np.float32), invert=True,
                                      name=f"z_logvar{suffix}")(z_logvar)
    if k == 1:
        return mean_out, logvar_out
    logits = layers.Dense(k, name="hypothesis_logits")(x)
    return tuple(SelectHypothesis(k, name=HYPOTHESIS_LAYER)([mean_out, logvar_out, logits]))


def hypothesis_count(cnn: keras.Model) -> int:
    """K of a network built with `cnn.hypotheses` = K (1 for any other)."""
    names = {layer.name: layer for layer in cnn.layers}
    return names[HYPOTHESIS_LAYER].hypotheses if HYPOTHESIS_LAYER in names else 1


def hypothesis_view(cnn: keras.Model) -> keras.Model:
    """The network as training sees it: its output followed by every hypothesis' latent means (K L),
    log-variances (K L) and logits (K), the same layers and weights; `cnn` itself when K = 1."""
    if hypothesis_count(cnn) == 1:
        return cnn
    means, logvars, logits = cnn.get_layer(HYPOTHESIS_LAYER).input
    out = layers.Concatenate(name="output_and_hypotheses")([cnn.output, means, logvars, logits])
    return keras.Model(cnn.inputs if len(cnn.inputs) > 1 else cnn.inputs[0], out, name="cnn_hypotheses")


def build_cnn(
    input_shape: tuple[int, int, int], latent_dim: int, params: CNNParams,
    target_mean: np.ndarray, target_std: np.ndarray,
    redshift_mean: float | None = None, redshift_std: float | None = None,
    photometry_mean: np.ndarray | None = None, photometry_std: np.ndarray | None = None,
) -> keras.Model:
    """Conv blocks (`params.architecture`) [+ photometry branch] -> dense -> latent mean, logvar [-> z mean, logvar].

    The redshift head is built when `redshift_mean` and `redshift_std` (train-split z statistics, folded
    into the model like the latent standardisation) are given; the "photometry" input when
    `params.photometry` (`photometry_mean`/`photometry_std`: `photometry_stats` of the train split).
    """
    target_mean = np.asarray(target_mean, np.float32).reshape(latent_dim)
    target_std = np.asarray(target_std, np.float32).reshape(latent_dim)
    images = keras.Input(input_shape, name="images")
    x = images
    size = min(input_shape[:2])
    if params.input_pool > 1 and size // params.input_pool >= 1:
        # Cheap resolution cut before the first conv (64 px at 0.25" -> 32 px at 0.5" still
        # resolves the 3" fibre); the bulk of the conv cost is at full resolution.
        x = layers.AveragePooling2D(params.input_pool, name="input_pool")(x)
        size //= params.input_pool
    if params.architecture == "resnet":
        x = _residual_blocks(x, params, size)
    else:
        x = _plain_blocks(x, params, size)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(params.dropout, name="dropout0")(x)
    inputs = [images]
    if params.photometry:
        if photometry_mean is None or photometry_std is None:
            raise ValueError("cnn.photometry: build_cnn needs the train-split photometry mean and std")
        phot, y = _photometry_branch(params, photometry_mean, photometry_std)
        inputs.append(phot)
        x = layers.Concatenate(name="image_photometry")([x, y])
    x = layers.Dense(params.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(params.dropout, name="dropout1")(x)
    outputs = list(_latent_heads(x, params.hypotheses, target_mean, target_std))
    if redshift_mean is not None and redshift_std is not None:
        z_std = float(max(redshift_std, 1e-6))
        z_raw = layers.Dense(N_REDSHIFT_OUTPUTS, name="z_std", kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant([0.0, LOGVAR_INIT_BIAS]))(x)
        # Back to redshift units: mean*std + z_mean; logvar + log(std^2).
        shift = np.array([redshift_mean, np.log(z_std**2)], np.float32)
        scale = np.array([z_std**2, 1.0], np.float32)
        outputs.append(layers.Normalization(mean=shift, variance=scale, invert=True, name=REDSHIFT_LAYER)(z_raw))
    out = layers.Concatenate(name="latent_mean_logvar")(outputs)
    return keras.Model(inputs if len(inputs) > 1 else images, out, name="cnn")
