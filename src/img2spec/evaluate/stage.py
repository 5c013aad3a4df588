"""The DVC stage `evaluate`: the metric on the test split for the CNN and every baseline.

Writes `metrics/evaluate.json` (DVC metrics), `reports/evaluate_objects.csv` (one row per
test object), `reports/plots/deviation_hist.csv` (DVC plot) and PNG figures, and logs the
summary to MLflow. All methods are scored on the same test objects and pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import tracking
from ..config import Params
from ..io.atomic import write_csv, write_json
from ..io.processed import ProcessedData
from ..metrics import calibration, deviation, fit_sigma_scale, summarise
from ..paths import Paths
from .baselines import ceiling_spectra, knn_colour, mean_spectrum
from .direct import add_direct_table
from .figures import examples_figure, histogram_figure, trend_figure
from .measure_figures import measurements_figure
from .measurements import flat_metrics, measure_methods, score_measurements
from .posterior import Latents, add_posterior_classes, fit_val_priors
from .regions import region_summaries
from .rows import RowView, load_rows
from .redshift import catalogue_photometry, photoz_report, pit_figure, redshift_scales, scale_of

log = logging.getLogger(__name__)

PCA_SUBDIR = "pca"


def paired_comparison(d_model: np.ndarray, d_base: np.ndarray) -> dict:
    """Mean improvement (baseline - model) over objects both scored, with its paired sem."""
    ok = np.isfinite(d_model) & np.isfinite(d_base)
    diff = d_base[ok] - d_model[ok]
    if diff.size < 2:
        return {"improvement": float("nan"), "sem": float("nan"), "significant": False, "n": int(diff.size)}
    sem = float(diff.std(ddof=1) / np.sqrt(diff.size))
    imp = float(diff.mean())
    return {"improvement": imp, "sem": sem, "significant": bool(imp > sem), "n": int(diff.size)}


def _fit_sigma_scale(models, data, ep, z_scales: dict | None = None, *, given_z: bool = False,
                     refine=None) -> dict | None:
    """`metrics.fit_sigma_scale` of the CNN's sigma on the val split (None without val objects):
    without a redshift (the spectrum carried through the photo-z's uncertainty) or, `given_z`, decoded
    at the catalogue z (a rest-frame decoder's sigma then holds no redshift term: its own factor)."""
    from ..models.inference import predict_spectra

    val = data.indices("val")
    if len(val) == 0:
        log.warning("evaluate.calibrate_sigma: the val split is empty; sigma is left unscaled")
        return None
    z = data.catalog["z"].to_numpy(np.float64)[val] if given_z else None
    pred = predict_spectra(models.cnn, models.decoder, RowView(data.images, val), n_samples=ep.n_samples,
                           batch_size=ep.batch_size, seed=ep.seed, sigma_method=ep.sigma_method,
                           photometry=catalogue_photometry(data, val), z_err_scale=scale_of(z_scales), z=z,
                           refine=refine)
    fit = fit_sigma_scale(pred.flux, pred.sigma, load_rows(data.flux, val), load_rows(data.ivar, val),
                          levels=ep.calibration_levels)
    fit.update(fitted_on="val", n_objects=int(len(val)), sigma_method=ep.sigma_method,
               redshift="catalogue" if given_z else "predicted")
    if not np.isfinite(fit["scale"]) or fit["scale"] <= 0:
        log.warning("evaluate.calibrate_sigma: fitted scale %s (observation noise alone covers %.1f%% of val "
                    "pixels); sigma is left unscaled", fit["scale"], 100 * fit["floor_coverage"])
        return None
    log.info("sigma calibration (%s z): x%.3f (fitted on %d val objects at %s sigma: %s)", fit["redshift"], fit["scale"],
             len(val), "/".join(f"{k:g}" for k in fit["levels"]), ", ".join(f"{c:.3f}" for c in fit["fitted_coverage"]))
    return fit


def evaluate_stage(params: Params, paths: Paths) -> dict:
    """The evaluate stage inside its MLflow run (opened before the work, so it spans it)."""
    inputs = [str(p.relative_to(paths.root)) if p.is_relative_to(paths.root) else str(p)
              for p in (paths.processed, paths.vae_dir, paths.cnn_dir)]
    with tracking.start_run("evaluate", params, root=paths.root, inputs=inputs):
        return _evaluate(params, paths)


@dataclass
class Predictions:
    """Every method's test spectra (observed grid), their sigmas, rest-frame spectra and fits."""

    preds: dict[str, np.ndarray]
    sigmas: dict[str, np.ndarray]
    rest: dict[str, np.ndarray]
    rest_wave: np.ndarray | None
    notes: dict[str, str]
    sigma_fits: dict[str, dict]
    z_scales: dict | None
    knn_info: dict
    latents: dict[str, Latents]
    """The CNN modes' latent posteriors (rest-frame decoders): their classes are drawn from them."""
    fusion: Any
    """The CNN's fusion with the direct model (`models.fusion.Fusion`), None: not fused."""


def _cnn_modes(models, data, test, ep, preds, sigmas, rest, latents,
               refine=None) -> tuple[dict, dict | None, np.ndarray | None]:
    """The CNN as users run it: `cnn` (no z given: its own redshift and uncertainty) and
    `cnn_given_z` (decoded at the catalogue z), each with its sigma factor fitted on val; `refine`:
    the fusion with the direct model (`models.fusion`), as predict and survey run it."""
    from ..models.inference import predict_spectra

    z_scales = redshift_scales(models.cnn, data, batch_size=ep.batch_size)  # photo-z error factor (val)
    phot = catalogue_photometry(data, test)  # a hybrid CNN's second input (images-only CNNs ignore it)
    images = RowView(data.images, test)
    z_true = data.catalog["z"].to_numpy(np.float64)[test]
    fits, rest_wave = {}, None
    for name, z in (("cnn", None), ("cnn_given_z", z_true)):
        fit = _fit_sigma_scale(models, data, ep, z_scales, given_z=z is not None,
                               refine=refine) if ep.calibrate_sigma else None
        pred = predict_spectra(models.cnn, models.decoder, images, n_samples=ep.n_samples, batch_size=ep.batch_size,
                               seed=ep.seed, sigma_method=ep.sigma_method, sigma_scale=fit["scale"] if fit else 1.0,
                               photometry=phot, z_err_scale=scale_of(z_scales), z=z, refine=refine)
        preds[name], sigmas[name] = pred.flux, pred.sigma
        if pred.rest_flux is not None:
            rest[name], rest_wave = pred.rest_flux, pred.rest_wave
            latents[name] = Latents(pred.latent_mu, pred.latent_std, pred.z_used, pred.class_evidence)
        if fit:
            fits[name] = fit
    return fits, z_scales, rest_wave


def _predict_all(params: Params, paths: Paths, data: ProcessedData, obs, ivar) -> Predictions:
    """The CNN in both modes and every baseline on the test split."""
    from ..models.inference import load_models, predict_spectra

    ep = params.evaluate
    train, test = data.indices("train"), data.indices("test")
    preds: dict[str, np.ndarray] = {}
    sigmas: dict[str, np.ndarray] = {}
    rest: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    latents: dict[str, Latents] = {}
    models = load_models(paths.vae_dir, paths.cnn_dir)
    fusion = _fusion(params, paths, models.decoder, notes)
    fits, z_scales, rest_wave = _cnn_modes(models, data, test, ep, preds, sigmas, rest, latents, refine=fusion)

    fallback = mean_spectrum(data.flux[train], data.ivar[train])
    preds["mean_spectrum"] = np.tile(fallback, (len(test), 1))
    preds["knn_colour"], knn_info = knn_colour(data, train, test, ep.knn_neighbours, ep.knn_use_magnitude, fallback)

    pca_dir = paths.cnn_dir / PCA_SUBDIR
    if (pca_dir / "cnn.keras").exists():
        pca = load_models(pca_dir, pca_dir)
        p = predict_spectra(pca.cnn, pca.decoder, RowView(data.images, test), n_samples=ep.n_samples,
                            batch_size=ep.batch_size, seed=ep.seed, sigma_method=ep.sigma_method,
                            photometry=catalogue_photometry(data, test), z_err_scale=scale_of(z_scales))
        preds["pca_cnn"], sigmas["pca_cnn"] = p.flux, p.sigma
        if p.rest_flux is not None and rest_wave is not None and len(p.rest_wave) == len(rest_wave):
            rest["pca_cnn"] = p.rest_flux
    else:
        notes["pca_cnn"] = f"{pca_dir}: not trained (cnn.train_pca: false)"

    preds["vae_ceiling"] = ceiling_spectra(paths.vae_dir, models.decoder, obs, ivar, data.catalog["z"].to_numpy()[test],
                                           steps=ep.ceiling_refine_steps, learning_rate=ep.ceiling_refine_learning_rate)
    if data.truth_flux is not None:
        preds["noise_floor"] = load_rows(data.truth_flux, test)
    else:
        notes["noise_floor"] = "no truth_flux (real data)"
    return Predictions(preds, sigmas, rest, rest_wave, notes, fits, z_scales, knn_info, latents, fusion)


def _fusion(params: Params, paths: Paths, decoder, notes: dict[str, str]):
    """The CNN modes' `models.fusion.Fusion` (None, noted: fusion off, no direct model or an
    observed-frame decoder)."""
    from ..models.direct import direct_dir, load_fusion
    from ..models.inference import rest_decoder

    if not params.fusion.enabled:
        notes["fusion"] = "fusion.enabled: false"
        return None
    if rest_decoder(decoder) is None:
        notes["fusion"] = "an observed-frame decoder (vae.frame: observed) has no rest-frame measurements to fuse"
        return None
    fusion = load_fusion(direct_dir(paths), params.fusion, params.measure)
    if fusion is None:
        notes["fusion"] = f"{direct_dir(paths)}: no trained direct model (cnn.train_direct: false)"
    return fusion


def _calibration_section(pr: Predictions, obs, ivar, levels) -> tuple[dict, dict]:
    """`calibration` of every method with a sigma, and the `sigma_scale` fits with what the
    unscaled sigma would have given on the same test pixels."""
    cal = {name: calibration(pr.preds[name], pr.sigmas[name], obs, ivar, levels) for name in pr.sigmas}
    for name, fit in pr.sigma_fits.items():
        raw = pr.sigmas[name] / np.float32(fit["scale"])
        fit["test_calibration_unscaled"] = calibration(pr.preds[name], raw, obs, ivar, levels)
    return cal, pr.sigma_fits


def _evaluate(params: Params, paths: Paths) -> dict:
    from ..models.direct import direct_dir
    from ..models.inference import load_models

    ep = params.evaluate
    data = ProcessedData.open(paths.processed)
    cat = data.catalog
    train, test = data.indices("train"), data.indices("test")
    if len(test) == 0:
        raise ValueError(f"{paths.processed}: the test split is empty; nothing to evaluate")
    obs, ivar = load_rows(data.flux, test), load_rows(data.ivar, test)
    pr = _predict_all(params, paths, data, obs, ivar)
    preds = pr.preds

    d = {name: deviation(pred, obs, ivar) for name, pred in preds.items()}
    result: dict = {"mean_deviation": {name: summarise(v) for name, v in d.items()}}
    # Per rest-frame region: the same objects, only the region's pixels.
    result["regions"] = region_summaries(data, test, ep.regions, preds, obs, ivar)
    if "galaxy_type" in cat:
        types = cat["galaxy_type"].to_numpy()[test].astype(str)
        result["galaxy_type"] = {t: {name: summarise(v[types == t]) for name, v in d.items()}
                                 for t in sorted(set(types))}
    result["calibration"], fits = _calibration_section(pr, obs, ivar, ep.calibration_levels)
    if fits:
        result["sigma_scale"] = fits
    models = load_models(paths.vae_dir, paths.cnn_dir)
    result["redshift"], photoz = photoz_report(models.cnn, data, train, test, ep.knn_neighbours,
                                               ep.knn_use_magnitude, scales=pr.z_scales, batch_size=ep.batch_size)
    if pr.z_scales:
        result["redshift_scale"] = pr.z_scales  # the bundle's inference.z_err_scale
    result["comparison"] = {f"cnn_vs_{b}": paired_comparison(d["cnn"], d[b])
                            for b in ("cnn_given_z", "knn_colour", "mean_spectrum", "pca_cnn") if b in d}
    result["notes"] = {"knn_colour": pr.knn_info, "skipped_methods": pr.notes, "n_test": int(len(test)),
                       "metric": "D_i = mean over good pixels of |pred - obs| sqrt(ivar)",
                       "modes": {"cnn": "no redshift given: the rest-frame prediction carried through the CNN's "
                                        "own redshift and its calibrated uncertainty; lines measured on the "
                                        "rest-frame prediction",
                                 "cnn_given_z": "the catalogue redshift given: decoded and measured at it"}}
    if pr.fusion is not None:
        f = pr.fusion
        result["notes"]["fusion"] = {"quantities": list(f.quantities), "weight": f.weight, "iterations": f.iterations,
                                     "classes": f.classes,
                                     "what": "both CNN modes' latents pulled toward the direct model's predictions "
                                             "of these measurements (models/fusion.py)"
                                             + ("; their class draws weighed by its class probabilities "
                                                "(models/class_draws.py)" if f.classes else "")}
    # Lines, Dn4000, Hdelta_A and classes of every spectrum against the truth (evaluate/measurements.py).
    rest = (pr.rest_wave, {k: v for k, v in pr.rest.items() if k != "cnn_given_z"}) if pr.rest else None
    m_tables = measure_methods(data.wave, cat["z"].to_numpy()[test], data.frame, obs, ivar,
                               preds, preds.get("noise_floor"), params.measure, rest=rest)
    # The CNN's classes decided on draws of its posterior, with class priors fitted on val (models/class_draws).
    if pr.latents:
        priors = fit_val_priors(models, data, params.measure, catalogue_photometry(data, data.indices("val")),
                                batch_size=ep.batch_size, refine=pr.fusion)
        add_posterior_classes(m_tables, pr.latents, models.decoder, data, test, params.measure, priors)
        if priors:
            result["class_priors"] = priors  # the bundle's inference.class_priors
    # The same CNN trained on the measurements themselves (models/direct; absent: noted, skipped).
    add_direct_table(m_tables, direct_dir(paths), data, test, pr.notes, batch_size=ep.batch_size)
    scored = score_measurements(m_tables, params.measure)
    result["measurements"], result["classes"] = scored["measurements"], scored["classes"]
    result["notes"]["measurements"] = scored["notes"]
    write_json(paths.metrics / "evaluate.json", result)
    write_json(paths.metrics / "summary.json", tracking.deviation_metrics(result["mean_deviation"]))  # dvc metrics
    _write_outputs(paths, data, test, obs, ivar, pr, d, m_tables, scored, photoz, ep)
    _log_to_mlflow(paths, result)
    return result


def _write_outputs(paths: Paths, data, test, obs, ivar, pr: Predictions, d, m_tables, scored, photoz, ep) -> None:
    _write_tables(paths, data.catalog, test, d, ep.hist_bins)
    _write_figures(paths, data, test, obs, ivar, pr.preds, pr.sigmas, d, RowView(data.images, test),
                   ep.n_example_plots, ep.hist_bins)
    measurements_figure(paths.figures / "measurements.png", m_tables, scored["notes"]["reference"])
    if photoz:
        pit_figure(paths.figures / "photoz_pit.png", photoz)


def _log_to_mlflow(paths: Paths, result: dict) -> None:
    import mlflow

    # The stage's MLflow run is active (evaluate_stage); the headline metrics also go on the pipeline row.
    tracking.log_metrics(tracking.deviation_metrics(result["mean_deviation"]))
    mlflow.log_metrics({f"photoz.{name}.{k}": float(v) for name, m in result["redshift"].items() if name != "notes"
                        for k, v in m.items() if isinstance(v, (int, float)) and k != "n" and np.isfinite(v)})
    mlflow.log_metrics(flat_metrics(result))
    for fig in sorted(paths.figures.glob("*.png")):
        mlflow.log_artifact(str(fig), artifact_path="figures")
    mlflow.log_artifact(str(paths.metrics / "evaluate.json"))
    for name, s in result["mean_deviation"].items():
        log.info("%-14s mean D = %.3f +- %.3f (median %.3f, n=%d)", name, s["mean"], s["sem"], s["median"], s["n"])


def _write_tables(paths: Paths, cat: pd.DataFrame, test: np.ndarray, d: dict[str, np.ndarray], n_bins: int) -> None:
    cols = [c for c in ("objid", "split", "z", "mag_r", "galaxy_type") if c in cat]
    table = cat.iloc[test][cols].reset_index(drop=True)
    for name, v in d.items():
        table[f"D_{name}"] = v
    write_csv(paths.reports / "evaluate_objects.csv", table)
    finite = np.concatenate([v[np.isfinite(v)] for v in d.values()])
    hi = float(np.percentile(finite, 99)) if finite.size else 1.0
    edges = np.linspace(0.0, max(hi, 1e-6), n_bins + 1)
    hist = pd.DataFrame({"deviation": 0.5 * (edges[1:] + edges[:-1])})
    hist["count"] = np.histogram(d["cnn"][np.isfinite(d["cnn"])], edges)[0]
    for name, v in d.items():
        if name != "cnn":
            hist[f"count_{name}"] = np.histogram(v[np.isfinite(v)], edges)[0]
    write_csv(paths.reports / "plots" / "deviation_hist.csv", hist)


def _write_figures(paths: Paths, data, test, obs, ivar, preds, sigmas, d, images, n_examples: int, n_bins: int) -> None:
    figs = paths.figures
    if figs.exists():
        for old in figs.glob("*.png"):
            old.unlink()
    figs.mkdir(parents=True, exist_ok=True)
    cat = data.catalog.iloc[test]
    dc = d["cnn"]
    ok = np.flatnonzero(np.isfinite(dc))
    if ok.size and n_examples:
        order = ok[np.argsort(dc[ok], kind="stable")]
        picks = {"best": order[:n_examples], "worst": order[::-1][:n_examples]}
        mid = len(order) // 2
        picks["typical"] = order[max(mid - n_examples // 2, 0): max(mid - n_examples // 2, 0) + n_examples]
        for label, rows_idx in picks.items():
            rows = [{"label": f"{label}: objid {int(cat['objid'].iloc[i])}, z={float(cat['z'].iloc[i]):.3f}",
                     "image": images[i:i + 1][0], "obs": obs[i], "ivar": ivar[i], "pred": preds["cnn"][i],
                     "sigma": sigmas["cnn"][i], "knn": preds["knn_colour"][i], "d_cnn": dc[i],
                     "d_knn": d["knn_colour"][i]} for i in rows_idx]
            examples_figure(figs / f"examples_{label}.png", data.wave, rows)
    finite = np.concatenate([v[np.isfinite(v)] for v in d.values()])
    hi = float(np.percentile(finite, 99)) if finite.size else 1.0
    histogram_figure(figs / "deviation_hist.png", d, np.linspace(0, max(hi, 1e-6), n_bins + 1))
    x = {"z": cat["z"].to_numpy(float)}
    if "mag_r" in cat:
        x = {"r magnitude": cat["mag_r"].to_numpy(float), **x}
    trend_figure(figs / "deviation_vs_mag_z.png", x,
                 {k: d[k] for k in ("cnn", "knn_colour", "vae_ceiling") if k in d})
