"""The survey catalogue: one Parquet row per object of a shard (predicted or skipped).

Read the whole catalogue as one data set with the `healpix` partition column:
`pandas.read_parquet(OUT / "catalogue")`, `pyarrow.dataset.dataset(..., partitioning="hive")`
or `dask.dataframe.read_parquet`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config.measure import MeasureParams
from ..measure import measure_spectra
from ..predict.measure_columns import choose_redshift

FLAG_SKIPPED = 1
"""No prediction: the cutout failed a check (see `skip_reason`)."""
FLAG_NO_NORM = 2
"""No normalisation magnitude: flux stays normalised (`norm` is NaN)."""
FLAG_SIGMA_NONFINITE = 4
"""Some pixel of the predicted sigma is NaN or inf."""
FLAG_FLUX_NONFINITE = 8
"""Some pixel of the predicted flux is NaN or inf."""


def measurement_columns(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
                        z: np.ndarray | None, frame: str = "observed") -> dict[str, np.ndarray]:
    """Spectral measurements per predicted object: `measure.measure_spectra` columns (line
    fluxes in normalised units x A (times `norm`: 1e-17 erg/s/cm^2), rest-frame EWs, Dn4000,
    Hdelta_A, their errors from the predicted sigma and flags, BPT / AGN / SF classes with
    -1 = unclassified) on the normalised spectra (N, P) on `wave`, lines placed at `z`."""
    z = np.full(len(flux), np.nan) if z is None else z
    return measure_spectra(flux, wave, z, MeasureParams(), sigma=sigma, frame=frame)


def catalogue_frame(
    *, object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, shard: str, norm: np.ndarray,
    skip_reason: list[str], predicted: np.ndarray, wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
    z_input: np.ndarray | None = None, z_pred: np.ndarray | None = None, z_pred_err: np.ndarray | None = None,
    frame: str = "observed",
) -> pd.DataFrame:
    """Rows for all N objects of a shard; `flux`/`sigma`/`z_pred` hold the M = predicted.sum() predictions."""
    n = len(object_id)
    flags = np.zeros(n, np.int32)
    flags[~predicted] |= FLAG_SKIPPED
    flags[~np.isfinite(norm)] |= FLAG_NO_NORM
    rows = np.flatnonzero(predicted)
    if len(rows):
        flags[rows[~np.isfinite(sigma).all(axis=1)]] |= FLAG_SIGMA_NONFINITE
        flags[rows[~np.isfinite(flux).all(axis=1)]] |= FLAG_FLUX_NONFINITE
    cols: dict[str, object] = {
        "object_id": np.asarray(object_id, dtype=object).astype(str),
        "ra": np.asarray(ra, np.float64), "dec": np.asarray(dec, np.float64),
        "shard": np.full(n, shard, dtype=object),
        "predicted": predicted.astype(bool),
        "norm": np.asarray(norm, np.float64),
        "quality_flags": flags,
        "skip_reason": np.asarray(skip_reason, dtype=object),
    }
    if z_input is not None:
        cols["z_input"] = np.asarray(z_input, np.float64)

    def spread(values: np.ndarray, dtype=np.float32) -> np.ndarray:
        full = np.full(n, np.nan, dtype)
        full[rows] = values
        return full

    if z_pred is not None:
        cols["z_pred"] = spread(z_pred)
        cols["z_pred_err"] = spread(z_pred_err) if z_pred_err is not None else np.full(n, np.nan, np.float32)
    # Lines at the input z where given (spectroscopic), else the photo-z; z_lines_source says which.
    z_given = np.full(len(rows), np.nan) if z_input is None else np.asarray(z_input, np.float64)[rows]
    z_lines, z_src = choose_redshift(z_given, ["catalogue"] * len(rows), z_pred)
    cols["z_lines"] = spread(z_lines, np.float64)
    src = np.full(n, "none", dtype=object)
    src[rows] = z_src
    cols["z_lines_source"] = src
    if len(rows):
        measured = measurement_columns(wave, flux, sigma, z_lines, frame)
    else:  # no prediction in this part: the same (empty) columns, so every part has one schema
        blank = np.full((1, len(wave)), np.nan, np.float32)
        probe = measurement_columns(wave, blank, blank, np.full(1, np.nan), frame)
        measured = {name: np.asarray(values)[:0] for name, values in probe.items()}
    for name, values in measured.items():
        cols[name] = spread(np.asarray(values), np.asarray(values).dtype if np.asarray(values).dtype.kind == "f" else np.float64)
    return pd.DataFrame(cols)
