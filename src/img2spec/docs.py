"""README rendering: the generated sections between `<!-- name:start -->` and `<!-- name:end -->`,
and the evaluation tables they hold, rendered from `metrics/evaluate.json`.

Every table lists the methods present in the metrics, in one fixed order, so a method added
to the evaluate stage shows up without a change here; a method missing from older metrics is
simply left out.
"""

from __future__ import annotations

import math
from typing import Any

from .io.markdown import markers, replace_section
from .metrics import GAUSSIAN_BEYOND_3SIGMA, GAUSSIAN_WITHIN_1SIGMA, GAUSSIAN_WITHIN_2SIGMA, TAIL_SIGMA

CEILING_LABEL = "representation ceiling (reconstruction of the observed spectrum)"
METHOD_LABELS = {
    "cnn": "CNN pipeline (images -> latents -> decoder)",
    "cnn_given_z": "CNN, catalogue z given",
    "direct": "direct (image network trained on the target itself)",
    "pca_cnn": "same CNN on PCA coefficients",
    "knn_colour": "kNN in PS1 colour space",
    "vae_ceiling": CEILING_LABEL,
    "mean_spectrum": "mean training spectrum x photometric norm",
    "noise_floor": "noiseless truth (noise floor)",
}
"""Rows of the deviation table in order, as the methods are named in metrics/evaluate.json."""
MEASURE_LABELS = {
    "cnn": "CNN",
    "cnn_given_z": "CNN, catalogue z given",
    "direct": "direct",
    "pca_cnn": "PCA + CNN",
    "knn_colour": "kNN colour",
    "vae_ceiling": CEILING_LABEL,
    "mean_spectrum": "mean spectrum",
    "observed": "observed spectrum",
}
"""Columns of the measurement and class tables in order (methods as in metrics/evaluate.json)."""
POINT_CLASS_LABELS = {"cnn_point": "CNN point spectrum, no z given",
                      "cnn_given_z_point": "CNN point spectrum, catalogue z given"}
"""Extra columns of the class table: the CNN's classes measured on its point spectrum, beside the
classes decided on its posterior draws (`models.class_draws`)."""
CNN_NO_Z = {"deviation": "CNN, no z given", "measure": "CNN, no z given"}
"""The CNN's label when the catalogue-z variant sits beside it."""
MEASURE_QUANTITIES = {"dn4000": "Dn4000", "hdelta_a": "HdeltaA [A]", "halpha_ew": "EW(Halpha) [A]",
                      "oiii_hbeta": "log [OIII]/Hbeta", "nii_halpha": "log [NII]/Halpha"}
REDSHIFT_LABELS = {"cnn": "CNN redshift head", "cnn_images_only": "CNN redshift head, images only",
                   "knn_colour": "kNN in PS1 colour space"}
"""Rows of the photo-z table in order."""
REDSHIFT_COVERAGE = {"coverage_1sigma": "within 1 sigma", "coverage_2sigma": "within 2 sigma"}
"""Optional photo-z columns: share of test galaxies whose z lies within the stated error."""
DOORENBOS_AGN_ACCURACY = 0.82
"""Doorenbos et al. 2024 (arXiv:2406.18175): AGN presence predicted from 64x64 SDSS images
(conditional diffusion model) with 82% accuracy."""
SIGNIFICANT_SEM = 2.0
"""A coverage differs from the Gaussian value only beyond this many standard errors."""
TAIL_KEY = f"beyond_{TAIL_SIGMA:g}sigma"
__all__ = ["markers", "replace_section", "evaluation_table", "measurement_table", "calibration_verdict",
           "METHOD_LABELS", "MEASURE_LABELS", "REDSHIFT_LABELS"]


def _labels(table: dict[str, str], present: set[str], kind: str) -> dict[str, str]:
    """`table` restricted to the methods present, in its order; the CNN is 'no z given' beside
    the catalogue-z variant, so readers see which of the two a number belongs to."""
    out = {m: label for m, label in table.items() if m in present}
    if "cnn" in out and "cnn_given_z" in out:
        out["cnn"] = CNN_NO_Z[kind]
    return out


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


def evaluation_table(metrics: dict[str, Any]) -> str:
    """Mean D_i +- sem and median per method, the CNN uncertainty's calibration, the photo-z."""
    md = metrics["mean_deviation"]
    n_test = next((md[m]["n"] for m in ("cnn", *md) if m in md and "n" in md[m]), 0)
    lines = [f"Test split: {n_test} galaxies; D_i in SDSS spectral errors (lower is better).", "",
             "| method | mean D_i | median |", "|---|---:|---:|"]
    for name, label in _labels(METHOD_LABELS, set(md), "deviation").items():
        r = md[name]
        lines.append(f"| {label} | {r['mean']:.3f} +- {r['sem']:.3f} | {r['median']:.2f} |")
    return "\n".join(lines + _calibration_lines(metrics) + _redshift_lines(metrics.get("redshift") or {})) + "\n"


