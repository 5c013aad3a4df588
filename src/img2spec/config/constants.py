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
"""SDSS spectra are in 1e-17 erg/s/cm^2/A: this many erg/s/cm^2/A per unit of flux."""
SDSS_FLUX: u.CompositeUnit = u.CompositeUnit(SDSS_FLUX_UNIT, [u.erg, u.s, u.cm, u.AA], [1, -1, -2, -1])
"""The same unit for astropy (FITS `10**-17 erg Angstrom-1 s-1 cm-2`)."""
LINE_REST_VACUUM_A: dict[str, float] = {
    "oii_3726": 3727.09, "oii_3729": 3729.88, "hbeta": 4862.68, "oiii_4959": 4960.30, "oiii_5007": 5008.24,
    "mgb_5177": 5176.7, "nad_5894": 5894.6, "oi_6300": 6302.05, "nii_6548": 6549.86, "halpha": 6564.61,
    "nii_6584": 6585.27, "sii_6717": 6718.29, "sii_6731": 6732.67,
}
"""Vacuum rest wavelengths (A) of the lines the project adds, draws or marks, as on SDSS spectra
(vacuum); Mg b and Na D at the mean of their multiplets. The measurement windows are in
`config.measure` (Yan et al. 2006)."""
OII_DOUBLET_A: float = 0.5 * (LINE_REST_VACUUM_A["oii_3726"] + LINE_REST_VACUUM_A["oii_3729"])
"""[OII] 3727 as one line (the doublet is unresolved at SDSS resolution)."""
