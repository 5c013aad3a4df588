"""Photometric-redshift metrics: the CNN's redshift head beside a colour-kNN photo-z.

Conventions (Pasquet et al. 2019, A&A 621, A26), with dz = z_phot - z_spec:
- sigma_NMAD = 1.4826 median(|dz/(1 + z_spec) - median(dz/(1 + z_spec))|)
  (`measure.stats.nmad` of dz/(1 + z_spec): the project's one NMAD);
- bias = mean(dz / (1 + z_spec));
- outlier fraction: share of objects with |dz| / (1 + z_spec) > `OUTLIER_THRESHOLD`;
- coverage_1sigma / coverage_2sigma: share with |dz| <= 1 / 2 x the (calibrated) z_err.
The redshift error is calibrated by one factor fitted on the VAL split (`fit_redshift_scale`:
68.3% of val objects within scale x z_err), stored in the bundle and applied at inference.
A hybrid CNN (images + catalogue photometry) is scored with its photometry (`cnn`) and, the
same network with the missing indicator set, on images alone (`cnn_images_only`).
The kNN photo-z uses exactly the colour features of the spectrum kNN baseline
(`baselines.colour_features`), fitted on the train split only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.special import ndtr
from sklearn.neighbors import NearestNeighbors

from ..measure.stats import nmad
from .baselines import colour_features
from .rows import RowView

log = logging.getLogger(__name__)

OUTLIER_THRESHOLD = 0.05
"""|dz| / (1 + z) above this is a catastrophic outlier (at these low redshifts)."""
REDSHIFT_COLUMN = "z"
ONE_SIGMA_COVERAGE = 0.6827
"""Share of a Gaussian within 1 sigma: the val coverage the fitted error scale achieves."""
COVERAGE_LEVELS = {"coverage_1sigma": 1.0, "coverage_2sigma": 2.0}
"""Reported coverages: share of objects with |dz| <= level x z_err."""
PIT_BINS = 20
PIT_DPI = 100


def photoz_metrics(z_pred: np.ndarray, z_true: np.ndarray, outlier_threshold: float = OUTLIER_THRESHOLD,
                   z_err: np.ndarray | None = None) -> dict:
    """sigma_nmad, bias, outlier_fraction and n over the objects where both are finite;
    with `z_err` also `COVERAGE_LEVELS` (over the objects with a finite, positive error too)."""
    z_pred = np.asarray(z_pred, np.float64)
    z_true = np.asarray(z_true, np.float64)
    if z_pred.shape != z_true.shape:
        raise ValueError(f"z_pred {z_pred.shape} and z_true {z_true.shape} differ in shape")
    ok = np.isfinite(z_pred) & np.isfinite(z_true)
    n = int(ok.sum())
    cov_keys = list(COVERAGE_LEVELS) if z_err is not None else []
    if n == 0:
        return {"sigma_nmad": float("nan"), "bias": float("nan"), "outlier_fraction": float("nan"), "n": 0,
                **{k: float("nan") for k in cov_keys}}
    rel = (z_pred[ok] - z_true[ok]) / (1.0 + z_true[ok])
    out = {"sigma_nmad": nmad(rel), "bias": float(np.mean(rel)),
           "outlier_fraction": float(np.mean(np.abs(rel) > outlier_threshold)), "n": n}
    if z_err is not None:
        out.update(coverage(z_pred, np.asarray(z_err, np.float64), z_true))
    return out


def coverage(z_pred: np.ndarray, z_err: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """Share of objects with |z_pred - z_true| <= level x z_err, per `COVERAGE_LEVELS` (finite rows)."""
    ratio = _error_ratio(z_pred, z_err, z_true)
    return {k: float(np.mean(ratio <= level)) if ratio.size else float("nan") for k, level in COVERAGE_LEVELS.items()}


def _error_ratio(z_pred, z_err, z_true) -> np.ndarray:
    """|z_pred - z_true| / z_err over the rows where all are finite and z_err > 0."""
    z_pred, z_err, z_true = (np.asarray(a, np.float64) for a in (z_pred, z_err, z_true))
    ok = np.isfinite(z_pred) & np.isfinite(z_true) & np.isfinite(z_err) & (z_err > 0)
    return np.abs(z_pred[ok] - z_true[ok]) / z_err[ok]


def fit_redshift_scale(z_pred: np.ndarray, z_err: np.ndarray, z_true: np.ndarray) -> dict:
    """The factor s for which `ONE_SIGMA_COVERAGE` of the objects have |z_pred - z_true| <= s x z_err.

    Call it with the VAL split only. Returns {scale, coverage_1sigma (after scaling),
    coverage_1sigma_unscaled, n}; scale NaN when no object has a finite error.
    """
    ratio = _error_ratio(z_pred, z_err, z_true)
    if ratio.size == 0:
        return {"scale": float("nan"), "coverage_1sigma": float("nan"), "coverage_1sigma_unscaled": float("nan"),
                "n": 0}
    scale = float(np.quantile(ratio, ONE_SIGMA_COVERAGE))
    return {"scale": scale, "coverage_1sigma": float(np.mean(ratio <= scale)),
            "coverage_1sigma_unscaled": float(np.mean(ratio <= 1.0)), "n": int(ratio.size)}


def knn_photoz(catalog, train: np.ndarray, test: np.ndarray, k: int, use_magnitude: bool) -> tuple[np.ndarray, dict]:
    """Mean spectroscopic z of the k nearest train neighbours in standardised colour space.

    Test objects without finite colours get NaN (counted, and left out of the metrics)."""
    feats = colour_features(catalog, use_magnitude)
    z = catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
    ok_train = train[np.isfinite(feats[train]).all(axis=1) & np.isfinite(z[train])]
    if len(ok_train) == 0:
        raise ValueError("knn photo-z: no train object has finite colours and redshift")
    mu, sd = feats[ok_train].mean(axis=0), feats[ok_train].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    nn = NearestNeighbors(n_neighbors=min(k, len(ok_train))).fit((feats[ok_train] - mu) / sd)
    pred = np.full(len(test), np.nan)
    finite = np.isfinite(feats[test]).all(axis=1)
    if finite.any():
        _, nbr = nn.kneighbors((feats[test][finite] - mu) / sd)
        pred[finite] = z[ok_train][nbr].mean(axis=1)
    return pred, {"k": int(nn.n_neighbors), "n_no_colours": int((~finite).sum())}


def redshift_metrics(z_cnn: np.ndarray | None, catalog, train: np.ndarray, test: np.ndarray, k: int,
                     use_magnitude: bool, *, z_err: np.ndarray | None = None,
                     z_images_only: np.ndarray | None = None, z_err_images_only: np.ndarray | None = None) -> dict:
    """{"cnn", "cnn_images_only" (each when given), "knn_colour": metrics, "notes"} on the test split.

    `z_err`/`z_err_images_only`: the calibrated errors (adds the coverages)."""
    z_true = catalog[REDSHIFT_COLUMN].to_numpy(np.float64)[test]
    z_knn, info = knn_photoz(catalog, train, test, k, use_magnitude)
    out: dict = {}
    notes = {"knn_colour": info, "outlier_threshold": OUTLIER_THRESHOLD,
             "sigma_nmad": "1.4826 median(|dz/(1+z) - median(dz/(1+z))|)",
             "bias": "mean((z_pred - z_spec) / (1 + z_spec))",
             "coverage": "share of test objects with |z_pred - z_spec| <= 1 (2) x z_err, z_err calibrated on val"}
    if z_cnn is not None:
        out["cnn"] = photoz_metrics(np.asarray(z_cnn, np.float64), z_true, z_err=z_err)
    else:
        notes["cnn"] = "the CNN has no redshift head (cnn.redshift_weight: 0 or an older model)"
    if z_images_only is not None:
        out["cnn_images_only"] = photoz_metrics(np.asarray(z_images_only, np.float64), z_true, z_err=z_err_images_only)
        notes["cnn_images_only"] = "the hybrid CNN with its photometry withheld (missing indicator set)"
    out["knn_colour"] = photoz_metrics(z_knn, z_true)
    out["notes"] = notes
    for name in ("cnn", "cnn_images_only", "knn_colour"):
        if name in out:
            m = out[name]
            cov = (f", within 1/2 sigma {100 * m['coverage_1sigma']:.1f}%/{100 * m['coverage_2sigma']:.1f}%"
                   if "coverage_1sigma" in m else "")
            log.info("photo-z %-15s sigma_NMAD = %.4f, bias = %+.4f, outliers = %.1f%% (n=%d)%s", name,
                     m["sigma_nmad"], m["bias"], 100 * m["outlier_fraction"], m["n"], cov)
    return out


# ----------------------------------------------------------------------------- with the CNN
def cnn_photoz(cnn, images, photometry: np.ndarray | None, *, batch_size: int) -> dict[str, tuple]:
    """{"cnn": (z, raw z_err)} of a CNN with a redshift head, plus "cnn_images_only" for a hybrid CNN
    (the same network without its photometry); {} for a CNN without a redshift head."""
    from ..models.cnn import has_redshift_head, uses_photometry
    from ..models.inference import predict_outputs

    if not has_redshift_head(cnn):
        return {}
    hybrid = uses_photometry(cnn)
    _, _, z, z_err = predict_outputs(cnn, images, photometry=photometry if hybrid else None, batch_size=batch_size)
    out = {"cnn": (z, z_err)}
    if hybrid:
        _, _, z_i, z_err_i = predict_outputs(cnn, images, batch_size=batch_size)
        out["cnn_images_only"] = (z_i, z_err_i)
    return out


def catalogue_photometry(data, rows: np.ndarray) -> np.ndarray | None:
    """(len(rows), 5) catalogue magnitudes of `rows` for a hybrid CNN (None if the catalogue has none)."""
    from ..models.data import catalogue_magnitudes

    try:
        return catalogue_magnitudes(data.catalog)[rows]
    except KeyError:
        return None


def redshift_scales(cnn, data, *, batch_size: int = 256) -> dict | None:
    """`fit_redshift_scale` on the VAL split for "cnn" (and "cnn_images_only" of a hybrid CNN), each
    with fitted_on="val"; None without a redshift head or val objects with a finite z.

    Pass `scale_of(result)` as `predict_spectra(z_err_scale=...)` and store the dict in
    metrics/evaluate.json as `redshift_scale` (the bundle reads it from there)."""
    val = data.indices("val")
    if len(val) == 0:
        log.warning("photo-z: the val split is empty; z_err is left unscaled")
        return None
    images = RowView(data.images, val)
    preds = cnn_photoz(cnn, images, catalogue_photometry(data, val), batch_size=batch_size)
    if not preds:
        return None
    z_val = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)[val]
    out = {}
    for name, (z, z_err) in preds.items():
        fit = fit_redshift_scale(z, z_err, z_val)
        if not (np.isfinite(fit["scale"]) and fit["scale"] > 0):
            log.warning("photo-z %s: fitted z_err scale %s on val; left unscaled", name, fit["scale"])
            fit["scale"] = 1.0
        out[name] = {**fit, "fitted_on": "val"}
        log.info("photo-z %s: z_err x%.3f (val, n=%d; unscaled val coverage %.1f%%)", name, fit["scale"], fit["n"],
                 100 * fit["coverage_1sigma_unscaled"])
    return out


def scale_of(scales: dict | None, name: str = "cnn") -> float:
    """The fitted z_err factor of `name` in a `redshift_scales` result (1.0 when not fitted)."""
    fit = (scales or {}).get(name) or {}
    return float(fit.get("scale", 1.0))


def photoz_report(cnn, data, train: np.ndarray, test: np.ndarray, k: int, use_magnitude: bool, *,
                  scales: dict | None, batch_size: int = 256) -> tuple[dict, dict]:
    """(`redshift_metrics` on the test split for the CNN (with its photometry and, if hybrid, without),
    errors calibrated with `scales` from `redshift_scales`; {name: (z_pred, z_err, z_true)} for `pit_figure`)."""
    preds = cnn_photoz(cnn, RowView(data.images, test), catalogue_photometry(data, test), batch_size=batch_size)
    cal = {name: (z, z_err * np.float32(scale_of(scales, name))) for name, (z, z_err) in preds.items()}
    z, z_err = cal.get("cnn", (None, None))
    z_i, z_err_i = cal.get("cnn_images_only", (None, None))
    out = redshift_metrics(z, data.catalog, train, test, k, use_magnitude, z_err=z_err, z_images_only=z_i,
                           z_err_images_only=z_err_i)
    if scales:
        out["notes"]["z_err_scale"] = {name: fit["scale"] for name, fit in scales.items()}
    z_true = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)[test]
    return out, {name: (zp, ze, z_true) for name, (zp, ze) in cal.items()}


# ----------------------------------------------------------------------------- PIT
def pit_values(z_pred: np.ndarray, z_err: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """Probability integral transform of a Gaussian photo-z: Phi((z_true - z_pred) / z_err), finite rows.
    Uniform on [0, 1] for an honest error; U-shaped if too small, peaked if too large."""
    z_pred, z_err, z_true = (np.asarray(a, np.float64) for a in (z_pred, z_err, z_true))
    ok = np.isfinite(z_pred) & np.isfinite(z_true) & np.isfinite(z_err) & (z_err > 0)
    return ndtr((z_true[ok] - z_pred[ok]) / z_err[ok])


def pit_figure(path: str | Path, methods: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """PIT histograms (density; 1 = calibrated) of each method's (z_pred, z_err, z_true) into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    edges = np.linspace(0.0, 1.0, PIT_BINS + 1)
    for name, (z_pred, z_err, z_true) in methods.items():
        pit = pit_values(z_pred, z_err, z_true)
        cov = coverage(z_pred, z_err, z_true)["coverage_1sigma"]
        ax.hist(pit, edges, density=True, histtype="step", lw=1.5,
                label=f"{name} (n={pit.size}, {100 * cov:.1f}% within 1 sigma)")
    ax.axhline(1.0, color="k", ls=":", lw=1, label="calibrated")
    ax.set_xlabel("PIT = Phi((z_spec - z_phot) / z_err)")
    ax.set_ylabel("density")
    ax.set_title("Photo-z PIT on the test split (z_err calibrated on val)")
    ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=PIT_DPI)
    plt.close(fig)
    return path
