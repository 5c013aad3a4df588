"""Mean D_i of a CNN + decoder on one split: train_cnn's val figure and the Optuna objective.

In models/ (not evaluate/) because training stages report it; it is `metrics.deviation` of
exactly what `predict_spectra` predicts, the same function evaluate scores the test split with.
"""

from __future__ import annotations

import numpy as np

from ..metrics import deviation
from .inference import predict_spectra

VALIDATION_BATCH = 256


def split_deviation(cnn, decoder, data, split: str = "val", *, batch_size: int = VALIDATION_BATCH) -> np.ndarray:
    """D_i of every object of `split`, predicted exactly as `predict_spectra` does (the point
    prediction decoder(latent mean) does not depend on sampling, so none is drawn)."""
    idx = data.indices(split)
    if len(idx) == 0:
        raise ValueError(f"{data.root}: the {split} split is empty")
    d = np.empty(len(idx))
    for s in range(0, len(idx), batch_size):
        rows = idx[s:s + batch_size]
        pred = predict_spectra(cnn, decoder, data.images[rows], batch_size=batch_size, sigma_method="none")
        d[s:s + len(rows)] = deviation(pred.flux, data.flux[rows], data.ivar[rows])
    return d


def validation_deviation(cnn, decoder, data) -> float:
    """Mean D_i over the val split (objects without good pixels skipped)."""
    return float(np.nanmean(split_deviation(cnn, decoder, data, "val")))
