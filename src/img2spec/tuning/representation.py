"""How much of what astronomers measure a spectral representation keeps (the VAE study's objective).

The representation's own reconstruction of an observed spectrum (encode, decode at the catalogue
z) is the best any image model can do through it. It is scored on the VAL split the way evaluate
scores a method, each figure as a ratio to the colour kNN's (fitted on train): mean D against the
observation, and the NMAD of EW(Halpha), Dn4000 and Hdelta_A against the reference (the noiseless
truth on the mock, else the observed spectrum). The score is the mean of the ratios: lower is
better, 1 is "as uninformative as the catalogue colours". Unlike the ELBO, a smooth reconstruction
without lines scores badly here.
"""

from __future__ import annotations

import numpy as np

from ..config.measure import MeasureParams
from ..metrics import deviation
from ..evaluate.baselines import knn_colour, mean_spectrum
from ..evaluate.measurements import measure_methods, score_measurements

SCORED_QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a")
"""Measurements in the score (those with any object measured by both)."""


def reconstruct(encoder, decoder, data, rows: np.ndarray) -> np.ndarray:
    """Decoder(encoder(observed spectrum)) of catalogue `rows`, at their catalogue z."""
    from ..models.inference import decode, decoder_input, encode_spectra

    z = data.catalog["z"].to_numpy(np.float64)[rows]
    mu, _ = encode_spectra(encoder, np.asarray(data.flux[rows]), np.asarray(data.ivar[rows]), z=z)
    return decode(decoder, decoder_input(decoder, mu, z))


def representation_score(encoder, decoder, data, mp: MeasureParams, *, k: int, use_magnitude: bool) -> dict:
    """{"score", "ratios": {name: ceiling / colour kNN}, "ceiling", "knn_colour"} on the val split."""
    train, val = data.indices("train"), data.indices("val")
    if len(val) == 0:
        raise ValueError(f"{data.root}: the val split is empty; the representation cannot be scored")
    obs, ivar = np.asarray(data.flux[val], np.float32), np.asarray(data.ivar[val], np.float32)
    fallback = mean_spectrum(data.flux[train], data.ivar[train])
    preds = {"vae_ceiling": reconstruct(encoder, decoder, data, val),
             "knn_colour": knn_colour(data, train, val, k, use_magnitude, fallback)[0]}
    truth = None if data.truth_flux is None else np.asarray(data.truth_flux[val], np.float32)
    tables = measure_methods(data.wave, data.catalog["z"].to_numpy(np.float64)[val], data.frame, obs, ivar,
                             preds, truth, mp)
    scored = score_measurements(tables, mp)["measurements"]
    figures = {name: {"D": float(np.nanmean(deviation(p, obs, ivar)))} for name, p in preds.items()}
    for name in preds:
        figures[name].update({q: scored[q][name]["nmad"] for q in SCORED_QUANTITIES})
    ratios = {key: figures["vae_ceiling"][key] / figures["knn_colour"][key] for key in figures["vae_ceiling"]
              if np.isfinite(figures["vae_ceiling"][key]) and np.isfinite(figures["knn_colour"][key])
              and figures["knn_colour"][key] > 0}
    return {"score": float(np.mean(list(ratios.values()))) if ratios else float("nan"), "ratios": ratios,
            "ceiling": figures["vae_ceiling"], "knn_colour": figures["knn_colour"], "n_val": int(len(val))}
