"""Photometric normalisation: a PS1 Kron magnitude as f_lambda in 1e-17 erg/s/cm^2/A."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

C_ANGSTROM_PER_S = 2.99792458e18
AB_ZERO_FNU_CGS = 3631e-23
"""AB zero point: 3631 Jy in erg/s/cm^2/Hz."""
SDSS_FLUX_UNIT = 1e-17
"""SDSS spectra are in 1e-17 erg/s/cm^2/A."""
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


def mag_to_flambda(mag: np.ndarray | float, band: str) -> np.ndarray:
    """AB magnitude -> f_lambda at the band's effective wavelength, in 1e-17 erg/s/cm^2/A.

    Missing (non-finite or PS1's -999) magnitudes give NaN.
    """
    mag = np.asarray(mag, dtype=np.float64)
    valid = np.isfinite(mag) & (mag > MISSING_MAG)
    lam = effective_wavelength(band)
    fnu = AB_ZERO_FNU_CGS * 10.0 ** (-0.4 * np.where(valid, mag, 0.0))
    flam = fnu * C_ANGSTROM_PER_S / lam**2 / SDSS_FLUX_UNIT
    return np.where(valid, flam, np.nan)
