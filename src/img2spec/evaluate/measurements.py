"""How well spectral measurements from predicted spectra recover the truth (evaluate stage).

Every spectrum of a test object (the noiseless truth on the mock, the observed spectrum, the
CNN prediction, the baselines) is measured by `measure.measure_spectra` at the object's
catalogue redshift with the same error model, the observation's ivar: the same pixels are
masked for every method, and the BPT S/N cut asks "would an SDSS spectrum of this object
detect these lines", identically for all. Each method is then compared with the reference:
the noiseless truth where it exists (mock), else the observed spectrum (real data; the
`observed` method is then the reference itself and not scored).

- `measurements[q][method]`: bias = median(method - reference), nmad = 1.4826 median(|d -
  median(d)|), n objects both measured, n_missing (reference measured, method NaN).
  Line ratios (log10, dex) only where the reference detects both lines at S/N >=
  measure.classes.bpt_min_snr, so noise in undetected lines is not scored.
- `classes[scheme][method]`: accuracy over objects with a reference class (a method leaving
  one unclassified counts as wrong), balanced accuracy (mean recall over reference classes),
  and the confusion counts {reference class: {method class: n}}.
"""

from __future__ import annotations

import numpy as np

from ..config.measure import MeasureParams
from ..docs import measurement_table as markdown_table  # noqa: F401  (the README renderer, one definition)
from ..measure import CLASS_COLUMNS, UNCLASSIFIED, measure_spectra
from ..measure.stats import NMAD_SCALE

QUANTITIES = {
    "dn4000": "dn4000",
    "halpha_ew": "halpha_ew",
    "hdelta_a": "hdelta_a",
    "oiii_hbeta": "log_oiii_hbeta",
    "nii_halpha": "log_nii_halpha",
    "oii_ew": "oii_3727_ew",
    "hbeta_ew": "hbeta_ew",
    "oiii_ew": "oiii_5007_ew",
}
"""metrics name -> measure_spectra column."""
RATIO_LINES = {"oiii_hbeta": ("oiii_5007", "hbeta"), "nii_halpha": ("nii_6584", "halpha")}
SCHEMES = {scheme: (col, CLASS_COLUMNS[col]) for scheme, col in
           (("sf_quiescent", "sf_class"), ("bpt", "bpt_class"), ("agn", "agn_class"))}
METHODS = ("cnn", "cnn_given_z", "pca_cnn", "knn_colour", "vae_ceiling", "mean_spectrum")
"""Predicted spectra scored (those present), besides `observed`."""


def robust_difference(values: np.ndarray, reference: np.ndarray, use: np.ndarray | None = None) -> dict:
    """bias (median difference), nmad, n (both finite) and n_missing (reference finite only)."""
    v, r = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    ref_ok = np.isfinite(r) if use is None else np.isfinite(r) & use
    ok = ref_ok & np.isfinite(v)
    d = v[ok] - r[ok]
    out = {"bias": float("nan"), "nmad": float("nan"), "n": int(ok.sum()), "n_missing": int((ref_ok & ~ok).sum())}
    if d.size:
        med = float(np.median(d))
        out.update(bias=med, nmad=float(NMAD_SCALE * np.median(np.abs(d - med))))
    return out


def class_scores(reference: np.ndarray, predicted: np.ndarray, labels: dict[int, str]) -> dict:
    """accuracy, balanced accuracy and confusion over objects with a reference class."""
    ref, pred = np.asarray(reference), np.asarray(predicted)
    has = ref != UNCLASSIFIED
    r, p = ref[has], pred[has]
    confusion = {labels[t]: {labels[q]: int(np.sum((r == t) & (p == q))) for q in labels}
                 for t in labels if t != UNCLASSIFIED}
    recalls = [float(np.mean(p[r == t] == t)) for t in labels if t != UNCLASSIFIED and np.any(r == t)]
    return {"accuracy": float(np.mean(r == p)) if r.size else float("nan"),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
            "n": int(r.size), "n_unclassified": int(np.sum(p == UNCLASSIFIED)), "confusion": confusion}


