"""Narrow-line AGN: Seyfert- and LINER-like nuclear emission added to a host's fibre spectrum.

bagpipes' Cloudy grids only know gas ionised by young stars, so an AGN is drawn
here: a class (Seyfert or LINER), line ratios inside that class's BPT region
(`AGNClassParams`), and a strength set by the rest-frame EW of its own Halpha
against the host's fibre continuum. The lines are Gaussians integrated over each
pixel of the model grid; the nucleus is unresolved, so all of its light falls in
the fibre. Draws come from their own random stream, so adding the AGN changes no
other parameter of any galaxy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from ...config.constants import C_KMS, LINE_REST_VACUUM_A
from ...config.mock import AGNClassParams, MockParams
from .population import STAGE_AGN, galaxy_rng

AGN_CLASSES = ("none", "seyfert", "liner")
# Vacuum rest wavelengths (A) of the narrow lines, as on the SDSS (vacuum) grid.
LINES_A = {name: LINE_REST_VACUUM_A[name] for name in (
    "oii_3726", "oii_3729", "hbeta", "oiii_4959", "oiii_5007", "oi_6300", "nii_6548", "halpha", "nii_6584",
    "sii_6717", "sii_6731")}
OIII_DOUBLET_RATIO = 2.98
NII_DOUBLET_RATIO = 3.05
"""Fixed by atomic physics (Storey & Zeippen 2000): 5007/4959 and 6584/6548."""
OII_3729_SHARE = 0.55
SII_6717_SHARE = 0.5
"""Density-sensitive doublets at n_e ~ 100-300 cm^-3 (Osterbrock & Ferland 2006)."""
HALPHA_CONT_WINDOWS_A = ((6480.0, 6530.0), (6600.0, 6650.0))
"""Rest-frame side bands for the continuum under Halpha (clear of [NII] and [SII])."""


def draw_agn(index: int, gtype_fraction: float, mp: MockParams) -> dict:
    """AGN class and line ratios of galaxy `index` (class 'none' when it hosts no AGN)."""
    rng = galaxy_rng(mp.seed, STAGE_AGN, index)
    agn = mp.population.agn
    # Always draw the same number of values so streams never depend on the outcome.
    u_host, u_class = rng.uniform(size=2)
    shape = rng.uniform(size=7)
    cls = "none"
    if u_host < gtype_fraction:
        cls = "seyfert" if u_class < agn.seyfert_share else "liner"
    out = {"agn_class": cls}
    p: AGNClassParams = getattr(agn, cls) if cls != "none" else agn.seyfert
    keys = ("log_oiii_hbeta", "log_nii_halpha", "log_oii_oiii", "log_oi_halpha", "log_sii_halpha")
    for k, u in zip(keys, shape[:5]):
        lo, hi = getattr(p, k)
        out[f"agn_{k}"] = float(lo + u * (hi - lo)) if cls != "none" else float("nan")
    lo, hi = np.log10(p.halpha_ew_a)
    out["agn_halpha_ew_a"] = float(10 ** (lo + shape[5] * (hi - lo))) if cls != "none" else 0.0
    d0, d1 = agn.balmer_decrement
    out["agn_balmer_decrement"] = float(d0 + shape[6] * (d1 - d0)) if cls != "none" else float("nan")
    return out


def line_fluxes(g: dict, halpha_flux: float) -> dict[str, float]:
    """Flux (erg/s/cm^2) of every narrow line given the AGN's Halpha flux and drawn ratios."""
    ha = halpha_flux
    hb = ha / g["agn_balmer_decrement"]
    o3 = hb * 10 ** g["agn_log_oiii_hbeta"]
    n2 = ha * 10 ** g["agn_log_nii_halpha"]
    o2 = o3 * 10 ** g["agn_log_oii_oiii"]
    s2 = ha * 10 ** g["agn_log_sii_halpha"]
    return {
        "oii_3726": o2 * (1 - OII_3729_SHARE), "oii_3729": o2 * OII_3729_SHARE, "hbeta": hb,
        "oiii_4959": o3 / OIII_DOUBLET_RATIO, "oiii_5007": o3, "oi_6300": ha * 10 ** g["agn_log_oi_halpha"],
        "nii_6548": n2 / NII_DOUBLET_RATIO, "halpha": ha, "nii_6584": n2,
        "sii_6717": s2 * SII_6717_SHARE, "sii_6731": s2 * (1 - SII_6717_SHARE),
    }


def continuum_at_halpha(wave_obs: np.ndarray, flux: np.ndarray, z: float) -> float:
    """Observed-frame f_lambda under Halpha: mean of the medians of the two side bands."""
    rest = wave_obs / (1.0 + z)
    meds = [np.median(flux[(rest >= lo) & (rest <= hi)]) for lo, hi in HALPHA_CONT_WINDOWS_A
            if np.any((rest >= lo) & (rest <= hi))]
    return float(np.mean(meds)) if meds else 0.0


def line_spectrum(edges: np.ndarray, z: float, fluxes: dict[str, float], sigma_kms: float) -> np.ndarray:
    """Gaussian lines integrated over pixels with wavelength `edges`: mean f_lambda per pixel."""
    spec = np.zeros(len(edges) - 1)
    for name, flux in fluxes.items():
        centre = LINES_A[name] * (1.0 + z)
        width = centre * sigma_kms / C_KMS * np.sqrt(2.0)
        lo = np.searchsorted(edges, centre - 6 * width)
        hi = np.searchsorted(edges, centre + 6 * width)
        if hi <= lo or lo >= len(edges) - 1:
            continue
        e = edges[max(lo - 1, 0): min(hi + 1, len(edges))]
        cdf = 0.5 * (1.0 + erf((e - centre) / width))
        spec[max(lo - 1, 0): max(lo - 1, 0) + len(e) - 1] += flux * np.diff(cdf) / np.diff(e)
    return spec


def add_agn(g: dict, fibre: np.ndarray, edges: np.ndarray, sigma_kms: float) -> np.ndarray:
    """The AGN line spectrum (same grid as `fibre`, erg/s/cm^2/A); records line fluxes in `g`."""
    if g["agn_class"] == "none":
        for name in ("hbeta", "oiii_5007", "halpha", "nii_6584", "oii_3726", "oii_3729"):
            g[f"agn_flux_{name}"] = 0.0
        return np.zeros_like(fibre)
    wave = np.sqrt(edges[1:] * edges[:-1])
    cont = continuum_at_halpha(wave, fibre, g["z"])
    # Rest-frame EW -> observed flux: F = EW_rest * (1 + z) * f_lambda,obs.
    ha = max(cont, 0.0) * g["agn_halpha_ew_a"] * (1.0 + g["z"])
    fluxes = line_fluxes(g, ha)
    for name in ("hbeta", "oiii_5007", "halpha", "nii_6584", "oii_3726", "oii_3729"):
        g[f"agn_flux_{name}"] = float(fluxes[name])
    return line_spectrum(edges, g["z"], fluxes, sigma_kms)
