"""Sky positions -> HEALPix pixels of the shard partition (astropy-healpix, nested ordering)."""

from __future__ import annotations

import numpy as np


def healpix_pixels(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """Nested HEALPix pixel index at `order` (nside = 2**order) of each (ra, dec) in degrees."""
    import astropy.units as u
    from astropy_healpix import HEALPix

    hp = HEALPix(nside=2 ** int(order), order="nested")
    ra = np.asarray(ra_deg, np.float64)
    dec = np.asarray(dec_deg, np.float64)
    if ra.size == 0:
        return np.zeros(0, np.int64)
    return np.asarray(hp.lonlat_to_healpix(ra * u.deg, dec * u.deg), np.int64)
