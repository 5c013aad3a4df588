"""PS1 DR2-like catalogue photometry (Kron magnitudes of total light) from truth rows."""

from __future__ import annotations

import numpy as np

from ... import BANDS
from ...config.mock import MockParams
from .images import sky_sigma_counts
from .sersic import FWHM_PER_SIGMA
from ...io.ps1_cutout import magzp_for_exptime

MAG_PER_LN = 2.5 / np.log(10.0)
PS1_OBJID_ZONE_HEIGHT_DEG = 1.0 / 120.0
"""PS1 objID = zone * 1e13 + int(ra * 1e6) * 1e4 + dec-in-zone digits (PS1 DR2 docs)."""


def ps1_objid(ra: float, dec: float) -> int:
    zone = int((dec + 90.0) / PS1_OBJID_ZONE_HEIGHT_DEG)
    zresid = (dec + 90.0) / PS1_OBJID_ZONE_HEIGHT_DEG - zone
    return int(zone * 10**13 + int(ra * 1e6) * 10**4 + int(zresid * 1e4))


def photometry_row(g: dict, ra: float, dec: float, mp: MockParams, rng: np.random.Generator,
                   pixel: float) -> dict:
    """One photometry.csv row: perturbed position, Kron mags and errors per band."""
    ph, ip = mp.photometry, mp.images
    scatter = ph.astrometric_scatter_arcsec / 3600.0
    pdec = dec + rng.normal(0.0, scatter)
    pra = (ra + rng.normal(0.0, scatter) / np.cos(np.deg2rad(dec))) % 360.0
    row = {"objid": int(g["objid"]), "ps1_objid": ps1_objid(pra, pdec), "ra": float(pra), "dec": float(pdec)}
    # Light-weighted half-light radius of the two components: sets the Kron aperture.
    fb = g["bulge_maggies_r"] / max(g["bulge_maggies_r"] + g["disk_maggies_r"], 1e-300)
    re = fb * g["bulge_re_arcsec"] + (1 - fb) * g["disk_re_arcsec"]
    for band in BANDS:
        zp = magzp_for_exptime(ip.exptime_s[band])
        counts = (g[f"bulge_maggies_{band}"] + g[f"disk_maggies_{band}"]) * 10 ** (0.4 * zp)
        sigma_psf = ip.seeing_fwhm_arcsec[band] / FWHM_PER_SIGMA
        r_ap = ph.kron_radius_factor * np.hypot(re, sigma_psf)
        n_pix = np.pi * (r_ap / pixel) ** 2
        var = sky_sigma_counts(band, ip, pixel) ** 2 * n_pix + counts / ip.gain_e_per_count
        err = np.hypot(MAG_PER_LN * np.sqrt(var) / counts, ph.calibration_floor_mag)
        mag = -2.5 * np.log10(counts) + zp + rng.normal(0.0, err)
        row[f"{band}KronMag"] = float(mag)
        row[f"{band}KronMagErr"] = float(err)
    return row


PHOTOMETRY_COLUMNS = ("objid", "ps1_objid", "ra", "dec") + tuple(
    c for b in BANDS for c in (f"{b}KronMag", f"{b}KronMagErr"))
