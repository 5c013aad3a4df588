"""Spectral measurements of a batch of predictions as per-object columns (`img2spec predict`).

Each object's lines, Dn4000, Hdelta_A and classes (`measure.measure_spectra` with the
bundle's `measure` params, errors from the predicted sigma) become entries of
`ScaledPrediction.columns`, hence one FITS header card and one table column each.

What is measured follows what was decoded (`measurement_target`, shared with the survey):
- a rest-frame bundle (a `BatchResult` with `rest_flux`): the rest-frame spectrum on its own
  grid (`MEAS_FRAME` 'rest'), and `MEAS_Z` is `z_used`, the z its observed-frame spectrum was
  decoded at: the catalogue z where given, else the photo-z. Line fluxes are then integrated
  over rest-frame Angstrom (the observed line flux is (1 + MEAS_Z) times that).
- an observed-frame bundle: the observed-frame spectrum (`MEAS_FRAME` 'observed') with the
  windows placed at the object's given redshift (catalogue), else the predicted one, else
  nowhere (NaN, flag NO_REDSHIFT).
`MEAS_ZSRC` says where `MEAS_Z` came from. Line fluxes are in normalised units x Angstrom
(times the object's norm / NORMFAC: 1e-17 erg/s/cm^2), like the table spectra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..config.measure import MeasureParams
from ..measure import measure_spectra
from ..models.class_draws import CLASS_COLUMNS, CLASSIFIED_SUFFIX, POINT_SUFFIX, ClassDraws, posterior_classes
from .predictor import BatchResult
from .writers import Z_FROM_PHOTOZ, Z_UNKNOWN

Z_PREDICTED = Z_FROM_PHOTOZ
"""`MEAS_ZSRC` when the CNN photo-z placed the lines: the same label as `ZSOURCE`."""
Z_NONE = Z_UNKNOWN
LABELS = CLASS_COLUMNS
"""Class column -> its labels (`measure.classify`)."""
# Card comments stay short: a HIERARCH card's key and value leave ~25 characters of 80.
COMMENTS = {
    "flux": "[norm x A] x NORMFAC",
    "flux_err": "[norm x A] 1-sigma",
    "ew": "[A] rest EW, emission>0",
    "ew_err": "[A] 1-sigma",
    "flag": "1 grid 2 mask 4 cont 8 z",
}
SCALAR_COMMENTS = {
    "dn4000": "Balogh+99", "dn4000_err": "1-sigma", "dn4000_flag": COMMENTS["flag"],
    "hdelta_a": "[A] Worthey+97, abs>0", "hdelta_a_err": "[A] 1-sigma", "hdelta_a_flag": COMMENTS["flag"],
    "log_nii_halpha": "log [NII]6584/Halpha", "log_oiii_hbeta": "log [OIII]5007/Hbeta",
    "bpt_class": "Kauffmann+03, Kewley+01", "agn_class": "above Kewley+01",
    "sf_class": "measure.classes",
}
PROBABILITY_COMMENT = "share of latent draws"
POINT_COMMENT = "of the point spectrum"


def choose_redshift(z_given: np.ndarray, z_source: list[str], z_pred: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Per object: the given z where finite (its own source label), else the predicted z."""
    z = np.asarray(z_given, np.float64).copy()
    src = [s if np.isfinite(v) else Z_NONE for s, v in zip(z_source, z)]
    if z_pred is not None:
        zp = np.asarray(z_pred, np.float64)
        if zp.shape != z.shape:
            raise ValueError(f"predicted redshift: expected shape {z.shape} (one per object), got {zp.shape}")
        use = ~np.isfinite(z) & np.isfinite(zp)
        z[use] = zp[use]
        src = [Z_PREDICTED if u else s for s, u in zip(src, use)]
    return z, src


@dataclass(frozen=True)
class MeasureTarget:
    """The spectra a batch's lines are measured on, and the redshift reported with them."""

    flux: np.ndarray
    """(N, P) normalised flux on `wave`."""
    sigma: np.ndarray
    wave: np.ndarray
    """(P,) Angstrom: the observed grid, or the rest-frame grid for frame 'rest'."""
    frame: str
    """'observed' (windows placed at `z`) or 'rest' (windows at z = 0)."""
    z: np.ndarray
    """(N,) float64: the z the lines are at, which for a rest-frame bundle is the decode z."""
    z_source: list[str]
    """Per object: the input's source label (e.g. 'catalogue'), `Z_PREDICTED` or `Z_NONE`."""


