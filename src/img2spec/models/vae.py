"""The spectrum VAE: a dense encoder (flux, ivar) -> (mu, logvar) and a dense decoder
latents -> normalised flux, joined for training by `SpectrumVAE`.

Encoder and decoder are plain functional models saved on their own in `.keras` format
(the artefact contract); `SpectrumVAE` only exists to train them.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from .layers import Columns, HiddenWithInput, MaskedFlux, ObservedToRest, RedshiftToObserved
from .losses import LOGVAR_CLIP, chi2_per_pixel, kl_divergence


def build_encoder(n_pix: int, latent_dim: int, units: Sequence[int]) -> keras.Model:
    """(flux, ivar) -> (mu, logvar). Masked pixels are zeroed and the mask is a second
    input channel, so the encoder never sees garbage under a mask."""
    flux = keras.Input((n_pix,), name="flux")
    ivar = keras.Input((n_pix,), name="ivar")
    x = MaskedFlux(name="flux_and_mask")([flux, ivar])
    for i, n in enumerate(units):
        x = layers.Dense(n, activation="gelu", name=f"enc_dense{i}")(x)
    mu = layers.Dense(latent_dim, name="mu")(x)
    logvar = layers.Dense(latent_dim, name="logvar", kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant(-4.0))(x)
    return keras.Model([flux, ivar], [mu, logvar], name="encoder")


def build_rest_encoder(obs_wave, latent_dim: int, units: Sequence[int], z_min: float, z_max: float,
                       oversample: float = 1.0) -> keras.Model:
    """(flux, ivar, z) -> (mu, logvar) through `ObservedToRest`: the encoder of a rest-frame VAE reads
    the spectrum on the decoder's rest grid, where every galaxy's lines sit in the same pixels."""
    import numpy as np

    ln_obs = np.log(np.asarray(obs_wave, np.float64))
    start, step, n_rest = rest_grid(obs_wave, z_min, z_max, oversample)
    flux = keras.Input((ln_obs.size,), name="flux")
    ivar = keras.Input((ln_obs.size,), name="ivar")
    z = keras.Input((1,), name="z")
    obs_step = float((ln_obs[-1] - ln_obs[0]) / (ln_obs.size - 1))
    x = ObservedToRest(float(ln_obs[0]), obs_step, ln_obs.size, start + step * np.arange(n_rest),
                       name="rest_flux_and_mask")([flux, ivar, z])
    for i, n in enumerate(units):
        x = layers.Dense(n, activation="gelu", name=f"enc_dense{i}")(x)
    mu = layers.Dense(latent_dim, name="mu")(x)
    logvar = layers.Dense(latent_dim, name="logvar", kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant(-4.0))(x)
    return keras.Model([flux, ivar, z], [mu, logvar], name="encoder")


def encoder_needs_z(encoder: keras.Model) -> bool:
    """True for a rest-frame VAE's encoder, whose inputs are (flux, ivar, z)."""
    return len(encoder.inputs) == 3


def _hidden(x, units: Sequence[int], skip: bool):
    """The decoder's GELU layers; with `skip`, one `HiddenWithInput` layer (latents beside them)."""
    if skip:
        return HiddenWithInput(units, name="dec_hidden_and_latent")(x)
    for i, n in enumerate(units):
        x = layers.Dense(n, activation="gelu", name=f"dec_dense{i}")(x)
    return x


def build_decoder(n_pix: int, latent_dim: int, units: Sequence[int], skip: bool = False) -> keras.Model:
    """latents (L,) -> normalised flux (P,); `skip`: plus a linear map of the latents."""
    z = keras.Input((latent_dim,), name="latent")
    hidden = _hidden(z, units, skip)  # built before the output layer: the order fixes the seeded initial weights
    out = layers.Dense(n_pix, name="flux")(hidden)
    return keras.Model(z, out, name="decoder")


REST_Z_MARGIN = 0.02
"""The rest grid covers the observed grid de-redshifted over the train z range widened by this."""


