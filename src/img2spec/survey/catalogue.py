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
from ..measure.classify import UNCLASSIFIED
from ..models.class_draws import POINT_SUFFIX, ClassDraws, posterior_classes
from ..predict.measure_columns import Z_NONE, measurement_target, measure_target
from ..predict.predictor import BatchResult

Z_FROM_INPUT = "catalogue"
"""`z_lines_source` of a redshift given in the cutout shard (`z`)."""

FLAG_SKIPPED = 1
"""No prediction: the cutout failed a check (see `skip_reason`)."""
FLAG_NO_NORM = 2
"""No normalisation magnitude: flux stays normalised (`norm` is NaN)."""
FLAG_SIGMA_NONFINITE = 4
"""Some pixel of the predicted sigma is NaN or inf (of the pixels the worker decoded: every pixel
for the spectra store, the measured rest-frame pixels for the compact store)."""
FLAG_FLUX_NONFINITE = 8
"""Some pixel of the predicted flux is NaN or inf (the same pixels)."""
CLASS_SUFFIX = "_class"
"""Integer class columns (`measure.classify`): `UNCLASSIFIED` (-1) on the rows of skipped objects."""


def measurement_columns(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
                        z: np.ndarray | None, frame: str = "observed",
                        mp: MeasureParams | None = None) -> dict[str, np.ndarray]:
    """Spectral measurements per predicted object: `measure.measure_spectra` columns (line
    fluxes in normalised units x A (times `norm`: 1e-17 erg/s/cm^2), rest-frame EWs, Dn4000,
    Hdelta_A, their errors from the predicted sigma and flags, BPT / AGN / SF classes with
    -1 = unclassified) on the normalised spectra (N, P) on `wave`, lines placed at `z`,
    windows of `mp` (the bundle's `measure` params; the defaults when None)."""
    z = np.full(len(flux), np.nan) if z is None else z
    return measure_spectra(flux, wave, z, mp or MeasureParams(), sigma=sigma, frame=frame)


def catalogue_frame(
    *, object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, shard: str, norm: np.ndarray,
    skip_reason: list[str], predicted: np.ndarray, wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
    z_input: np.ndarray | None = None, z_pred: np.ndarray | None = None, z_pred_err: np.ndarray | None = None,
    frame: str = "observed", z_used: np.ndarray | None = None, z_given: np.ndarray | None = None,
    rest_wave: np.ndarray | None = None, rest_flux: np.ndarray | None = None, rest_sigma: np.ndarray | None = None,
    measure_params: MeasureParams | None = None, rest_columns: np.ndarray | None = None,
    class_draws: ClassDraws | None = None, class_priors: dict[str, list[float]] | None = None,
) -> pd.DataFrame:
    """Rows for all N objects of a shard; `flux`/`sigma`/`z_pred` hold the M = predicted.sum() predictions.

    A rest-frame bundle also gives `z_used`/`z_given` (M,) and `rest_flux`/`rest_sigma` (M, R) on
    `rest_wave`: its lines are measured on the rest-frame spectrum and `z_lines` is the z the
    spectrum was decoded at (`predict.measure_columns.measurement_target`; `measure_frame` says
    which spectrum was measured). `measure_params`: the bundle's `measure` params.
    `rest_columns`: the rest pixels decoded when only those were (`BatchResult.rest_columns`; `flux`
    and `sigma` then have no pixels): the quality flags look at those.
    `class_draws` (of the M predictions; `Predictor.class_draws`) and `class_priors`: the classes are
    decided on the posterior draws, the point spectrum's kept as `<class>_point`.
    """
    n = len(object_id)
    flags = np.zeros(n, np.int32)
    flags[~predicted] |= FLAG_SKIPPED
    flags[~np.isfinite(norm)] |= FLAG_NO_NORM
    rows = np.flatnonzero(predicted)
    if len(rows):
        decoded_flux, decoded_sigma = ((flux, sigma) if rest_columns is None else
                                       (rest_flux[:, rest_columns], rest_sigma[:, rest_columns]))
        flags[rows[~np.isfinite(decoded_sigma).all(axis=1)]] |= FLAG_SIGMA_NONFINITE
        flags[rows[~np.isfinite(decoded_flux).all(axis=1)]] |= FLAG_FLUX_NONFINITE
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
    # What was decoded is measured: a rest-frame spectrum at its decode z, else the observed one at
    # the input z where given (spectroscopic), else the photo-z; z_lines_source says which.
    z_in = np.full(len(rows), np.nan) if z_input is None else np.asarray(z_input, np.float64)[rows]
    result = BatchResult(flux=flux, sigma=sigma, z=z_pred, z_err=z_pred_err, z_used=z_used, z_given=z_given,
                         rest_wave=rest_wave, rest_flux=rest_flux, rest_sigma=rest_sigma)
    target = measurement_target(result, wave, frame, z_in, [Z_FROM_INPUT] * len(rows))
    cols["z_lines"] = spread(target.z, np.float64)
    src = np.full(n, Z_NONE, dtype=object)
    src[rows] = target.z_source
    cols["z_lines_source"] = src
    measured_frame = np.full(n, Z_NONE, dtype=object)
    measured_frame[rows] = target.frame
    cols["measure_frame"] = measured_frame
    if len(rows):
        measured = measure_target(target, measure_params)
    else:  # no prediction in this part: the same (empty) columns, so every part has one schema
        blank = np.full((1, len(wave)), np.nan, np.float32)
        probe = measurement_columns(wave, blank, blank, np.full(1, np.nan), frame, measure_params)
        measured = {name: np.asarray(values)[:0] for name, values in probe.items()}
    measured = posterior_classes(measured, class_draws, class_priors)
    for name, values in measured.items():
        cols[name] = _spread_measured(name, np.asarray(values), rows, n)
    return pd.DataFrame(cols)


def _spread_measured(name: str, values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """A measurement column over all n objects from its values on `rows`: floats NaN elsewhere,
    classes `UNCLASSIFIED`, flags (and any other integer) null in a nullable integer of their own
    width, so every part stores them as integers (a float column would turn bit tests into guesses)."""
    if values.dtype.kind == "f":
        full = np.full(n, np.nan, values.dtype)
        full[rows] = values
        return full
    if values.dtype.kind not in "iub":
        raise TypeError(f"measurement column {name}: unexpected dtype {values.dtype}")
    if name.removesuffix(POINT_SUFFIX).endswith(CLASS_SUFFIX):
        full = np.full(n, UNCLASSIFIED, values.dtype)
        full[rows] = values
        return full
    data = np.zeros(n, values.dtype)
    data[rows] = values
    mask = np.ones(n, bool)
    mask[rows] = False
    return pd.arrays.IntegerArray(data.astype(values.dtype if values.dtype.kind != "b" else np.int8), mask)
