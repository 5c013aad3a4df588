"""The project metric (DESIGN.md): per-object deviation in units of the SDSS errors.

    D_i = mean_p |pred_ip - obs_ip| * sqrt(ivar_ip),  over good pixels p (ivar > 0)

(`and_mask` pixels already carry ivar = 0 in data/processed). An object without a good
pixel has no D_i: it is NaN and counted as skipped in the summary, never dropped silently.
"""

from __future__ import annotations

import math

import numpy as np

PERCENTILES = (16.0, 84.0)
GAUSSIAN_WITHIN_1SIGMA = 0.6827
"""Fraction of a Gaussian within 1 sigma: the target coverage of the calibrated uncertainty."""
GAUSSIAN_WITHIN_2SIGMA = 0.9545
TAIL_SIGMA = 3.0
"""`calibration` also reports the fraction of pixels beyond this many sigma (the tails)."""
GAUSSIAN_BEYOND_3SIGMA = 0.0027
"""Fraction of a Gaussian beyond 3 sigma."""
SCALE_SEARCH_POINTS = 513
"""Candidate factors of a sigma fit on several levels, evenly spaced between the levels' exact factors."""


def deviation(pred: np.ndarray, obs: np.ndarray, ivar: np.ndarray, pixel_mask: np.ndarray | None = None) -> np.ndarray:
    """D_i for each row of (N, P) arrays; `pixel_mask` (P,) or (N, P) restricts the pixels
    (e.g. a wavelength region). NaN where an object has no good pixel."""
    pred = np.asarray(pred, np.float64)
    obs = np.asarray(obs, np.float64)
    ivar = np.asarray(ivar, np.float64)
    if pred.shape != obs.shape or obs.shape != ivar.shape:
        raise ValueError(f"deviation: shapes differ (pred {pred.shape}, obs {obs.shape}, ivar {ivar.shape})")
    good = np.isfinite(ivar) & (ivar > 0) & np.isfinite(obs)
    if pixel_mask is not None:
        good &= np.broadcast_to(np.asarray(pixel_mask, bool), good.shape)
    n_good = good.sum(axis=-1)
    safe_ivar = np.where(good, ivar, 0.0)
    term = np.where(good, np.abs(pred - np.where(good, obs, 0.0)) * np.sqrt(safe_ivar), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_good > 0, term.sum(axis=-1) / n_good, np.nan)


