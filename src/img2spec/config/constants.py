"""Physical constants and flux units, taken from astropy rather than typed by hand."""

from __future__ import annotations

import astropy.units as u
from astropy.constants import c

C_KMS: float = c.to_value(u.km / u.s)
"""Speed of light in km/s."""
C_ANGSTROM_PER_S: float = c.to_value(u.AA / u.s)
"""Speed of light in Angstrom/s (f_nu -> f_lambda)."""
AB_ZERO_FNU_CGS: float = (0.0 * u.ABmag).to_value(u.erg / u.s / u.cm**2 / u.Hz)
"""Flux density of AB magnitude 0 (about 3631 Jy; Oke & Gunn 1983) in erg/s/cm^2/Hz."""
SDSS_FLUX_UNIT: float = (1e-17 * u.erg / u.s / u.cm**2 / u.AA).to_value(u.erg / u.s / u.cm**2 / u.AA)
"""SDSS spectra are in 1e-17 erg/s/cm^2/A."""
