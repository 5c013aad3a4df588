"""Pan-STARRS1 band fluxes of model spectra (speclite's panstarrs-g..y curves).

The photon-counting AB integral is precomputed as one weight vector per band on a
fixed wavelength grid, so the band maggies of many spectra are one matrix product.
"""

from __future__ import annotations

import numpy as np

from ... import BANDS
from ...config.constants import AB_ZERO_FNU_CGS, C_ANGSTROM_PER_S



def band_weights(wave: np.ndarray, bands: tuple[str, ...] = BANDS) -> np.ndarray:
    """(n_bands, n_wave) weights W with maggies = W @ f_lambda (f_lambda in erg/s/cm^2/A).

    maggies = int f_lambda R lambda dlambda / int (AB f_nu c / lambda^2) R lambda dlambda.
    """
    import speclite.filters

    wave = np.asarray(wave, np.float64)
    dlam = np.gradient(wave)
    out = np.zeros((len(bands), len(wave)))
    for k, band in enumerate(bands):
        curve = speclite.filters.load_filter(f"panstarrs-{band}")
        lo, hi = curve.wavelength.min(), curve.wavelength.max()
        if wave[0] > lo or wave[-1] < hi:
            raise ValueError(f"panstarrs-{band} ({lo:.0f}-{hi:.0f} A) not covered by grid {wave[0]:.0f}-{wave[-1]:.0f} A")
        resp = np.clip(curve(wave), 0.0, None)
        norm = np.sum(AB_ZERO_FNU_CGS * C_ANGSTROM_PER_S / wave**2 * resp * wave * dlam)
        out[k] = resp * wave * dlam / norm
    return out


def maggies_to_mag(maggies: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -2.5 * np.log10(maggies)
