"""The image network's array contract, without Keras: what goes in and what comes out.

Shared by the Keras models (`cnn`, `losses`) and by the exported graphs a bundle ships
(`onnx_runtime`), so a worker that runs the exported graphs never imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOGVAR_CLIP = 12.0
"""|log-variance| bound inside losses: keeps exp() finite early in training (and at inference)."""
REDSHIFT_LAYER = "redshift_mean_logvar"
"""Name of the redshift head's output layer: its presence marks a CNN that predicts z."""
N_REDSHIFT_OUTPUTS = 2
"""(z mean, z log-variance) appended to the latent outputs."""
PHOTOMETRY_INPUT = "photometry"
"""Name of the hybrid CNN's second input: its presence marks a CNN that takes catalogue photometry."""
PHOTOMETRY_BANDS = ("g", "r", "i", "z", "y")
"""Order of the magnitudes `photometry_features` takes (PS1 Kron AB)."""
PHOTOMETRY_MAG_BAND = "r"
"""The one magnitude used as a feature beside the colours (brightness, hence distance)."""
PHOTOMETRY_FEATURES = ("g-r", "r-i", "i-z", "z-y", "r", "missing")
"""Columns of the photometry input; the last one is the missing indicator."""
N_PHOTOMETRY = len(PHOTOMETRY_FEATURES)


def photometry_features(mags: np.ndarray | None, n: int = 0) -> np.ndarray:
    """(N, 5) magnitudes in `PHOTOMETRY_BANDS` order -> (N, N_PHOTOMETRY) network input.

    A row with any non-finite magnitude gets the missing indicator 1 and placeholder
    features 0 (the network masks them under the indicator: never read as magnitudes).
    `mags=None` gives `n` rows of the images-only input (indicator 1 everywhere).
    """
    if mags is None:
        out = np.zeros((int(n), N_PHOTOMETRY), np.float32)
        out[:, -1] = 1.0
        return out
    mags = np.asarray(mags, np.float64)
    if mags.ndim != 2 or mags.shape[1] != len(PHOTOMETRY_BANDS):
        raise ValueError(f"photometry: expected (N, {len(PHOTOMETRY_BANDS)}) magnitudes in the order "
                         f"{PHOTOMETRY_BANDS}, got shape {mags.shape}")
    ok = np.isfinite(mags).all(axis=1)
    r = mags[:, PHOTOMETRY_BANDS.index(PHOTOMETRY_MAG_BAND)]
    feats = np.where(ok[:, None], np.column_stack([mags[:, :-1] - mags[:, 1:], r]), 0.0)
    return np.column_stack([feats, (~ok).astype(np.float64)]).astype(np.float32)


def has_redshift_head(cnn: Any) -> bool:
    """True for a CNN built with a redshift head (older models have none). An exported network
    states it (`redshift_head`); a Keras model has the named output layer."""
    declared = getattr(cnn, "redshift_head", None)
    if declared is not None:
        return bool(declared)
    # an ensemble (`models/ensemble.py`) holds its members as nested models
    return any(layer.name == REDSHIFT_LAYER or (hasattr(layer, "layers") and has_redshift_head(layer))
               for layer in cnn.layers)


def uses_photometry(cnn: Any) -> bool:
    """True for a hybrid CNN (a second input named `PHOTOMETRY_INPUT`)."""
    return any(getattr(t, "name", "") == PHOTOMETRY_INPUT for t in cnn.inputs)


def split_output(out: np.ndarray, redshift: bool = False) -> tuple[np.ndarray, ...]:
    """(N, 2L) CNN output -> (mean (N, L), logvar (N, L)); with `redshift` the (N, 2L + 2)
    output -> (mean, logvar, z mean (N,), z logvar (N,))."""
    if not redshift:
        half = out.shape[-1] // 2
        return out[..., :half], out[..., half:]
    half = (out.shape[-1] - N_REDSHIFT_OUTPUTS) // 2
    return out[..., :half], out[..., half:2 * half], out[..., 2 * half], out[..., 2 * half + 1]
