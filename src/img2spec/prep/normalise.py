"""Photometric normalisation: a PS1 Kron magnitude as f_lambda in 1e-17 erg/s/cm^2/A."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..config.constants import AB_ZERO_FNU_CGS, C_ANGSTROM_PER_S, SDSS_FLUX_UNIT

EFFECTIVE_WAVELENGTH_OVERRIDE = {"r": 6201.2}
"""The original study converted the r Kron flux at 6,201.2 A; other bands use speclite's curves."""
MISSING_MAG = -900.0
"""PS1 catalogues flag missing magnitudes with -999."""


@lru_cache(maxsize=None)
def effective_wavelength(band: str) -> float:
    """Effective wavelength (Angstrom) of a PS1 band used for the normalisation."""
    if band in EFFECTIVE_WAVELENGTH_OVERRIDE:
        return EFFECTIVE_WAVELENGTH_OVERRIDE[band]
    import speclite.filters

    curve = speclite.filters.load_filter(f"panstarrs-{band}")
    return float(curve.effective_wavelength.to_value("Angstrom"))


def flambda_from_ab_mag(mag: np.ndarray | float, wavelength_A: float) -> np.ndarray:
    """AB magnitude -> f_lambda at `wavelength_A`, in 1e-17 erg/s/cm^2/A.

    Missing (non-finite or PS1's -999) magnitudes give NaN.
    """
    mag = np.asarray(mag, dtype=np.float64)
    valid = np.isfinite(mag) & (mag > MISSING_MAG)
    fnu = AB_ZERO_FNU_CGS * 10.0 ** (-0.4 * np.where(valid, mag, 0.0))  # flagged -999 would overflow
    flam = fnu * C_ANGSTROM_PER_S / wavelength_A**2 / SDSS_FLUX_UNIT
    return np.where(valid, flam, np.nan)


def mag_to_flambda(mag: np.ndarray | float, band: str) -> np.ndarray:
    """AB magnitude -> f_lambda at the band's effective wavelength, in 1e-17 erg/s/cm^2/A."""
    return flambda_from_ab_mag(mag, effective_wavelength(band))


MAG_MISSING = "missing_magnitude"
"""Reason code: no measurement (NaN, infinite, or PS1's -999 flag)."""
MAG_NONPOSITIVE = "nonpositive_magnitude"
"""Reason code: mag <= 0 (brighter than Vega from a galaxy survey): physically impossible here."""
MAG_IMPLAUSIBLE = "implausible_magnitude"
"""Reason code: finite and positive, but outside [mag_min, mag_max] (params: prepare.mag_min/mag_max)."""


def _default_range() -> tuple[float, float]:
    from ..config.prepare import PrepareParams

    defaults = PrepareParams()
    return defaults.mag_min, defaults.mag_max


def check_magnitudes(mag: np.ndarray | float, mag_min: float | None = None,
                     mag_max: float | None = None) -> np.ndarray:
    """Reason code per magnitude ('' when plausible): THE plausibility check of AB magnitudes.

    MAG_MISSING for non-finite values and PS1's -999 flag, MAG_NONPOSITIVE for other
    values <= 0, MAG_IMPLAUSIBLE outside [mag_min, mag_max] (defaults: the
    `prepare.mag_min`/`mag_max` defaults). A normalisation from any of them would be
    off by orders of magnitude (mag 0 -> 2.8e8 in 1e-17 units), so callers drop or skip
    the object with the code. Used by match, prepare, predict (--mags) and survey.
    """
    lo, hi = _default_range() if mag_min is None or mag_max is None else (mag_min, mag_max)
    mag = np.asarray(mag, dtype=np.float64)
    out = np.full(mag.shape, "", dtype=object)
    finite = np.isfinite(mag)
    missing = ~finite | (mag <= MISSING_MAG)
    out[finite & ~missing & ((mag < lo) | (mag > hi))] = MAG_IMPLAUSIBLE
    out[finite & ~missing & (mag <= 0)] = MAG_NONPOSITIVE
    out[missing] = MAG_MISSING
    return out


def magnitude_problem(mag: float, mag_min: float | None = None, mag_max: float | None = None) -> str | None:
    """`check_magnitudes` for one value: None when plausible, else its reason code."""
    code = check_magnitudes(np.float64(mag), mag_min, mag_max).item()
    return code or None
