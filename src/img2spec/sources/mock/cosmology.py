"""Distances and ages on the cosmology bagpipes uses (flat LCDM, H0 = 70, Om0 = 0.3)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

H0 = 70.0
OM0 = 0.3
_Z_GRID = np.linspace(0.001, 1.0, 2000)


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=H0, Om0=OM0)
    kpc_per_arcsec = cosmo.kpc_proper_per_arcmin(_Z_GRID).value / 60.0
    age = cosmo.age(_Z_GRID).value
    return kpc_per_arcsec, age, cosmo.distmod(_Z_GRID).value


def kpc_per_arcsec(z: float) -> float:
    """Proper kpc per arcsec at redshift z."""
    return float(np.interp(z, _Z_GRID, _tables()[0]))


def age_gyr(z: float) -> float:
    """Age of the universe at z in Gyr."""
    return float(np.interp(z, _Z_GRID, _tables()[1]))


def distance_modulus(z: float | np.ndarray) -> float | np.ndarray:
    """Distance modulus (mag) at redshift z."""
    return np.interp(z, _Z_GRID, _tables()[2])