def rest_error_model(wave: np.ndarray, ivar: np.ndarray, z: np.ndarray, rest_wave: np.ndarray) -> np.ndarray:
    """The observation's ivar carried onto a rest grid at each object's z: rest pixel k takes the
    observed pixel nearest to rest_wave[k] (1 + z); off the observed grid (or without z) it is 0."""
    ln_obs = np.log(np.asarray(wave, np.float64))
    target = np.log(np.asarray(rest_wave, np.float64))[None, :] + np.log1p(np.asarray(z, np.float64))[:, None]
    pos = np.rint(np.interp(target, ln_obs, np.arange(ln_obs.size), left=-1.0, right=-1.0))
    pos = np.where(np.isfinite(target), pos, -1.0)
    inside = pos >= 0
    got = np.take_along_axis(np.asarray(ivar, np.float32), np.where(inside, pos, 0).astype(np.int64), axis=1)
    return np.where(inside, got, 0.0).astype(np.float32)


def measure_methods(wave: np.ndarray, z: np.ndarray, frame: str, obs: np.ndarray, ivar: np.ndarray,
                    preds: dict[str, np.ndarray], truth: np.ndarray | None,
                    mp: MeasureParams, rest: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
                    ) -> dict[str, dict[str, np.ndarray]]:
    """measure_spectra tables of `truth` (if any), `observed` and every present METHODS entry,
    all with the observation's ivar as the error model.

    `rest`: (rest_wave, {method: rest-frame spectra}) measured on their own grid at z = 0 (how
    predict and survey measure a rest-frame prediction), with the observation's ivar carried onto
    that grid at the catalogue z (`rest_error_model`): the same pixels masked as for the others.
    """
    spectra = {"truth": truth} if truth is not None else {}
    spectra["observed"] = obs
    rest_methods = rest[1] if rest is not None else {}
    spectra.update({m: preds[m] for m in METHODS if m in preds and m not in rest_methods})
    tables = {name: measure_spectra(flux, wave, z, mp, ivar=ivar, frame=frame) for name, flux in spectra.items()}
    if rest_methods:
        rest_wave = rest[0]
        rest_ivar = rest_error_model(wave, ivar, z, rest_wave)
        tables.update({m: measure_spectra(flux, rest_wave, 0.0, mp, ivar=rest_ivar, frame="rest")
                       for m, flux in rest_methods.items() if m in METHODS})
    return tables


def score_measurements(tables: dict[str, dict[str, np.ndarray]], mp: MeasureParams) -> dict:
    """`measurements`, `classes` and `notes` sections of metrics/evaluate.json."""
    ref_name = "truth" if "truth" in tables else "observed"
    ref = tables[ref_name]
    methods = [m for m in tables if m not in ("truth", ref_name)]
    measurements = {}
    for q, col in QUANTITIES.items():
        use = None
        if q in RATIO_LINES:
            use = np.ones(len(ref[col]), bool)
            for line in RATIO_LINES[q]:
                with np.errstate(invalid="ignore", divide="ignore"):
                    snr = ref[f"{line}_flux"] / ref[f"{line}_flux_err"]
                use &= snr >= mp.classes.bpt_min_snr
        # A method scores the quantities its table has (the direct baseline predicts a subset).
        measurements[q] = {m: robust_difference(tables[m][col], ref[col], use) for m in methods if col in tables[m]}
    classes = {scheme: {m: class_scores(ref[col], tables[m][col], labels) for m in methods}
               for scheme, (col, labels) in SCHEMES.items()}
    counts = {scheme: {labels[c]: int(np.sum(ref[col] == c)) for c in labels}
              for scheme, (col, labels) in SCHEMES.items()}
    notes = {"reference": ref_name, "error_model": "observed ivar for every method",
             "reference_class_counts": counts,
             "units": {"dn4000": "ratio", "hdelta_a": "A (absorption > 0)", "oiii_hbeta": "dex",
                       "nii_halpha": "dex", **{q: "A rest frame (emission > 0)" for q in QUANTITIES if q.endswith("_ew")}}}
    return {"measurements": measurements, "classes": classes, "notes": notes}


def flat_metrics(result: dict) -> dict[str, float]:
    """MLflow metrics of the `measurements` and `classes` sections: `measure.<q>.<method>.bias|nmad`
    and `classes.<scheme>.<method>.accuracy|balanced_accuracy` (finite values only)."""
    out = {f"measure.{q}.{m}.{k}": float(r[k]) for q, per in (result.get("measurements") or {}).items()
           for m, r in per.items() for k in ("bias", "nmad")}
    out.update({f"classes.{s}.{m}.{k}": float(r[k]) for s, per in (result.get("classes") or {}).items()
                for m, r in per.items() for k in ("accuracy", "balanced_accuracy")})
    return {k: v for k, v in out.items() if np.isfinite(v)}