def measurement_target(result: BatchResult, wave: np.ndarray, frame: str, z_input: np.ndarray,
                       z_input_source: Sequence[str]) -> MeasureTarget:
    """What to measure for a batch: the rest-frame spectrum of a rest-frame bundle (at the z it
    was decoded at), else the observed-frame one at the given z, else the predicted z.

    `z_input` (N,) are the user's redshifts (NaN: unknown), labelled by `z_input_source`.
    """
    if result.has_rest:
        if result.z_used is None or result.z_given is None or result.rest_sigma is None:
            raise ValueError("a rest-frame prediction needs z_used, z_given and rest_sigma")
        z = np.asarray(result.z_used, np.float64)
        given = np.asarray(result.z_given, bool)
        src = [s if g else Z_PREDICTED for s, g in zip(z_input_source, given)]
        src = [s if np.isfinite(v) else Z_NONE for s, v in zip(src, z)]
        return MeasureTarget(result.rest_flux, result.rest_sigma, np.asarray(result.rest_wave, np.float64),
                             "rest", z, src)
    z, src = choose_redshift(z_input, list(z_input_source), result.z)
    return MeasureTarget(result.flux, result.sigma, np.asarray(wave, np.float64), frame, z, src)


def measure_target(target: MeasureTarget, mp: MeasureParams | None = None) -> dict[str, np.ndarray]:
    """`measure.measure_spectra` columns (N,) of `target` with `mp` (the defaults when None)."""
    return measure_spectra(target.flux, target.wave, target.z, mp or MeasureParams(), sigma=target.sigma,
                           frame=target.frame)


def _comment(name: str) -> str:
    if name in SCALAR_COMMENTS:
        return SCALAR_COMMENTS[name]
    if "_class_p_" in name or name.endswith(CLASSIFIED_SUFFIX):
        return PROBABILITY_COMMENT
    if name.endswith(POINT_SUFFIX):
        return POINT_COMMENT
    for suffix in ("flux_err", "ew_err", "flux", "ew", "flag"):
        if name.endswith("_" + suffix):
            return COMMENTS[suffix]
    return ""


def _scalar(name: str, value) -> Any:
    label_name = name.removesuffix(POINT_SUFFIX)
    if label_name in LABELS:
        return LABELS[label_name][int(value)]
    if name.endswith("_flag"):
        return int(value)
    return float(value)


def batch_columns(flux: np.ndarray, sigma: np.ndarray, wave: np.ndarray, frame: str, z: np.ndarray,
                  z_source: list[str], mp: MeasureParams | None = None) -> list[dict[str, tuple[Any, str]]]:
    """One {NAME: (value, comment)} per object of the batch (upper-case names, FITS style)."""
    return target_columns(MeasureTarget(flux, sigma, np.asarray(wave, np.float64), frame,
                                        np.asarray(z, np.float64), list(z_source)), mp)


def target_columns(target: MeasureTarget, mp: MeasureParams | None = None, draws: ClassDraws | None = None,
                   priors: dict[str, list[float]] | None = None) -> list[dict[str, tuple[Any, str]]]:
    """`batch_columns` of a `measurement_target`: the measurements plus MEAS_Z, MEAS_ZSRC, MEAS_FRAME;
    with the batch's `draws`, the classes decided on them (`models.class_draws.posterior_classes`)."""
    table = posterior_classes(measure_target(target, mp), draws, priors)
    out = []
    for k in range(len(target.z)):
        cols = {name.upper(): (_scalar(name, v[k]), _comment(name)) for name, v in table.items()}
        cols["MEAS_Z"] = (float(target.z[k]), "z of the lines (decode z)")
        cols["MEAS_ZSRC"] = (target.z_source[k], "catalogue|photo-z|none")
        cols["MEAS_FRAME"] = (target.frame, "spectrum: rest|observed")
        out.append(cols)
    return out
