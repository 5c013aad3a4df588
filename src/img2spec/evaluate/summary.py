"""The evaluation table as Markdown, rendered from `metrics/evaluate.json` (for the README)."""

from __future__ import annotations

from typing import Any

from ..metrics import GAUSSIAN_WITHIN_1SIGMA, GAUSSIAN_WITHIN_2SIGMA

METHOD_LABELS = {
    "cnn": "CNN pipeline (images -> VAE latents -> decoder)",
    "pca_cnn": "same CNN on PCA coefficients",
    "knn_colour": "kNN in PS1 colour space",
    "mean_spectrum": "mean training spectrum x photometric norm",
    "vae_ceiling": "VAE reconstruction (ceiling)",
    "noise_floor": "noiseless truth (noise floor)",
}
"""Methods in table order, as named in metrics/evaluate.json."""
CALIBRATED_TOLERANCE = 0.05
"""1-sigma coverage within this of the Gaussian value counts as calibrated in the verdict."""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


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
        verdict = ("conservative (too wide)" if w1 > GAUSSIAN_WITHIN_1SIGMA + CALIBRATED_TOLERANCE else
                   "overconfident (too narrow)" if w1 < GAUSSIAN_WITHIN_1SIGMA - CALIBRATED_TOLERANCE
                   else "close to Gaussian")
        fit = (metrics.get("sigma_scale") or {}).get("cnn")
        how = ""
        if fit:
            raw = fit.get("test_calibration_unscaled") or {}
            how = (f" ({fit.get('sigma_method', '')} sigma times {fit['scale']:.3f}, the factor fitted on the "
                   f"{fit.get('fitted_on', 'val')} split; unscaled: {_pct(raw['within_1sigma'])} and "
                   f"{_pct(raw['within_2sigma'])})" if raw else "")
        lines += ["", f"The CNN's predicted 1-sigma band{how}, with the observation's noise in quadrature, holds "
                      f"{_pct(w1)} of good test pixels within 1 sigma and {_pct(w2)} within 2 sigma "
                      f"(Gaussian: {_pct(GAUSSIAN_WITHIN_1SIGMA)}, {_pct(GAUSSIAN_WITHIN_2SIGMA)}): {verdict}."]
    return "\n".join(lines) + "\n"