def rest_grid(obs_wave, z_min: float, z_max: float, oversample: float = 1.0) -> tuple[float, float, int]:
    """(ln start, ln step, n) of a log-uniform rest grid that every observed pixel maps into for
    z in [z_min - margin, z_max + margin]; its step is the observed grid's / `oversample`."""
    import numpy as np

    ln_obs = np.log(np.asarray(obs_wave, np.float64))
    step = float(np.median(np.diff(ln_obs))) / float(oversample)
    lo = float(ln_obs[0] - np.log1p(z_max + REST_Z_MARGIN))
    hi = float(ln_obs[-1] - np.log1p(max(z_min - REST_Z_MARGIN, 0.0)))
    return lo, step, int(np.ceil((hi - lo) / step)) + 2


def build_rest_decoder(obs_wave, latent_dim: int, units: Sequence[int], z_min: float, z_max: float,
                       oversample: float = 1.0, skip: bool = False) -> keras.Model:
    """concat(latents (L,), z) -> normalised flux on the observed grid: a dense decoder of the
    rest-frame spectrum (`skip`: plus a linear map of the latents), redshifted explicitly by
    `RedshiftToObserved`."""
    import numpy as np

    start, step, n_rest = rest_grid(obs_wave, z_min, z_max, oversample)
    cond = keras.Input((latent_dim + 1,), name="latent_and_z")
    x = Columns(0, latent_dim, name="latent")(cond)
    hidden = _hidden(x, units, skip)  # built before the output layer: the order fixes the seeded initial weights
    rest = layers.Dense(n_rest, name="rest_flux")(hidden)
    out = RedshiftToObserved(start, step, n_rest, np.log(np.asarray(obs_wave, np.float64)), name="flux")([rest, cond])
    return keras.Model(cond, out, name="decoder")


def is_redshift_conditioned(decoder: keras.Model, latent_dim: int) -> bool:
    """True for a rest-frame decoder, whose input is concat(latents, z)."""
    return int(decoder.input_shape[-1]) == int(latent_dim) + 1


class SpectrumVAE(keras.Model):
    """Trains encoder + decoder on 0.5 chi2/P + beta * KL/P.

    Inputs are `(flux, ivar)`; `y` is unused. `kl_scale` is a non-trainable variable the
    warm-up callback ramps from 0 to 1; the effective KL weight is kl_weight * kl_scale.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, kl_weight: float = 1.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.kl_weight = float(kl_weight)
        self.kl_scale = keras.Variable(1.0, trainable=False, name="kl_scale", dtype="float32")
        self.seed_gen = keras.random.SeedGenerator(seed)
        self.chi2_tracker = keras.metrics.Mean(name="chi2")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def call(self, inputs, training=False):
        flux, ivar = inputs[0], inputs[1]
        enc_in = [flux, ivar, ops.reshape(ops.cast(inputs[2], flux.dtype), (-1, 1))] if encoder_needs_z(self.encoder) \
            else [flux, ivar]
        mu, logvar = self.encoder(enc_in, training=training)
        if training:
            eps = keras.random.normal(ops.shape(mu), seed=self.seed_gen)
            z = mu + ops.exp(0.5 * ops.clip(logvar, -LOGVAR_CLIP, LOGVAR_CLIP)) * eps
        else:
            z = mu
        if len(inputs) > 2:  # rest-frame decoder: the true redshift redshifts the decoded spectrum
            z = ops.concatenate([z, ops.reshape(ops.cast(inputs[2], z.dtype), (-1, 1))], axis=-1)
        return self.decoder(z, training=training), mu, logvar

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        flux, ivar = x[0], x[1]
        recon, mu, logvar = y_pred
        chi2 = chi2_per_pixel(recon, flux, ivar)
        n_pix = ops.cast(ops.shape(flux)[-1], "float32")
        kl = kl_divergence(mu, logvar) / n_pix
        self.chi2_tracker.update_state(chi2)
        self.kl_tracker.update_state(kl)
        return ops.mean(chi2 + self.kl_weight * self.kl_scale * kl)

    @property
    def metrics(self):
        return [*super().metrics, self.chi2_tracker, self.kl_tracker]


class KLWarmup(keras.callbacks.Callback):
    """Ramp the KL weight linearly from 1/(warmup+1) to 1 over `warmup` epochs."""

    def __init__(self, warmup_epochs: int) -> None:
        super().__init__()
        self.warmup_epochs = int(warmup_epochs)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        scale = 1.0 if self.warmup_epochs <= 0 else min(1.0, (epoch + 1) / (self.warmup_epochs + 1))
        self.model.kl_scale.assign(scale)
