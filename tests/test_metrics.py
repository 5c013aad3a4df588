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


def test_fit_sigma_scale_on_two_levels_trades_1_sigma_for_2_sigma_on_heavy_tails():
    """Heavy-tailed errors cannot be Gaussian at 1 and 2 sigma at once: fitted on both levels the
    factor sits between the two one-level factors and the summed squared coverage misfit is smaller
    than either's; on Gaussian errors both fits agree."""
    from img2spec.metrics import calibration, fit_sigma_scale, gaussian_within

    rng = np.random.default_rng(7)
    shape = (300, 200)
    ivar = np.full(shape, 1e12)
    pred, sigma = np.zeros(shape), np.ones(shape)

    def misfit(noise, scale):
        cal = calibration(pred, scale * sigma, noise, ivar)
        return sum((cal[f"within_{k}sigma"] - gaussian_within(k)) ** 2 for k in (1, 2))

    heavy = rng.standard_t(3, shape)
    one, two = (fit_sigma_scale(pred, sigma, heavy, ivar, levels=(k,)) for k in (1.0, 2.0))
    both = fit_sigma_scale(pred, sigma, heavy, ivar, levels=(1.0, 2.0))
    assert one["scale"] < both["scale"] < two["scale"]
    assert misfit(heavy, both["scale"]) < min(misfit(heavy, one["scale"]), misfit(heavy, two["scale"]))
    cal = calibration(pred, both["scale"] * sigma, heavy, ivar)
    assert cal["within_1sigma"] > gaussian_within(1.0) and cal["within_2sigma"] < gaussian_within(2.0)
    assert both["fitted_coverage"] == pytest.approx([cal["within_1sigma"], cal["within_2sigma"]], abs=1e-6)
    gauss = rng.standard_normal(shape) * 1.7
    assert fit_sigma_scale(pred, sigma, gauss, ivar, levels=(1.0, 2.0))["scale"] == pytest.approx(1.7, rel=0.02)
    with pytest.raises(ValueError, match="levels must be positive"):
        fit_sigma_scale(pred, sigma, gauss, ivar, levels=(0.0,))


def _objects(rng, n_obj: int, n_pix: int, scale_spread: float):
    """Residuals of objects whose true error scale differs per object (pixels of one spectrum
    share it, as they share a mis-predicted continuum), predicted sigma = 1 for all."""
    scale = np.exp(rng.normal(0.0, scale_spread, (n_obj, 1)))
    obs = rng.standard_normal((n_obj, n_pix)) * scale
    return np.zeros_like(obs), np.ones_like(obs), obs, np.full_like(obs, 1e12)  # obs noise negligible


def test_calibration_sem_counts_objects_not_pixels():
    """The reported standard error of a coverage matches its scatter over repeated surveys;
    a binomial error over pixels (what treating pixels as independent gives) is far smaller."""
    rng = np.random.default_rng(3)
    n_obj, n_pix = 60, 100
    runs = [calibration(*_objects(rng, n_obj, n_pix, 0.4)) for _ in range(300)]
    for key in ("within_2sigma", "beyond_3sigma"):
        spread = np.std([r[key] for r in runs], ddof=1)
        reported = np.mean([r[f"{key}_sem"] for r in runs])
        assert 0.8 < reported / spread < 1.25, (key, reported, spread)
    p = np.mean([r["within_2sigma"] for r in runs])
    binomial = np.sqrt(p * (1 - p) / (n_obj * n_pix))
    assert binomial < 0.5 * np.std([r["within_2sigma"] for r in runs], ddof=1)
    assert runs[0]["n_objects"] == n_obj and runs[0]["n_pixels"] == n_obj * n_pix


def test_verdict_judges_2sigma_and_tails_not_the_fitted_1sigma():
    """Heavy-tailed errors calibrated to 68.3% within 1 sigma (what fit_sigma_scale does) are
    not 'close to Gaussian'; Gaussian errors calibrated the same way are."""
    from img2spec.evaluate.summary import calibration_verdict
    from img2spec.metrics import GAUSSIAN_WITHIN_1SIGMA, fit_sigma_scale

    rng = np.random.default_rng(5)
    shape = (300, 200)
    ivar = np.full(shape, 1e12)
    for noise, gaussian in ((rng.standard_normal(shape), True), (rng.standard_t(3, shape), False)):
        pred, sigma = np.zeros(shape), np.ones(shape)
        scale = fit_sigma_scale(pred, sigma, noise, ivar)["scale"]
        cal = calibration(pred, scale * sigma, noise, ivar)
        assert cal["within_1sigma"] == pytest.approx(GAUSSIAN_WITHIN_1SIGMA, abs=2e-3)  # fitted: says nothing
        verdict = calibration_verdict(cal)
        if gaussian:
            assert verdict.startswith("close to Gaussian"), (verdict, cal)
        else:
            assert "overconfident at 2 sigma" in verdict and "heavier tails" in verdict, (verdict, cal)


def test_verdict_needs_two_standard_errors():
    from img2spec.evaluate.summary import calibration_verdict

    base = {"within_2sigma": 0.94, "within_2sigma_sem": 0.01, "beyond_3sigma": 0.004, "beyond_3sigma_sem": 0.001}
    assert calibration_verdict(base).startswith("close to Gaussian")  # 1.5 and 1.3 standard errors off
    assert calibration_verdict({**base, "within_2sigma": 0.93}).startswith("overconfident at 2 sigma")
    assert calibration_verdict({**base, "within_2sigma": 0.98}).startswith("conservative at 2 sigma")
    assert calibration_verdict({**base, "beyond_3sigma": 0.0001}).startswith("lighter tails")
    assert calibration_verdict({"within_1sigma": 0.683, "within_2sigma": 0.95}).startswith("not judged")
