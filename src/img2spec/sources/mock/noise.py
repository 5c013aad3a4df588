"""SDSS-like noise, masks and failures for noiseless fibre spectra (1e-17 units).

variance = (src * max(flux, 0) + sky_var * sky) / throughput; sky = continuum
rising to the red + Gaussian sky lines. Sky-subtraction residuals at the lines
are systematic (not in ivar); and_mask carries SDSS bits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...config.mock import SpectrumNoiseParams

# SDSS spPixMask bits used here.
FULLREJECT = 1 << 18
NOSKY = 1 << 22
BRIGHTSKY = 1 << 23
NODATA = 1 << 24
BAD_REGION_NOISE_SIGMAS = 5.0
"""Garbage in a bad region: noise this many times the typical sigma ..."""
BAD_REGION_OFFSET = 50.0
"""... plus a constant offset up to +/- this (1e-17 units), as after a failed extraction."""


@lru_cache(maxsize=4)
def _sky_and_throughput(loglam_key: tuple[float, float, int], noise_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nz = SpectrumNoiseParams.model_validate_json(noise_json)
    lo, step, n = loglam_key
    loglam = lo + step * np.arange(n)
    wave = 10.0**loglam
    cont = nz.sky_continuum * (1.0 + nz.sky_red_slope_per_1000a * np.clip(wave - 7000.0, 0, None) / 1000.0)
    lines = np.zeros(n)
    for line_wave, strength in nz.sky_lines:
        pix = (np.log10(line_wave) - lo) / step
        x = np.arange(n) - pix
        lines += strength * nz.sky_continuum * np.exp(-0.5 * (x / nz.sky_line_width_pix) ** 2)
    thr = np.exp(-0.5 * ((loglam - np.log10(nz.throughput_peak_a)) / nz.throughput_width_dex) ** 2)
    return cont, lines, thr


def sky_model(loglam: np.ndarray, nz: SpectrumNoiseParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sky continuum, sky lines, throughput) on `loglam` (cached per grid and params)."""
    key = (float(loglam[0]), float(loglam[1] - loglam[0]), len(loglam))
    return _sky_and_throughput(key, nz.model_dump_json())


def observe(truth: np.ndarray, loglam: np.ndarray, nz: SpectrumNoiseParams,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(flux, ivar, and_mask, sky, failure kind) for one noiseless spectrum.

    failure kind: '' (normal), 'bad_region' or 'mostly_masked'.
    """
    n = len(truth)
    cont, lines, thr = sky_model(loglam, nz)
    sky = cont + lines
    calib = 1.0 + rng.normal(0.0, nz.calibration_scatter)
    signal = truth * calib
    var = (nz.src_variance_per_flux * np.clip(signal, 0, None) + nz.sky_variance_per_flux * sky) / thr
    sigma = np.sqrt(var)
    flux = signal + rng.normal(size=n) * sigma
    flux += nz.sky_residual_fraction * lines * rng.normal(size=n)
    ivar = 1.0 / var
    and_mask = np.zeros(n, np.int32)
    and_mask[lines > nz.brightsky_threshold * cont] |= BRIGHTSKY
    bad = rng.uniform(size=n) < nz.bad_pixel_fraction
    and_mask[bad] |= FULLREJECT
    ivar[bad] = 0.0
    if rng.uniform() < nz.edge_nodata_probability:
        k = int(rng.integers(nz.edge_nodata_pix[0], nz.edge_nodata_pix[1] + 1))
        sl = slice(0, k) if rng.uniform() < 0.5 else slice(n - k, n)
        and_mask[sl] |= NODATA
        ivar[sl] = 0.0
        flux[sl] = 0.0
    kind = ""
    u = rng.uniform()
    if u < nz.mostly_masked_fraction:
        kind = "mostly_masked"
        share = rng.uniform(*nz.mostly_masked_share)
        masked = rng.uniform(size=n) < share
        and_mask[masked] |= FULLREJECT | NOSKY
        ivar[masked] = 0.0
    elif u < nz.mostly_masked_fraction + nz.bad_region_fraction:
        kind = "bad_region"
        width = int(rng.integers(nz.bad_region_pix[0], nz.bad_region_pix[1] + 1))
        start = int(rng.integers(0, max(n - width, 1)))
        sl = slice(start, start + width)
        # A broken CCD region: garbage flux, no weight, flagged.
        flux[sl] = (rng.normal(0.0, BAD_REGION_NOISE_SIGMAS * np.median(sigma), size=width)[: len(flux[sl])]
                    + rng.uniform(-BAD_REGION_OFFSET, BAD_REGION_OFFSET))
        ivar[sl] = 0.0
        and_mask[sl] |= FULLREJECT
    return flux.astype(np.float32), ivar.astype(np.float32), and_mask, sky.astype(np.float32), kind
