"""Spectrum preparation: grid, flux-conserving resampling, masking, ivar, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ppxf
from img2spec.config.prepare import PrepareParams
from img2spec.io.sdss_spectrum import SDSSSpectrum, read_spectrum, sdss_loglam_grid
from img2spec.prep.normalise import effective_wavelength, mag_to_flambda
from img2spec.prep.spectra import loglam_edges, make_grid, prepare_spectrum, resample

NGC3522 = Path(ppxf.__file__).parent / "spectra" / "NGC3522_SDSS_DR18.fits"


def band_integral(edges: np.ndarray, flux: np.ndarray, lo: float, hi: float) -> float:
    """Integral of a piecewise-constant f_lambda over [lo, hi] (partial pixels weighted)."""
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
    return float(np.sum(overlap * flux))


def test_default_grid_has_1767_pixels_of_150_kms():
    grid = make_grid(PrepareParams())
    assert grid.n_pixels == 1767
    dv = np.diff(np.log(grid.edges)) * 299792.458
    assert np.allclose(dv, 150.0)
    assert grid.edges[0] == 3800.0 and grid.edges[-1] <= 9200.0


def test_ngc3522_resampling_conserves_band_flux():
    spec = read_spectrum(NGC3522)
    params = PrepareParams(sky_lines_angstrom=())  # compare the raw integral; no sky-line masking
    grid = make_grid(params)
    prepared = prepare_spectrum(spec, grid, params, norm=1.0)
    good = spec.good
    assert good.mean() > 0.99
    in_edges = loglam_edges(spec.loglam)
    for lo, hi in [(4000.0, 5000.0), (5000.0, 6000.0), (6500.0, 8500.0)]:
        before = band_integral(in_edges, np.where(good, spec.flux, 0.0), lo, hi)
        after = band_integral(grid.edges, prepared.flux, lo, hi)
        assert after == pytest.approx(before, rel=0.01), (lo, hi)


def test_resampling_is_exact_for_aligned_pixels_and_propagates_ivar():
    in_edges = np.linspace(1000.0, 1100.0, 101)  # 1 A pixels
    out_edges = np.linspace(1000.0, 1100.0, 51)  # 2 A pixels: each covers exactly two inputs
    rng = np.random.default_rng(1)
    flux = rng.uniform(1, 2, 100)
    ivar = np.full(100, 4.0)
    out_f, out_iv, cov = resample(in_edges, flux, ivar, np.ones(100, bool), out_edges, 0.5)
    assert np.allclose(out_f, flux.reshape(50, 2).mean(axis=1))
    assert np.allclose(out_iv, 8.0)  # mean of two independent pixels: variance halves
    assert np.allclose(cov, 1.0)


def test_masked_pixels_never_leak_and_low_coverage_gets_zero_ivar():
    in_edges = np.linspace(1000.0, 1100.0, 101)
    out_edges = np.linspace(1000.0, 1100.0, 26)  # 4 A output pixels
    flux = np.ones(100)
    good = np.ones(100, bool)
    flux[40:43] = 1e6  # a cosmic ray, masked
    good[40:43] = False
    out_f, out_iv, cov = resample(in_edges, flux, np.ones(100), good, out_edges, 0.5)
    assert np.allclose(out_f, 1.0)  # the masked value does not reach any pixel
    assert cov[10] == pytest.approx(0.25) and out_iv[10] == 0.0  # pixel 40-44: one good input of four
    assert cov[9] == 1.0 and out_iv[9] > 0
    assert np.all(np.isfinite(out_f))


def test_prepare_spectrum_masks_and_mask_bits_and_normalises():
    loglam = sdss_loglam_grid(3700.0, 9300.0)
    n = len(loglam)
    flux = np.full(n, 50.0, np.float32)
    and_mask = np.zeros(n, np.int32)
    and_mask[1000:1100] = 1 << 22
    flux[1000:1100] = -1e4
    flux[2000] = np.nan
    spec = SDSSSpectrum(loglam=loglam, flux=flux, ivar=np.full(n, 0.25, np.float32), and_mask=and_mask,
                        z=0.07, plate=1, mjd=2, fiberid=3, ra=0.0, dec=0.0)
    params = PrepareParams()
    out = prepare_spectrum(spec, make_grid(params), params, norm=25.0)
    assert np.allclose(out.flux, 2.0)  # 50 / 25 everywhere, masked pixels interpolated
    assert np.all(np.isfinite(out.ivar)) and out.ivar.min() == 0.0
    # Each 150 km/s output pixel averages ~2.17 input pixels (69 km/s): ivar gains that factor,
    # more where partial overlaps weight the inputs unevenly, never more than 3 inputs.
    ratio = out.ivar[out.ivar > 0] / (0.25 * 25.0**2)
    assert 2.0 < np.median(ratio) < 3.0 and ratio.max() <= 3.0 + 1e-6
    assert 0.9 < out.good_fraction < 1.0


def test_rest_frame_shifts_features_by_one_plus_z():
    loglam = sdss_loglam_grid(3700.0, 9300.0)
    wave = 10**loglam
    z = 0.08
    flux = 10 + 100 * np.exp(-0.5 * ((wave - 6564.6 * (1 + z)) / 2.0) ** 2)
    spec = SDSSSpectrum(loglam=loglam, flux=flux, ivar=np.ones_like(flux), and_mask=np.zeros(len(flux), np.int32),
                        z=z, plate=1, mjd=2, fiberid=3, ra=0.0, dec=0.0)
    params = PrepareParams(frame="rest", wave_min=3500.0, wave_max=8500.0)
    grid = make_grid(params)
    out = prepare_spectrum(spec, grid, params, norm=1.0)
    assert grid.centres[np.argmax(out.flux)] == pytest.approx(6564.6, abs=3.0)


def test_norm_is_ab_mag_as_flambda_in_1e17_units():
    assert effective_wavelength("r") == 6201.2
    assert 4500 < effective_wavelength("g") < 5200 and 9400 < effective_wavelength("y") < 9900
    # f_nu = 3631 Jy at mag 0 -> f_lambda = f_nu c / lambda^2 (astropy's AB zero point: 3631 Jy to 6e-5)
    expected = 3631e-23 * 2.99792458e18 / 6201.2**2 / 1e-17
    assert float(mag_to_flambda(0.0, "r")) == pytest.approx(expected, rel=1e-4)
    assert float(mag_to_flambda(17.5, "r")) == pytest.approx(expected * 10 ** (-0.4 * 17.5), rel=1e-4)
    assert np.isnan(mag_to_flambda(-999.0, "r")) and np.isnan(mag_to_flambda(np.nan, "g"))