def _calibration_lines(metrics: dict[str, Any]) -> list[str]:
    cal = (metrics.get("calibration") or {}).get("cnn")
    if not cal:
        return []
    w1, w2 = cal["within_1sigma"], cal["within_2sigma"]
    fit = (metrics.get("sigma_scale") or {}).get("cnn")
    how = ""
    if fit:
        raw = fit.get("test_calibration_unscaled") or {}
        how = (f" ({fit.get('sigma_method', '')} sigma times {fit['scale']:.3f}, the factor fitted on the "
               f"{fit.get('fitted_on', 'val')} split; unscaled: {_pct(raw['within_1sigma'])} and "
               f"{_pct(raw['within_2sigma'])})" if raw else "")
    tail = (f"; {_pct(cal[TAIL_KEY], 2)}{_sem(cal, TAIL_KEY, 2)} beyond {TAIL_SIGMA:g} sigma (Gaussian: "
            f"{_pct(GAUSSIAN_BEYOND_3SIGMA, 2)})" if TAIL_KEY in cal else "")
    return ["", f"The CNN's predicted 1-sigma band{how}, with the observation's noise in quadrature, holds "
                f"{_pct(w1)} of good test pixels within 1 sigma and {_pct(w2)}{_sem(cal, 'within_2sigma')} "
                f"within 2 sigma (Gaussian: {_pct(GAUSSIAN_WITHIN_1SIGMA)}, {_pct(GAUSSIAN_WITHIN_2SIGMA)})"
                f"{tail}: {calibration_verdict(cal)}."]


def _redshift_lines(redshift: dict[str, Any]) -> list[str]:
    """The photo-z of the CNN's redshift head beside the colour kNN (metrics `redshift`), if scored;
    coverage columns appear when any method reports them."""
    rows = [(label, redshift[name]) for name, label in REDSHIFT_LABELS.items() if name in redshift]
    if not rows:
        return []
    cover = [k for k in REDSHIFT_COVERAGE if any(k in r for _, r in rows)]
    threshold = (redshift.get("notes") or {}).get("outlier_threshold")
    head = "| method | sigma_NMAD | bias | outliers | " + "".join(f"{REDSHIFT_COVERAGE[k]} | " for k in cover) + "n |"
    out = ["", f"Photometric redshift on the same test split (outliers: |dz|/(1+z) > {threshold}"
               + ("; coverage: share of galaxies whose z lies within the stated error" if cover else "") + "):", "",
           head, "|---|" + "---:|" * (4 + len(cover))]
    for label, r in rows:
        cells = "".join(f"{_pct(r[k])} | " if r.get(k) is not None else "- | " for k in cover)
        out.append(f"| {label} | {r['sigma_nmad']:.4f} | {r['bias']:+.4f} | {_pct(r['outlier_fraction'])} | "
                   f"{cells}{r['n']} |")
    return out


def measurement_table(metrics: dict[str, Any]) -> str:
    """Measurement bias / NMAD and class accuracies of every method present in the metrics,
    beside Doorenbos et al. 2024."""
    meas, classes = metrics.get("measurements") or {}, metrics.get("classes") or {}
    notes = (metrics.get("notes") or {}).get("measurements") or {}
    present = {m for q in MEASURE_QUANTITIES for m in meas.get(q, {})}
    labels = _labels(MEASURE_LABELS, present, "measure")
    if not labels:
        return "No spectral measurements in these metrics (run `dvc repro evaluate`).\n"
    ref = notes.get("reference", "truth")
    header = " | ".join(labels.values())
    lines = [f"Spectral measurements of the test galaxies (`measure/`), each method against the "
             f"{'noiseless truth' if ref == 'truth' else 'observed spectrum'}: median difference (bias) "
             "and NMAD, n galaxies measured by both.", "",
             f"| quantity | {header} |", "|---|" + "---:|" * len(labels)]
    for q, label in MEASURE_QUANTITIES.items():
        cells = [_measure_cell(meas.get(q, {}).get(m)) for m in labels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    class_labels = _class_labels(labels, classes)
    lines += ["", f"| classes: accuracy (balanced) | {' | '.join(class_labels.values())} |",
              "|---|" + "---:|" * len(class_labels)]
    for scheme, s in classes.items():
        lines.append(f"| {scheme} | " + " | ".join(_class_cell(s.get(m)) for m in class_labels) + " |")
    return "\n".join(lines + _agn_lines(classes, notes, ref)) + "\n"


def _class_labels(labels: dict[str, str], classes: dict[str, Any]) -> dict[str, str]:
    """The class table's columns: the measurement table's, with the point-spectrum classes of the
    CNN (present when its classes were decided on posterior draws) after the CNN's columns."""
    present = {m for s in classes.values() for m in s}
    point = {m: label for m, label in POINT_CLASS_LABELS.items() if m in present}
    if not point:
        return labels
    out = {}
    for m, label in labels.items():
        out[m] = label
        if m == "cnn_given_z" or (m == "cnn" and "cnn_given_z" not in labels):
            out.update(point)
    return out


def _measure_cell(r: dict[str, Any] | None) -> str:
    return "-" if not r or not r["n"] else f"{r['bias']:+.3f} / {r['nmad']:.3f} ({r['n']})"


def _class_cell(r: dict[str, Any] | None) -> str:
    return ("-" if not r or not r["n"] else
            f"{100 * r['accuracy']:.1f}% ({100 * r['balanced_accuracy']:.1f}%), n={r['n']}")


def _agn_lines(classes: dict[str, Any], notes: dict[str, Any], ref: str) -> list[str]:
    agn = classes.get("agn", {}).get("cnn")
    if not agn or not agn["n"]:
        return []
    counts = (notes.get("reference_class_counts") or {}).get("agn", {})
    return ["", f"AGN (above the Kewley et al. 2001 line, among the {agn['n']} test galaxies whose "
                f"{ref} spectrum puts them on the BPT diagram; {counts.get('agn', 0)} of them AGN): the CNN's "
                f"spectra classify {100 * agn['accuracy']:.1f}% correctly (balanced "
                f"{100 * agn['balanced_accuracy']:.1f}%). Doorenbos et al. 2024 report "
                f"{100 * DOORENBOS_AGN_ACCURACY:.0f}% for AGN presence from 64x64 SDSS images with a "
                "diffusion model, on real SDSS spectra with their own AGN definition and class balance: "
                "a reference point, not the same test."]
