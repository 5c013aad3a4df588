"""The metric per rest-frame wavelength region (e.g. the 4000 A break, H-alpha)."""

from __future__ import annotations

import numpy as np

from ..io.processed import ProcessedData
from ..metrics import deviation, summarise


def region_masks(data: ProcessedData, rows: np.ndarray,
                 regions: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """(len(rows), P) pixel masks per region, from each object's rest-frame wavelengths
    (`data.rest_wave`: one grid for `prepare.frame: rest`, wave / (1 + z) for observed)."""
    rw = data.rest_wave(rows)
    return {name: (rw >= lo) & (rw < hi) for name, (lo, hi) in regions.items()}


def region_summaries(data: ProcessedData, rows: np.ndarray, regions: dict[str, tuple[float, float]],
                     preds: dict[str, np.ndarray], obs: np.ndarray, ivar: np.ndarray) -> dict[str, dict]:
    """`summarise(D_i)` of every method restricted to each region's pixels (same objects)."""
    masks = region_masks(data, rows, regions)
    return {name: {"rest_wave": list(regions[name]),
                   **{m: summarise(deviation(pred, obs, ivar, mask)) for m, pred in preds.items()}}
            for name, mask in masks.items()}
