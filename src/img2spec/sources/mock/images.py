"""Render one galaxy's 5-band Pan-STARRS1-like cutout from its truth row.

Each component is a Sersic profile (pixel-integrated, seeing-convolved per band)
scaled by its band flux; pixels are linear counts with MAGZP = 25 + 2.5 log10(EXPTIME),
plus sky noise set by the band's 5-sigma depth and source Poisson noise.
"""

from __future__ import annotations

import numpy as np

from ... import BANDS
from ...config.mock import ImageParams
from ...io.ps1_cutout import Cutout, magzp_for_exptime
from .sersic import FWHM_PER_SIGMA, Renderer

SEEING_MAX_SIGMAS = 4.0
"""The renderer is padded for seeing up to median + this many scatter sigmas."""
COMPONENTS = ("bulge", "disk")


def sky_sigma_counts(band: str, ip: ImageParams, pixel: float, fwhm: float | None = None) -> float:
    """Per-pixel sky noise (counts) giving a 5-sigma point-source depth `depth_5sigma[band]`.

    Optimal-aperture point source: noise = sigma_pix * sqrt(n_eff), n_eff = 4 pi sigma_psf^2 / pixel^2.
    """
    fwhm = ip.seeing_fwhm_arcsec[band] if fwhm is None else fwhm
    n_eff = 4.0 * np.pi * (fwhm / FWHM_PER_SIGMA / pixel) ** 2
    zp = magzp_for_exptime(ip.exptime_s[band])
    return float(10 ** (-0.4 * (ip.depth_5sigma[band] - zp)) / (5.0 * np.sqrt(n_eff)))


def make_renderer(ip: ImageParams, size: int, pixel: float) -> Renderer:
    max_fwhm = max(ip.seeing_fwhm_arcsec.values()) + SEEING_MAX_SIGMAS * ip.seeing_scatter_arcsec
    return Renderer(size, pixel, ip.oversample, ip.centre_oversample, max_fwhm)


def draw_seeing(rng: np.random.Generator, ip: ImageParams) -> dict[str, float]:
    cap = max(ip.seeing_fwhm_arcsec.values()) + SEEING_MAX_SIGMAS * ip.seeing_scatter_arcsec
    return {b: float(np.clip(rng.normal(ip.seeing_fwhm_arcsec[b], ip.seeing_scatter_arcsec), ip.min_seeing_arcsec, cap))
            for b in BANDS}


def noiseless_images(g: dict, renderer: Renderer, seeing: dict[str, float], ip: ImageParams) -> dict[str, np.ndarray]:
    """Model images in counts (no noise) for truth row `g`."""
    fts = {c: renderer.transform(g[f"{c}_n"], g[f"{c}_re_arcsec"], g[f"{c}_q"], g[f"{c}_pa_deg"]) for c in COMPONENTS}
    out = {}
    for band in BANDS:
        zp = magzp_for_exptime(ip.exptime_s[band])
        counts = {c: g[f"{c}_maggies_{band}"] * 10 ** (0.4 * zp) for c in COMPONENTS}
        ft = sum(counts[c] * fts[c] for c in COMPONENTS)
        out[band] = renderer.convolve(ft, seeing[band])
    return out


def render_cutout(g: dict, objid: int, ra: float, dec: float, renderer: Renderer, ip: ImageParams,
                  rng: np.random.Generator) -> Cutout:
    """Noisy 5-band cutout of truth row `g` centred on (ra, dec)."""
    seeing = draw_seeing(rng, ip)
    model = noiseless_images(g, renderer, seeing, ip)
    data, magzp, exptime = {}, {}, {}
    for band in BANDS:
        sky = sky_sigma_counts(band, ip, renderer.pixel, seeing[band])
        var = sky**2 + np.clip(model[band], 0, None) / ip.gain_e_per_count
        data[band] = (model[band] + rng.normal(size=model[band].shape) * np.sqrt(var)).astype(np.float32)
        exptime[band] = ip.exptime_s[band]
        magzp[band] = magzp_for_exptime(ip.exptime_s[band])
    return Cutout(objid=objid, ra=ra, dec=dec, data=data, magzp=magzp, exptime=exptime,
                  seeing=seeing, pixel_scale=renderer.pixel)
