"""The direct baseline in the evaluate stage: its test predictions as a measurement table.

`direct_table` returns the columns `measure.measure_spectra` gives for the scored quantities
and classes, so `measurements.score_measurements` scores the direct model as method `direct`
beside the spectra's measurements (against the same reference, on the same test objects).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..io.processed import ProcessedData

log = logging.getLogger(__name__)

METHOD = "direct"
"""Method name of the direct baseline in metrics/evaluate.json."""


def direct_table(direct_dir: str | Path, data: ProcessedData, rows: np.ndarray, *,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """Predicted quantities and classes of catalogue `rows` by the model in `direct_dir`, under
    their `measure_spectra` column names (plus `<q>_sigma` and `<scheme>_prob`).
    FileNotFoundError when `direct_dir` holds no trained model."""
    from ..models.direct import load_direct, predict_direct

    model, info = load_direct(direct_dir)
    return predict_direct(model, info, data, rows, batch_size=batch_size)


def add_direct_table(tables: dict[str, dict[str, np.ndarray]], direct_dir: str | Path, data: ProcessedData,
                     rows: np.ndarray, notes: dict[str, str], *, batch_size: int = 256) -> None:
    """Add the `direct` table to the measurement `tables`, or a note in `notes` when there is no
    trained direct model (cnn.train_direct: false): evaluate goes on without it."""
    try:
        tables[METHOD] = direct_table(direct_dir, data, rows, batch_size=batch_size)
    except FileNotFoundError as exc:
        notes[METHOD] = str(exc)
        log.info("evaluate: %s", exc)
