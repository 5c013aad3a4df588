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

    def decoder(self) -> keras.Model:
        """coefficients (L,) -> mean + coefficients @ components, as one frozen Dense layer."""
        L, P = self.components.shape
        z = keras.Input((L,), name="latent")
        dense = keras.layers.Dense(P, name="flux", trainable=False)
        out = dense(z)
        dense.set_weights([self.components.astype(np.float32), self.mean.astype(np.float32)])
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