def summarise(d: np.ndarray) -> dict:
    """mean, standard error of the mean, median, 16/84th percentiles, n used, n skipped (NaN)."""
    d = np.asarray(d, np.float64)
    ok = d[np.isfinite(d)]
    n = int(ok.size)
    out = {"mean": float("nan"), "sem": float("nan"), "median": float("nan"),
           "p16": float("nan"), "p84": float("nan"), "n": n, "n_skipped": int(d.size - n)}
    if n:
        lo, hi = np.percentile(ok, PERCENTILES)
        out.update(mean=float(ok.mean()), median=float(np.median(ok)), p16=float(lo), p84=float(hi),
                   sem=float(ok.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"))
    return out


def clustered_sem(counts: np.ndarray, totals: np.ndarray) -> float:
    """Standard error of the pooled fraction sum(counts) / sum(totals) with objects as the
    independent units (ratio estimator): pixels of one spectrum share its errors, so a
    binomial error over pixels would be far too small. NaN with fewer than 2 objects."""
    counts = np.asarray(counts, np.float64)
    totals = np.asarray(totals, np.float64)
    keep = totals > 0
    counts, totals = counts[keep], totals[keep]
    m = counts.size
    if m < 2:
        return float("nan")
    ratio = counts.sum() / totals.sum()
    return float(np.sqrt(m / (m - 1) * np.sum((counts - ratio * totals) ** 2)) / totals.sum())


def calibration(pred: np.ndarray, sigma: np.ndarray, obs: np.ndarray, ivar: np.ndarray,
                levels: tuple[float, ...] = (1.0, 2.0)) -> dict:
    """Fraction of good pixels with |pred - obs| <= k * sqrt(sigma^2 + 1/ivar): the predicted
    model spread and the observation's own noise together (Gaussian: 0.683, 0.954), and the
    fraction beyond TAIL_SIGMA (Gaussian 0.0027). Each fraction comes with `<name>_sem`, its
    standard error with objects (rows) as the independent units (`clustered_sem`)."""
    ivar = np.asarray(ivar, np.float64)
    good = np.isfinite(ivar) & (ivar > 0) & np.isfinite(obs) & np.isfinite(sigma)
    names = [f"within_{k:g}sigma" for k in levels] + [f"beyond_{TAIL_SIGMA:g}sigma"]
    if not good.any():
        return {n: float("nan") for n in names} | {f"{n}_sem": float("nan") for n in names} | {
            "n_pixels": 0, "n_objects": 0}
    with np.errstate(invalid="ignore", divide="ignore"):  # masked pixels: dropped just below
        pull = np.abs(np.asarray(pred, np.float64) - obs) / np.sqrt(np.asarray(sigma, np.float64) ** 2 + 1.0 / ivar)
    pull = np.where(good, pull, np.nan).reshape(-1, good.shape[-1])
    n_good = good.reshape(-1, good.shape[-1]).sum(axis=1)
    counts = [(pull <= k).sum(axis=1) for k in levels] + [(pull > TAIL_SIGMA).sum(axis=1)]
    out: dict = {}
    for name, c in zip(names, counts):
        out[name] = float(c.sum() / n_good.sum())
        out[f"{name}_sem"] = clustered_sem(c, n_good)
    out["n_pixels"] = int(n_good.sum())
    out["n_objects"] = int((n_good > 0).sum())
    return out


def gaussian_within(k: float) -> float:
    """Fraction of a Gaussian within k sigma."""
    return math.erf(k / math.sqrt(2.0))


def _scale_thresholds(resid2: np.ndarray, noise2: np.ndarray, sigma: np.ndarray, k: float) -> np.ndarray:
    """Per pixel, the least factor s on sigma that puts it within k sigma: |resid| <= k sqrt((s sigma)^2 +
    noise2) iff s >= sqrt(max(resid^2 / k^2 - noise2, 0)) / sigma (inf for sigma 0 with an excess)."""
    excess = np.sqrt(np.maximum(resid2 / k**2 - noise2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sort(np.where(excess == 0, 0.0, excess / sigma))


def fit_sigma_scale(pred: np.ndarray, sigma: np.ndarray, obs: np.ndarray, ivar: np.ndarray,
                    levels: tuple[float, ...] = (1.0,)) -> dict:
    """The factor s on the predicted sigma whose `calibration` coverages best match a Gaussian's at `levels`.

    Pixel p is within k sigma at s when s >= its threshold s_p(k) (`_scale_thresholds`), so the
    coverage at k is the fraction of good pixels with s_p(k) <= s. One level: s is the Gaussian
    quantile of s_p(k) (exact, no search). Several: s minimises the summed squared difference
    between the coverages and a Gaussian's, searched between the levels' exact factors (errors
    with heavier tails than a Gaussian cannot match every level; one level alone fits the others
    as they fall). `floor_coverage` is the 1-sigma coverage of the observation noise alone (s = 0):
    when it already exceeds a Gaussian's, s is 0 and the predicted sigma cannot be calibrated by scaling.
    """
    ivar = np.asarray(ivar, np.float64)
    sigma = np.asarray(sigma, np.float64)
    good = np.isfinite(ivar) & (ivar > 0) & np.isfinite(obs) & np.isfinite(sigma)
    if not good.any():
        raise ValueError("fit_sigma_scale: no good pixel with a finite predicted sigma")
    if not levels or min(levels) <= 0:
        raise ValueError(f"fit_sigma_scale: levels must be positive numbers of sigma, got {levels}")
    resid2 = (np.asarray(pred, np.float64) - np.asarray(obs, np.float64))[good] ** 2
    thresholds = {k: _scale_thresholds(resid2, 1.0 / ivar[good], sigma[good], k) for k in levels}
    exact = [float(np.quantile(t, gaussian_within(k))) for k, t in thresholds.items()]
    candidates = np.unique(np.linspace(min(exact), max(exact), SCALE_SEARCH_POINTS)) if np.all(np.isfinite(exact)) \
        else np.array([float("nan")])

    coverage = {k: np.searchsorted(t, candidates, side="right") / t.size for k, t in thresholds.items()}
    best = int(np.argmin(sum((c - gaussian_within(k)) ** 2 for k, c in coverage.items())))
    scale = float(candidates[best])
    return {"scale": scale if np.isfinite(scale) else float("nan"), "levels": [float(k) for k in levels],
            "target_coverage": [gaussian_within(k) for k in levels],
            "fitted_coverage": [float(c[best]) for c in coverage.values()] if np.isfinite(scale) else [],
            "floor_coverage": float(np.mean(resid2 <= 1.0 / ivar[good])),
            "n_pixels": int(good.sum())}
