"""The bundle's flux convention: predictions are normalised; a PS1 magnitude puts them in 1e-17 units.

The prepare stage divides every spectrum by `norm`, the PS1 Kron magnitude of the
normalisation band as f_lambda at the band's effective wavelength, in 1e-17
erg/s/cm^2/A (`img2spec.prep.normalise.mag_to_flambda`). The bundle records that
wavelength, so inference undoes the normalisation with the bundle's own constant,
independent of the code version that reads it: flux_1e17 = flux_norm * norm.
"""

from __future__ import annotations

import numpy as np

from ..prep.normalise import AB_ZERO_FNU_CGS, C_ANGSTROM_PER_S, MISSING_MAG, SDSS_FLUX_UNIT


def flambda_from_ab_mag(mag: float | np.ndarray, wavelength_A: float) -> np.ndarray:
    """AB magnitude -> f_lambda at `wavelength_A` in 1e-17 erg/s/cm^2/A; NaN for missing magnitudes."""
    mag = np.asarray(mag, np.float64)
    ok = np.isfinite(mag) & (mag > MISSING_MAG)
    mag = np.where(ok, mag, 0.0)  # flagged values (-999) would overflow
    flam = AB_ZERO_FNU_CGS * 10.0 ** (-0.4 * mag) * C_ANGSTROM_PER_S / wavelength_A**2 / SDSS_FLUX_UNIT
    return np.where(ok, flam, np.nan)
