"""The evaluation table as Markdown, rendered from `metrics/evaluate.json` (for the README)."""

from __future__ import annotations

import math
from typing import Any

from ..metrics import GAUSSIAN_BEYOND_3SIGMA, GAUSSIAN_WITHIN_1SIGMA, GAUSSIAN_WITHIN_2SIGMA, TAIL_SIGMA

METHOD_LABELS = {
    "cnn": "CNN pipeline (images -> VAE latents -> decoder)",
    "pca_cnn": "same CNN on PCA coefficients",
    "knn_colour": "kNN in PS1 colour space",
    "mean_spectrum": "mean training spectrum x photometric norm",
    "vae_ceiling": "VAE reconstruction (ceiling)",
    "noise_floor": "noiseless truth (noise floor)",
}
"""Methods in table order, as named in metrics/evaluate.json."""
SIGNIFICANT_SEM = 2.0
"""A coverage differs from the Gaussian value only beyond this many standard errors."""
TAIL_KEY = f"beyond_{TAIL_SIGMA:g}sigma"


REDSHIFT_LABELS = {"cnn": "CNN redshift head (images)", "knn_colour": "kNN in PS1 colour space"}


def calibration_verdict(cal: dict[str, Any]) -> str:
    """Gaussian or not, judged on the 2-sigma coverage and the 3-sigma tails (the 1-sigma
    coverage is what the sigma calibration was fitted to reach, so it proves nothing); a
    difference counts only beyond SIGNIFICANT_SEM standard errors (per-object, `metrics.calibration`)."""
    checks = (("within_2sigma", GAUSSIAN_WITHIN_2SIGMA, "conservative at 2 sigma (too wide)",
               "overconfident at 2 sigma (too narrow)"),
              (TAIL_KEY, GAUSSIAN_BEYOND_3SIGMA, f"heavier tails than Gaussian beyond {TAIL_SIGMA:g} sigma",
               f"lighter tails than Gaussian beyond {TAIL_SIGMA:g} sigma"))
    found = []
    for key, gauss, above, below in checks:
        value, sem = cal.get(key), cal.get(f"{key}_sem")
        if value is None or sem is None or not (math.isfinite(value) and math.isfinite(sem)):
            return f"not judged (no {key} with a standard error; rerun evaluate)"
        if abs(value - gauss) > SIGNIFICANT_SEM * sem:
            found.append(above if value > gauss else below)
    if not found:
        return (f"close to Gaussian (2-sigma coverage and {TAIL_SIGMA:g}-sigma tails within "
                f"{SIGNIFICANT_SEM:g} standard errors of it)")
    return "; ".join(found) + f" (beyond {SIGNIFICANT_SEM:g} standard errors)"


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _sem(cal: dict[str, Any], key: str, digits: int = 1) -> str:
    """' +- s' (percentage points) when the calibration carries the standard error of `key`."""
    sem = cal.get(f"{key}_sem")
    return f" +- {100 * sem:.{digits}f}" if sem is not None and math.isfinite(sem) else ""


def markdown_table(metrics: dict[str, Any]) -> str:
    """Mean D_i +- sem and median per method, then the CNN uncertainty's calibration."""
    md = metrics["mean_deviation"]
    n_test = md["cnn"]["n"]
    lines = [f"Test split: {n_test} galaxies; D_i in SDSS spectral errors (lower is better).", "",
             "| method | mean D_i | median |", "|---|---:|---:|"]
    for name, label in METHOD_LABELS.items():
        if name in md:
            r = md[name]
            lines.append(f"| {label} | {r['mean']:.3f} +- {r['sem']:.3f} | {r['median']:.2f} |")
    cal = (metrics.get("calibration") or {}).get("cnn")
    if cal:
        w1, w2 = cal["within_1sigma"], cal["within_2sigma"]
        verdict = calibration_verdict(cal)
        fit = (metrics.get("sigma_scale") or {}).get("cnn")
        how = ""
        if fit:
            raw = fit.get("test_calibration_unscaled") or {}
            how = (f" ({fit.get('sigma_method', '')} sigma times {fit['scale']:.3f}, the factor fitted on the "
                   f"{fit.get('fitted_on', 'val')} split; unscaled: {_pct(raw['within_1sigma'])} and "
                   f"{_pct(raw['within_2sigma'])})" if raw else "")
        lines += ["", f"The CNN's predicted 1-sigma band{how}, with the observation's noise in quadrature, holds "
                      f"{_pct(w1)} of good test pixels within 1 sigma and {_pct(w2)}{_sem(cal, 'within_2sigma')} "
                      f"within 2 sigma (Gaussian: {_pct(GAUSSIAN_WITHIN_1SIGMA)}, {_pct(GAUSSIAN_WITHIN_2SIGMA)})"
                      + (f"; {_pct(cal[TAIL_KEY], 2)}{_sem(cal, TAIL_KEY, 2)} beyond {TAIL_SIGMA:g} sigma (Gaussian: "
                         f"{_pct(GAUSSIAN_BEYOND_3SIGMA, 2)})" if TAIL_KEY in cal else "") + f": {verdict}."]
    return "\n".join(lines + _redshift_lines(metrics.get("redshift") or {})) + "\n"


def _redshift_lines(redshift: dict[str, Any]) -> list[str]:
    """The photo-z of the CNN's redshift head beside the colour kNN (metrics `redshift`), if scored."""
    rows = [(label, redshift[name]) for name, label in REDSHIFT_LABELS.items() if name in redshift]
    if not rows:
        return []
    threshold = (redshift.get("notes") or {}).get("outlier_threshold")
    out = ["", f"Photometric redshift on the same test split (outliers: |dz|/(1+z) > {threshold}):", "",
           "| method | sigma_NMAD | bias | outliers | n |", "|---|---:|---:|---:|---:|"]
    out += [f"| {label} | {r['sigma_nmad']:.4f} | {r['bias']:+.4f} | {_pct(r['outlier_fraction'])} | {r['n']} |"
            for label, r in rows]
    return out
