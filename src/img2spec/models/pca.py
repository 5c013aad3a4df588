"""The PCA baseline's "VAE": principal components of the train spectra, with the same
number of components as the VAE has latents, and a linear Keras decoder so the PCA + CNN
baseline runs through exactly the same `predict_spectra` path as the real model.

Masked pixels are filled with the train mean spectrum before fitting/projecting (a plain
PCA cannot weight pixels); the metric still counts only good pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from sklearn.decomposition import PCA

from .data import clean_flux
from .layers import Columns, RedshiftToObserved
from .restframe import RestGrid

PCA_FLOOR_LOGVAR = -12.0
"""log-variance given to PCA coefficients (exact projections: no posterior width)."""


@dataclass
class SpectrumPCA:
    mean: np.ndarray        # (P,)
    components: np.ndarray  # (L, P)

    def fill(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        """Cleaned flux with masked pixels replaced by the mean spectrum."""
        flux, ivar = clean_flux(flux, ivar)
        return np.where(ivar > 0, flux, self.mean[None, :]).astype(np.float32)

    def project(self, flux: np.ndarray, ivar: np.ndarray, batch: int = 4096) -> np.ndarray:
        out = [(self.fill(flux[s:s + batch], ivar[s:s + batch]) - self.mean) @ self.components.T
               for s in range(0, len(flux), batch)]
        return np.concatenate(out).astype(np.float32)

    def decoder(self, rest: RestGrid | None = None, obs_wave: np.ndarray | None = None) -> keras.Model:
        """coefficients (L,) -> mean + coefficients @ components, as one frozen Dense layer; for
        components on a rest grid, concat(coefficients, z) -> that spectrum redshifted onto
        `obs_wave` (the same layers as a rest-frame VAE decoder)."""
        L, P = self.components.shape
        if rest is None:
            z = keras.Input((L,), name="latent")
            x = z
        else:
            z = keras.Input((L + 1,), name="latent_and_z")
            x = Columns(0, L, name="latent")(z)
        dense = keras.layers.Dense(P, name="flux" if rest is None else "rest_flux", trainable=False)
        out = dense(x)
        dense.set_weights([self.components.astype(np.float32), self.mean.astype(np.float32)])
        if rest is not None:
            out = RedshiftToObserved(rest.ln_start, rest.ln_step, rest.n, np.log(np.asarray(obs_wave, np.float64)),
                                     name="flux")([out, z])
        return keras.Model(z, out, name="pca_decoder")


def fit_pca(flux: np.ndarray, ivar: np.ndarray, n_components: int, seed: int = 0) -> SpectrumPCA:
    """PCA of train spectra (masked pixels filled with the good-pixel mean)."""
    f, iv = clean_flux(flux, ivar)
    good = iv > 0
    counts = good.sum(axis=0)
    mean = np.where(counts > 0, (f * good).sum(axis=0) / np.maximum(counts, 1), 0.0).astype(np.float32)
    filled = np.where(good, f, mean[None, :])
    n_components = min(n_components, *filled.shape)
    pca = PCA(n_components=n_components, random_state=seed, svd_solver="full").fit(filled)
    return SpectrumPCA(pca.mean_.astype(np.float32), pca.components_.astype(np.float32))


def to_rest_frame(flux: np.ndarray, ivar: np.ndarray, obs_wave: np.ndarray, z: np.ndarray,
                  grid: RestGrid) -> tuple[np.ndarray, np.ndarray]:
    """Observed spectra (N, P) -> (flux, ivar) on the rest grid: flux interpolated linearly at
    rest_wave (1 + z); ivar 0 where either neighbouring observed pixel is masked, off the observed
    grid, or without a finite z (a plain PCA of the rest frame, as the rest-frame VAE sees it)."""
    flux, ivar = clean_flux(flux, ivar)
    ln_obs = np.log(np.asarray(obs_wave, np.float64))
    z = np.asarray(z, np.float64).reshape(-1, 1)
    pos = np.interp(np.log(grid.wave)[None, :] + np.log1p(z), ln_obs, np.arange(ln_obs.size), left=-1.0, right=-1.0)
    pos = np.where(np.isfinite(pos), pos, -1.0)
    inside = pos >= 0
    left = np.clip(np.floor(pos), 0, ln_obs.size - 2).astype(np.int64)
    w = np.clip(pos - left, 0.0, 1.0)
    fa, fb = np.take_along_axis(flux, left, 1), np.take_along_axis(flux, left + 1, 1)
    ia, ib = np.take_along_axis(ivar, left, 1), np.take_along_axis(ivar, left + 1, 1)
    good = inside & (ia > 0) & (ib > 0)
    rest_flux = np.where(good, (1 - w) * fa + w * fb, 0.0).astype(np.float32)
    rest_ivar = np.where(good, np.minimum(ia, ib), 0.0).astype(np.float32)
    return rest_flux, rest_ivar
