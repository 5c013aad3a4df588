"""The survey catalogue: one Parquet row per object of a shard (predicted or skipped).

Read the whole catalogue as one data set with the `healpix` partition column:
`pandas.read_parquet(OUT / "catalogue")`, `pyarrow.dataset.dataset(..., partitioning="hive")`
or `dask.dataframe.read_parquet`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLAG_SKIPPED = 1
"""No prediction: the cutout failed a check (see `skip_reason`)."""
FLAG_NO_NORM = 2
"""No normalisation magnitude: flux stays normalised (`norm` is NaN)."""
FLAG_SIGMA_NONFINITE = 4
"""Some pixel of the predicted sigma is NaN or inf."""
FLAG_FLUX_NONFINITE = 8
"""Some pixel of the predicted flux is NaN or inf."""


def measurement_columns(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
                        z: np.ndarray | None) -> dict[str, np.ndarray]:
    """Spectral measurements per predicted object (line fluxes, EWs, Dn4000, ...).

    The one place where `img2spec.measure`'s vectorised API plugs into the survey: it
    gets the normalised spectra (N, P) on `wave` and the redshift to place lines at
    (predicted when the model gives one, else the input catalogue's, else None) and
    returns {column: (N,) array}. Until then: no measurement columns.
    """
    return {}


def catalogue_frame(
    *, object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, shard: str, norm: np.ndarray,
    skip_reason: list[str], predicted: np.ndarray, wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
    z_input: np.ndarray | None = None, z_pred: np.ndarray | None = None, z_pred_err: np.ndarray | None = None,
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
    z_lines = z_pred if z_pred is not None else (None if z_input is None else np.asarray(z_input)[rows])
    for name, values in measurement_columns(wave, flux, sigma, z_lines).items():
        cols[name] = spread(np.asarray(values), np.asarray(values).dtype if np.asarray(values).dtype.kind == "f" else np.float64)
    return pd.DataFrame(cols)
