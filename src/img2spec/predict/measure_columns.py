"""Spectral measurements of a batch of predictions as per-object columns (`img2spec predict`).

Each object's lines, Dn4000, Hdelta_A and classes (`measure.measure_spectra`, errors from
the predicted sigma) become entries of `ScaledPrediction.columns`, hence one FITS header
card and one table column each. Lines are placed at the object's given redshift (catalogue),
else at the model's predicted redshift, else nowhere (NaN, flag NO_REDSHIFT); `MEAS_Z` and
`MEAS_ZSRC` say which. Line fluxes are in normalised units x Angstrom (times the object's
norm / NORMFAC: 1e-17 erg/s/cm^2), like the table spectra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config.measure import MeasureParams
from ..measure import AGN_LABELS, BPT_LABELS, SF_LABELS, measure_spectra

Z_PREDICTED = "photo-z"
"""`MEAS_ZSRC` when the CNN photo-z placed the lines (the label of predict.writers ZSOURCE)."""
Z_NONE = "none"
LABELS = {"bpt_class": BPT_LABELS, "agn_class": AGN_LABELS, "sf_class": SF_LABELS}
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


def _comment(name: str) -> str:
    if name in SCALAR_COMMENTS:
        return SCALAR_COMMENTS[name]
    for suffix in ("flux_err", "ew_err", "flux", "ew", "flag"):
        if name.endswith("_" + suffix):
            return COMMENTS[suffix]
    return ""


def _scalar(name: str, value) -> Any:
    if name in LABELS:
        return LABELS[name][int(value)]
    if name.endswith("_flag"):
        return int(value)
    return float(value)


def batch_columns(flux: np.ndarray, sigma: np.ndarray, wave: np.ndarray, frame: str, z: np.ndarray,
                  z_source: list[str], mp: MeasureParams | None = None) -> list[dict[str, tuple[Any, str]]]:
    """One {NAME: (value, comment)} per object of the batch (upper-case names, FITS style)."""
    mp = mp or MeasureParams()
    table = measure_spectra(flux, wave, z, mp, sigma=sigma, frame=frame)
    out = []
    for k in range(len(z)):
        cols = {name.upper(): (_scalar(name, v[k]), _comment(name)) for name, v in table.items()}
        cols["MEAS_Z"] = (float(z[k]), "z placing the windows")
        cols["MEAS_ZSRC"] = (z_source[k], "catalogue|photo-z|none")
        out.append(cols)
    return out
