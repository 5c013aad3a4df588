"""Baselines evaluated on the same test pixels as the CNN.

All spectra in data/processed are divided by their photometric normalisation, so "mean
training spectrum x photometric norm" is simply the mean normalised training spectrum.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from ..models.data import clean_flux

log = logging.getLogger(__name__)

COLOUR_BANDS = ("g", "r", "i", "z", "y")
MAG_FEATURE_BAND = "r"
CHUNK = 2048
KNN_CHUNK = 256


def mean_spectrum(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Per-pixel mean over the good pixels of the given (train) spectra; 0 where none."""
    total = np.zeros(flux.shape[1])
    count = np.zeros(flux.shape[1])
    for s in range(0, len(flux), CHUNK):
        f, iv = clean_flux(flux[s:s + CHUNK], ivar[s:s + CHUNK])
        total += f.sum(axis=0)
        count += (iv > 0).sum(axis=0)
    covered = count > 0
    mean = np.where(covered, total / np.maximum(count, 1), 0.0)
    if covered.any() and not covered.all():
        # Pixels masked in every spectrum (fixed sky lines): interpolate, so neither this
        # baseline nor the kNN fallback shows spurious zeros there (the metric skips them).
        idx = np.arange(mean.size)
        mean = np.interp(idx, idx[covered], mean[covered])
    return mean.astype(np.float32)


def colour_features(catalog: pd.DataFrame, use_magnitude: bool) -> np.ndarray:
    """(N, 4 or 5): g-r, r-i, i-z, z-y [+ r]."""
    missing = [f"mag_{b}" for b in COLOUR_BANDS if f"mag_{b}" not in catalog]
    if missing:
        raise KeyError(f"catalog.parquet lacks {missing}: needed for the colour kNN baseline")
    mags = np.column_stack([catalog[f"mag_{b}"].to_numpy(float) for b in COLOUR_BANDS])
    feats = mags[:, :-1] - mags[:, 1:]
    if use_magnitude:
        feats = np.column_stack([feats, catalog[f"mag_{MAG_FEATURE_BAND}"].to_numpy(float)])
    return feats


def knn_colour(data, train: np.ndarray, test: np.ndarray, k: int, use_magnitude: bool,
               fallback: np.ndarray) -> tuple[np.ndarray, dict]:
    """Average of the k nearest train neighbours' normalised spectra in standardised colour
    space (good pixels only). Objects with non-finite colours, and pixels no neighbour
    covers, get `fallback` (the mean spectrum); both are counted."""
    feats = colour_features(data.catalog, use_magnitude)
    ok_train = train[np.isfinite(feats[train]).all(axis=1)]
    if len(ok_train) == 0:
        raise ValueError("knn_colour: no train object has finite PS1 colours")
    mu, sd = feats[ok_train].mean(axis=0), feats[ok_train].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    nn = NearestNeighbors(n_neighbors=min(k, len(ok_train))).fit((feats[ok_train] - mu) / sd)
    train_flux, train_ivar = clean_flux(data.flux[ok_train], data.ivar[ok_train])
    good = (train_ivar > 0).astype(np.float32)
    pred = np.tile(fallback, (len(test), 1)).astype(np.float32)
    finite = np.isfinite(feats[test]).all(axis=1)
    if finite.any():
        _, nbr = nn.kneighbors((feats[test][finite] - mu) / sd)
        weighted = train_flux * good
        rows = np.flatnonzero(finite)
        uncovered = 0
        for s in range(0, len(rows), KNN_CHUNK):  # (chunk, k, P) at a time: bounded memory
            part = nbr[s:s + KNN_CHUNK]
            num = weighted[part].sum(axis=1)
            den = good[part].sum(axis=1)
            pred[rows[s:s + KNN_CHUNK]] = np.where(den > 0, num / np.maximum(den, 1), fallback[None, :])
            uncovered += int((den == 0).sum())
    else:
        uncovered = 0
    info = {"k": int(nn.n_neighbors), "n_no_colours": int((~finite).sum()), "n_uncovered_pixels": uncovered,
            "features": ["g-r", "r-i", "i-z", "z-y"] + (["r"] if use_magnitude else [])}
    if info["n_no_colours"]:
        log.warning("knn_colour: %d test objects without finite colours got the mean spectrum", info["n_no_colours"])
    return pred, info


def ceiling_spectra(vae_dir, decoder, obs: np.ndarray, ivar: np.ndarray, z: np.ndarray, *, steps: int,
                    learning_rate: float) -> np.ndarray:
    """The representation's ceiling (`vae_ceiling`): each observed spectrum encoded, its latents refined by
    `steps` Adam steps on its chi-square through `decoder` (the decoder's best fit), decoded at its z."""
    from ..models.inference import decode, decoder_input, encode_spectra, is_conditioned, load_encoder
    from ..models.refine import refine_latents

    mu, _ = encode_spectra(load_encoder(vae_dir), obs, ivar, z=z)
    z_cond = z if is_conditioned(decoder, mu.shape[1]) else None
    mu = refine_latents(decoder, mu, obs, ivar, z_cond, steps=steps, learning_rate=learning_rate)
    return decode(decoder, decoder_input(decoder, mu, z))
