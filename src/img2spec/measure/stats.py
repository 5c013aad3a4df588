"""Robust statistics shared by every score of the project (one definition each)."""

from __future__ import annotations

import numpy as np

NMAD_SCALE = 1.4826
"""Gaussian sigma per median absolute deviation (1 / Phi^-1(3/4))."""


def nmad(values: np.ndarray) -> float:
    """NMAD_SCALE x median(|x - median(x)|) over the finite values (NaN if none)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(NMAD_SCALE * np.median(np.abs(x - np.median(x))))
