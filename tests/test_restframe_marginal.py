"""models/restframe.py: a rest-frame spectrum carried to the observed grid at a known z (the
layer's own interpolation) and over an uncertain z (the expectation and spread over N(z, z_err))."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.models.restframe import RestGrid, gaussian_smooth, marginalise_redshift, to_observed
from img2spec.models.vae import rest_grid

OBS = np.geomspace(3800.0, 9200.0, 600)


def _grid_and_line(centre: float = 6564.6, width: float = 4.0):
    grid = RestGrid(*rest_grid(OBS, 0.0, 0.3))
    rest = 1.0 + 5.0 * np.exp(-0.5 * ((grid.wave - centre) / width) ** 2)
    return grid, rest[None]


def test_to_observed_matches_the_redshift_layer():
    from img2spec.models.layers import RedshiftToObserved

    grid, rest = _grid_and_line()
    layer = RedshiftToObserved(grid.ln_start, grid.ln_step, grid.n, np.log(OBS))
    for z in (0.0, 0.07, 0.21):
        ref = np.asarray(layer([rest.astype(np.float32), np.array([[0.0, z]], np.float32)]))
        np.testing.assert_allclose(to_observed(grid, rest, np.log(OBS), np.array([z])), ref, rtol=0, atol=2e-3)  # float32 layer


def test_gaussian_smooth_keeps_area_and_has_the_width_asked():
    x = np.zeros((2, 401))
    x[:, 200] = 1.0
    out = gaussian_smooth(x, np.array([0.0, 12.0]))
    np.testing.assert_allclose(out[0], x[0], atol=1e-12)  # width 0: unchanged
    k = np.arange(401) - 200
    assert out[1].sum() == pytest.approx(1.0, rel=1e-9)
    assert np.sqrt((out[1] * k**2).sum()) == pytest.approx(12.0, rel=1e-3)


def test_marginal_spectrum_equals_the_average_over_sampled_redshifts():
    # A line resolved by many pixels: the shifted references interpolate linearly between rest pixels,
    # the expectation treats them as samples; the two agree once the line is resolved.
    obs = np.geomspace(3800.0, 9200.0, 3000)
    grid = RestGrid(*rest_grid(obs, 0.0, 0.3))
    rest = (1.0 + 5.0 * np.exp(-0.5 * ((grid.wave - 6564.6) / 40.0) ** 2))[None]
    z0, dz = 0.08, 0.01
    rest_var = np.full_like(rest, 0.04)
    flux, sigma = marginalise_redshift(grid, rest, rest_var, np.log(obs), np.array([z0]), np.array([dz]))
    # reference: the shifted spectrum averaged over a dense quadrature of ln(1 + z) ~ N(ln(1 + z0), dz / (1 + z0))
    u = np.log1p(z0) + dz / (1 + z0) * np.linspace(-8.0, 8.0, 2001)
    w = np.exp(-0.5 * ((u - np.log1p(z0)) / (dz / (1 + z0))) ** 2)
    w /= w.sum()
    draws = to_observed(grid, np.repeat(rest, len(u), axis=0), np.log(obs), np.expm1(u))
    mean = w @ draws
    np.testing.assert_allclose(flux[0], mean, atol=1e-3)
    np.testing.assert_allclose(sigma[0], np.sqrt(w @ draws**2 - mean**2 + 0.04), rtol=2e-3, atol=1e-3)
    # the line is spread over the redshift's width: lower peak, same integral in ln(lambda)
    sharp, _ = marginalise_redshift(grid, rest, rest_var, np.log(obs), np.array([z0]), np.array([0.0]))
    assert flux.max() < 0.75 * sharp.max()
    assert (flux[0] - 1).sum() == pytest.approx((sharp[0] - 1).sum(), rel=0.02)  # same line flux in ln(lambda)
    np.testing.assert_allclose(sharp[0], to_observed(grid, rest, np.log(obs), np.array([z0]))[0], rtol=1e-6)


def test_smoothing_and_lattice_shift_equal_the_plain_formulas():
    """The FFT smoothing (frequencies past the transfer floor dropped) equals edge padding and the full
    transfer function, float32 input alike; the lattice path (two slices per row) equals the general
    per-pixel gather, rows clamped at a grid end included."""
    import scipy.fft

    from img2spec.models.restframe import PAD_SIGMAS, _interpolate_to

    rng = np.random.default_rng(5)
    x = 1.0 + 0.1 * rng.standard_normal((6, 2, 300))
    width = np.array([3.0, 0.0, 7.5, 1.2, 20.0, 4.0])
    pad = int(np.ceil(PAD_SIGMAS * width.max()))
    n = scipy.fft.next_fast_len(300 + 2 * pad, real=True)
    spec = scipy.fft.rfft(np.pad(x, [(0, 0), (0, 0), (pad, n - 300 - pad)], mode="edge"), axis=-1)
    f = np.arange(spec.shape[-1]) / n
    ref = scipy.fft.irfft(spec * np.exp(-2.0 * (np.pi * f[None, :] * width[:, None]) ** 2)[:, None], n=n)
    ref = ref[..., pad:pad + 300]
    ref[1] = x[1]  # width 0: unchanged
    np.testing.assert_allclose(gaussian_smooth(x, width), ref, rtol=0, atol=1e-12)
    x32 = x[:, 0].astype(np.float32)
    np.testing.assert_array_equal(gaussian_smooth(x32, width), gaussian_smooth(x32.astype(np.float64), width))
    grid = RestGrid(*rest_grid(OBS, 0.0, 0.3))
    rest = 1.0 + rng.random((4, grid.n))
    z = np.array([0.0, 0.11, 0.3, 0.45])  # the last runs off the rest grid: the general path
    (got,) = _interpolate_to(grid, [rest], np.log(OBS), z)
    # one weight per lattice row, the gather's per pixel: equal to the grids' step agreement (SAME_STEP_RTOL)
    np.testing.assert_allclose(got, to_observed(grid, rest, np.log(OBS), z), rtol=0, atol=1e-8)
