"""The metric of DESIGN.md against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.metrics import calibration, deviation, summarise


def test_deviation_hand_computation():
    pred = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    obs = np.array([[1.5, 2.0, 1.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    ivar = np.array([[4.0, 1.0, 9.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    d = deviation(pred, obs, ivar)
    # object 0: good pixels 0, 1, 2 (pixel 3 obs NaN) -> (0.5*2 + 0 + 2*3) / 3
    assert d[0] == pytest.approx((1.0 + 0.0 + 6.0) / 3)
    assert np.isnan(d[1])  # no good pixel: no D_i
    region = np.array([True, True, False, False])
    assert deviation(pred, obs, ivar, region)[0] == pytest.approx(0.5)


def test_deviation_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes"):
        deviation(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 4)))


def test_summary_counts_skipped():
    s = summarise(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert s["n"] == 4 and s["n_skipped"] == 1
    assert s["mean"] == pytest.approx(2.5)
    assert s["sem"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert s["median"] == pytest.approx(2.5)
    assert s["p16"] < s["median"] < s["p84"]


def test_calibration_of_gaussian_noise():
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 100))
    ivar = np.ones_like(obs)
    cal = calibration(np.zeros_like(obs), np.zeros_like(obs), obs, ivar)
    assert cal["within_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert cal["within_2sigma"] == pytest.approx(0.954, abs=0.01)


def test_fit_sigma_scale_recovers_an_overestimate_and_reaches_the_target():
    from img2spec.metrics import GAUSSIAN_WITHIN_1SIGMA, calibration, fit_sigma_scale

    rng = np.random.default_rng(0)
    shape = (400, 300)
    ivar = np.full(shape, 4.0)                       # observation noise 0.5
    true_sigma = rng.uniform(0.5, 2.0, shape)         # model error, varies per pixel
    pred = rng.normal(size=shape)
    obs = pred + rng.normal(size=shape) * np.sqrt(true_sigma**2 + 1 / ivar)
    fit = fit_sigma_scale(pred, 2.0 * true_sigma, obs, ivar)   # sigma predicted twice too wide
    assert fit["scale"] == pytest.approx(0.5, rel=0.03)
    cal = calibration(pred, fit["scale"] * 2.0 * true_sigma, obs, ivar)
    assert cal["within_1sigma"] == pytest.approx(GAUSSIAN_WITHIN_1SIGMA, abs=2e-3)
    assert cal["within_2sigma"] == pytest.approx(0.954, abs=0.01)  # Gaussian errors: right at 2 sigma too
    assert 0 < fit["floor_coverage"] < GAUSSIAN_WITHIN_1SIGMA


def test_fit_sigma_scale_when_noise_alone_covers_the_target():
    from img2spec.metrics import fit_sigma_scale

    rng = np.random.default_rng(1)
    obs = rng.normal(size=(50, 40)) * 0.1
    fit = fit_sigma_scale(np.zeros_like(obs), np.ones_like(obs), obs, np.ones_like(obs))  # noise 1 >> residuals
    assert fit["scale"] == 0.0 and fit["floor_coverage"] > 0.99
    with pytest.raises(ValueError, match="no good pixel"):
        fit_sigma_scale(obs, obs, obs, np.zeros_like(obs))
