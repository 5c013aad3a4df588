"""Draw one galaxy's parameters (before SPS): redshift, type, SFHs, dust, shape.

Every galaxy has its own generator seeded from (seed, stage, index), so the draws
do not depend on chunking or on the number of worker processes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...config.mock import GalaxyTypeParams, MockParams, PopulationParams
from .cosmology import age_gyr, distance_modulus

GALAXY_TYPES = ("red", "green", "blue")
STAGE_SELECT, STAGE_SPECTRA, STAGE_IMAGES, STAGE_PHOTOMETRY, STAGE_SURVEY, STAGE_PLATE = 11, 12, 13, 14, 15, 16
STAGE_AGN = 17
"""Sub-seed per stage so that each stage's randomness is independent."""
AGE_MARGIN_GYR = 0.2
"""Stellar populations start at least this long after the Big Bang."""


def galaxy_rng(seed: int, stage: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stage), int(index)])


@lru_cache(maxsize=4)
def _z_table(z_min: float, z_max: float, scale: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(z_min, z_max, 4000)
    pdf = z**2 * np.exp(-((z / scale) ** power))
    cdf = np.cumsum(pdf)
    return z, (cdf - cdf[0]) / (cdf[-1] - cdf[0])


def draw_redshift(rng: np.random.Generator, pop: PopulationParams) -> float:
    z, cdf = _z_table(pop.z_min, pop.z_max, pop.z_scale, pop.z_power)
    return float(np.interp(rng.uniform(), cdf, z))


def draw_g_mag(rng: np.random.Generator, pop: PopulationParams) -> float:
    """Target total g magnitude: dN/dm ~ 10^(slope m), plus a thin tail past the limit."""
    if rng.uniform() < pop.faint_tail_fraction:
        return float(rng.uniform(pop.g_faint, pop.faint_tail_mag))
    a = pop.count_slope * np.log(10.0)
    if a == 0:
        return float(rng.uniform(pop.g_bright, pop.g_faint))
    u = rng.uniform()
    lo, hi = np.exp(a * pop.g_bright), np.exp(a * pop.g_faint)
    return float(np.log(lo + u * (hi - lo)) / a)


def draw_type(rng: np.random.Generator, pop: PopulationParams, abs_mag_g: float) -> str:
    """Galaxy type; red and green weights grow by exp(slope * (pivot - M_g)) (brighter = redder)."""
    boost = float(np.exp(np.clip(pop.type_mag_slope * (pop.type_pivot_abs_mag - abs_mag_g), -20.0, 20.0)))
    w = np.array([getattr(pop, t).fraction * (boost if t != "blue" else 1.0) for t in GALAXY_TYPES], float)
    return GALAXY_TYPES[int(rng.choice(3, p=w / w.sum()))]


def _u(rng: np.random.Generator, rng_range: tuple[float, float]) -> float:
    return float(rng.uniform(*rng_range))


def draw_galaxy(index: int, mp: MockParams) -> dict:
    """All pre-SPS parameters of galaxy `index` (flat dict, JSON/parquet friendly)."""
    rng = galaxy_rng(mp.seed, STAGE_SELECT, index)
    pop = mp.population
    z = draw_redshift(rng, pop)
    g_target = draw_g_mag(rng, pop)
    gtype = draw_type(rng, pop, g_target - float(distance_modulus(z)))
    tp: GalaxyTypeParams = getattr(pop, gtype)
    max_age = age_gyr(z) - AGE_MARGIN_GYR
    st = mp.structure
    pa_disk = float(rng.uniform(0.0, 180.0))
    g = {
        "index": index,
        "z": z,
        "galaxy_type": gtype,
        "g_target": g_target,
        "bulge_to_total": _u(rng, tp.bulge_to_total),
        "veldisp_kms": _u(rng, tp.veldisp_kms),
        "bulge_age_gyr": min(_u(rng, tp.bulge_age_gyr), max_age),
        "bulge_tau_gyr": _u(rng, tp.bulge_tau_gyr),
        "bulge_metallicity": _u(rng, tp.bulge_metallicity),
        "bulge_av": _u(rng, tp.bulge_av),
        "disk_age_gyr": min(_u(rng, tp.disk_age_gyr), max_age),
        "disk_tau_gyr": _u(rng, tp.disk_tau_gyr),
        "disk_metallicity": _u(rng, tp.disk_metallicity),
        "disk_av": _u(rng, tp.disk_av),
        "log_u": _u(rng, tp.log_u),
        "bulge_n": _u(rng, st.bulge_sersic_n),
        "disk_n": _u(rng, st.disk_sersic_n),
        "bulge_q": _u(rng, st.bulge_axis_ratio),
        "disk_q": _u(rng, st.disk_axis_ratio),
        "disk_pa_deg": pa_disk,
        "bulge_pa_deg": float((pa_disk + rng.normal(0.0, st.disk_pa_scatter_deg)) % 180.0),
        "bulge_size_dev": float(rng.normal(0.0, st.size_scatter_dex)),
        "disk_size_dev": float(rng.normal(0.0, st.size_scatter_dex)),
        "fibre_seeing_arcsec": max(
            float(rng.normal(mp.fibre.seeing_fwhm_arcsec, mp.fibre.seeing_scatter_arcsec)),
            mp.fibre.min_seeing_arcsec),
    }
    if tp.gas_metallicity is not None:  # drawn last: the other draws do not depend on it
        g["gas_metallicity"] = _u(rng, tp.gas_metallicity)
    return g
