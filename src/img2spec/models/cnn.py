"""The image CNN: (H, W, bands) stretched cutouts -> (2L,) = concat(latent mean, log-variance)
in the target's own units (VAE latents or PCA coefficients).

The network predicts standardised targets; the standardisation (train-split mean and
std of the target means) is folded into the model as two built-in `Normalization(invert=True)`
layers, so the saved `cnn.keras` outputs latent units directly and inference needs no
side file.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..config.models import CNNParams

LOGVAR_INIT_BIAS = 0.0
"""Initial predicted log-variance in standardised units (variance = target variance)."""


def build_cnn(
    input_shape: tuple[int, int, int], latent_dim: int, params: CNNParams,
    target_mean: np.ndarray, target_std: np.ndarray,
) -> keras.Model:
    """Conv blocks (conv-BN-ReLU-pool per entry of `params.filters`) -> dense -> mean, logvar."""
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
    for i, n in enumerate(params.filters):
        x = layers.Conv2D(n, params.kernel_size, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if params.pool > 1 and size // params.pool >= 1:
            x = layers.MaxPooling2D(params.pool, name=f"pool{i}")(x)
            size //= params.pool
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(params.dropout, name="dropout0")(x)
    x = layers.Dense(params.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(params.dropout, name="dropout1")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean_std")(x)
    z_logvar = layers.Dense(latent_dim, name="z_logvar_std", kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant(LOGVAR_INIT_BIAS))(x)
    # Back to target units: mean*std + mu; logvar + log(std^2).
    mean_out = layers.Normalization(mean=target_mean, variance=target_std**2, invert=True, name="z_mean")(z_mean)
    logvar_out = layers.Normalization(mean=np.log(target_std**2), variance=np.ones(latent_dim, np.float32),
                                      invert=True, name="z_logvar")(z_logvar)
    out = layers.Concatenate(name="latent_mean_logvar")([mean_out, logvar_out])
    return keras.Model(images, out, name="cnn")


def split_output(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2L) CNN output -> (mean (N, L), logvar (N, L))."""
    half = out.shape[-1] // 2
    return out[..., :half], out[..., half:]
