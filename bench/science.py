"""Science check on a survey training never saw: CNN pipeline vs every baseline, with sems.

Given a trained project root (data/processed, models/vae, models/img2spec of one run):
1. a fresh mock survey is generated with `mock.seed` != the training survey's seed (all
   other params as trained) by the project's own stage scripts, select ... prepare;
2. every prepared object is re-read from its raw cutout and stretched with the TRAINED
   image scaling (the bundle's `Predictor.preprocess_cutout`, exactly what users get);
   the fresh survey's own fitted scaling is not used;
3. the bundle predicts spectra without a redshift (`cnn`) and at the catalogue z (`cnn_given_z`),
   with the catalogue photometry for a hybrid bundle; `img2spec.metrics` scores them and the
   baselines (`img2spec.evaluate.baselines`: mean training spectrum, colour kNN fitted on the
   training survey; the trained decoder's best fit to the observed spectrum, the ceiling; the
   noiseless true spectrum) on the same pixels of the same objects;
4. lines, Dn4000, Hdelta_A and classes are measured and scored as the evaluate stage does
   (`evaluate.measurements`; the CNN's classes decided on its posterior with the bundle's class
   priors; the direct baseline from models/direct);
5. `agreement`: D, the EW(Halpha), Dn4000 and Hdelta_A bias and NMAD and the three classes'
   balanced accuracies of `cnn` and `cnn_given_z` against the committed metrics/evaluate.json
   (test split), in combined standard errors (fresh: bootstrap over objects; committed: its
   recorded sem, else the fresh one scaled to its n), agreeing within AGREEMENT_SIGMAS.
All objects of the fresh survey are test objects (none of them was seen in training).

    python bench/science.py --trained-root DIR [--n 1000] [--seed 1001] [--out science.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRESH_SEED_OFFSET = 1000
"""Default fresh seed = training mock.seed + this."""
DEFAULT_N = 1000
SOURCE_AND_PREP_STAGES = ("select", "fetch_spectra", "fetch_images", "fetch_photometry", "match", "prepare")
STAGE_TIMEOUT_S = 3600.0
BASELINE_ORDER = ("cnn", "cnn_given_z", "mean_spectrum", "knn_colour", "pca_cnn", "vae_ceiling", "noise_floor")
"""Method names as in the evaluate stage's metrics/evaluate.json."""
LABELS = {
    "cnn": "CNN pipeline (images -> VAE latents -> decoder), no redshift given",
    "cnn_given_z": "the same, decoded at the catalogue redshift",
    "mean_spectrum": "mean training spectrum x photometric norm",
    "knn_colour": "kNN in PS1 colour space",
    "pca_cnn": "same CNN on PCA coefficients (if trained)",
    "vae_ceiling": "VAE reconstruction of the observed spectrum (ceiling)",
    "noise_floor": "noiseless true spectrum (noise floor)",
}


def stage_script(root: Path, stage: str) -> Path:
    """The stage's script from dvc.yaml's `cmd` (`python pipeline/x.py`)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    if stage not in stages:
        raise KeyError(f"{root / 'dvc.yaml'}: no stage {stage!r}")
    words = str(stages[stage]["cmd"]).split()
    script = next((w for w in words if w.endswith(".py")), None)
    if script is None:
        raise ValueError(f"{root / 'dvc.yaml'}: stage {stage} cmd {stages[stage]['cmd']!r} runs no python script")
    return root / script


def fresh_params(trained_params: Path, dest: Path, n: int, seed: int) -> dict:
    """Trained params.yaml with mock.seed/n_galaxies replaced; refuses the training seed."""
    from img2spec.config import params_from_dict

    raw = yaml.safe_load(trained_params.read_text()) or {}
    old_seed = int((raw.get("mock") or {}).get("seed", 1))
    if seed == old_seed:
        raise ValueError(f"fresh seed {seed} equals the training survey's mock.seed ({trained_params})")
    raw.setdefault("mock", {}).update({"seed": int(seed), "n_galaxies": int(n)})
    params_from_dict(raw, str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


def generate_fresh(code_root: Path, ws: Path, env: dict[str, str]) -> dict[str, float]:
    """Run select ... prepare with the project's stage scripts into `ws`; seconds per stage."""
    seconds = {}
    for stage in SOURCE_AND_PREP_STAGES:
        t0 = time.perf_counter()
        with open(ws / f"{stage}.log", "wb") as log:
            res = subprocess.run([sys.executable, str(stage_script(code_root, stage)), "--params",
                                  str(ws / "params.yaml"), "--root", str(ws)], cwd=ws, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, timeout=STAGE_TIMEOUT_S)
        if res.returncode != 0:
            tail = (ws / f"{stage}.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"fresh survey: stage {stage} failed (exit {res.returncode}):\n{tail}")
        seconds[stage] = round(time.perf_counter() - t0, 1)
    return seconds


def trained_images(predictor, fresh, ws: Path) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Raw cutouts of the fresh objects stretched with the bundle's (trained) scaling.
    Returns images and (row, reason) of objects the bundle rejects (counted, not hidden)."""
    from img2spec.io.ps1_cutout import read_cutout
    from img2spec.logs import progress

    cat = fresh.catalog
    images = np.zeros((len(cat), *predictor.input_shape), np.float32)
    rejected = []
    for i, rel in enumerate(progress(cat["imagefile"].tolist(), desc="science images", unit="obj")):
        try:
            images[i] = predictor.preprocess_cutout(read_cutout(ws / rel))
        except Exception as exc:  # a bad file is reported with its reason, never dropped silently
            rejected.append((i, f"{rel}: {exc}"))
    return images, rejected


def _combined(train_data, fresh) -> SimpleNamespace:
    """Training rows then fresh rows, as one `data` for the kNN baseline (which indexes one table)."""
    import pandas as pd

    tr = train_data.indices("train")
    return SimpleNamespace(
        catalog=pd.concat([train_data.catalog.iloc[tr], fresh.catalog], ignore_index=True),
        flux=np.concatenate([np.asarray(train_data.flux[tr]), np.asarray(fresh.flux)]),
        ivar=np.concatenate([np.asarray(train_data.ivar[tr]), np.asarray(fresh.ivar)]),
    ), len(tr)


def predictions(trained_root: Path, fresh, predictor, images: np.ndarray, params) -> tuple[dict, dict]:
    """Every method's (N, P) normalised prediction for the fresh objects, plus side info: the CNN
    as users run it, without a redshift (`cnn`) and given the catalogue z (`cnn_given_z`), each
    with the fresh catalogue's photometry for a hybrid bundle, as the evaluate stage runs it."""
    from img2spec.evaluate.baselines import ceiling_spectra, knn_colour, mean_spectrum
    from img2spec.evaluate.redshift import catalogue_photometry
    from img2spec.evaluate.stage import PCA_SUBDIR
    from img2spec.io.processed import ProcessedData
    from img2spec.models.inference import load_models, predict_spectra

    train_data = ProcessedData.open(trained_root / "data" / "processed")
    tr = train_data.indices("train")
    rows = np.arange(len(fresh))
    phot = catalogue_photometry(fresh, rows)
    z = fresh.catalog["z"].to_numpy(np.float64)
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"n_train": int(len(tr)), "results": {}}
    t0 = time.perf_counter()
    pred = predictor.predict(images, photometry=phot)
    info["cnn_seconds"] = round(time.perf_counter() - t0, 2)
    info["results"]["cnn"] = pred
    info["results"]["cnn_given_z"] = predictor.predict(images, photometry=phot, z=z)
    out["cnn"], out["cnn_given_z"] = pred.flux, info["results"]["cnn_given_z"].flux
    info["cnn_sigma"] = pred.sigma
    info["cnn_sigma_method"] = predictor.sigma_method
    info["cnn_sigma_scale"] = predictor.sigma_scale  # the bundle's calibration (not applied to the other method)
    if predictor.sigma_method != "sampled":  # the alternative, to compare calibration on the same objects
        info["cnn_sigma_sampled"] = predictor.predict(images, sigma_method="sampled", photometry=phot).sigma
        info["sampled_n_samples"] = predictor.n_samples
    mean = mean_spectrum(train_data.flux[tr], train_data.ivar[tr])
    out["mean_spectrum"] = np.tile(mean, (len(fresh), 1))
    both, n_tr = _combined(train_data, fresh)
    knn_pred, info["knn"] = knn_colour(both, np.arange(n_tr), n_tr + np.arange(len(fresh)),
                                       params.evaluate.knn_neighbours,
                                       getattr(params.evaluate, "knn_use_magnitude", False), mean)
    out["knn_colour"] = knn_pred
    pca_dir = trained_root / "models" / "cnn" / PCA_SUBDIR
    if (pca_dir / "cnn.keras").exists():
        pca = load_models(pca_dir, pca_dir)
        p = predict_spectra(pca.cnn, pca.decoder, images, sigma_method="none", photometry=phot,
                            batch_size=predictor.batch_size)
        out["pca_cnn"] = p.flux
        if p.rest_flux is not None:  # measured on its rest-frame prediction, as evaluate does
            info["rest_only"] = {"pca_cnn": (p.rest_wave, p.rest_flux)}
    vae_dir = trained_root / "models" / "vae"
    ep = params.evaluate
    out["vae_ceiling"] = ceiling_spectra(vae_dir, load_models(vae_dir, trained_root / "models" / "cnn").decoder,
                                         np.asarray(fresh.flux), np.asarray(fresh.ivar), z,
                                         steps=ep.ceiling_refine_steps, learning_rate=ep.ceiling_refine_learning_rate)
    if fresh.truth_flux is not None:
        out["noise_floor"] = np.asarray(fresh.truth_flux)
    return out, info


def measurement_tables(trained_root: Path, fresh, predictor, images: np.ndarray, methods: dict, results: dict,
                       keep: np.ndarray, params, rest_only: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The evaluate stage's measurement tables of the kept fresh objects: every spectrum measured at
    the catalogue z with the observation's ivar, the CNN's on its rest-frame prediction with its
    classes decided on the posterior with the bundle's class priors, and the direct baseline.
    `rest_only`: {method: (rest wave, rest spectra)} of further methods measured in their rest frame."""
    from img2spec.evaluate.direct import add_direct_table
    from img2spec.evaluate.measurements import measure_methods
    from img2spec.evaluate.posterior import Latents, add_posterior_classes

    rows = np.flatnonzero(keep)
    obs, ivar = np.asarray(fresh.flux)[rows], np.asarray(fresh.ivar)[rows]
    z = fresh.catalog["z"].to_numpy(np.float64)[rows]
    truth = None if fresh.truth_flux is None else np.asarray(fresh.truth_flux)[rows]
    rest = {m: r.rest_flux[rows] for m, r in results.items() if r.rest_flux is not None}
    rest_wave = next((r.rest_wave for r in results.values() if r.rest_wave is not None), None)
    for m, (wave, flux) in (rest_only or {}).items():
        if rest_wave is not None and len(wave) == len(rest_wave):
            rest[m] = flux[rows]
    preds = {m: v[rows] for m, v in methods.items() if m not in rest}
    tables = measure_methods(fresh.wave, z, fresh.frame, obs, ivar, preds, truth, params.measure,
                             rest=(rest_wave, rest) if rest else None)
    latents = {m: Latents(r.latent_mu[rows], r.latent_std[rows], r.z_used[rows],
                          None if r.class_evidence is None else r.class_evidence[rows])
               for m, r in results.items() if r.rest_flux is not None}
    add_posterior_classes(tables, latents, predictor.decoder, fresh, rows, params.measure,
                          {"priors": predictor.class_priors} if predictor.class_priors else None)
    fresh.images = images  # the direct model reads the trained stretch, as the CNN did
    add_direct_table(tables, trained_root / "models" / "direct", fresh, rows, {})
    return tables


SIGMA_RATIO_PERCENTILES = (5, 50, 95)


def score(methods: dict[str, np.ndarray], fresh, keep: np.ndarray, sigma: np.ndarray | None,
          sigma_sampled: np.ndarray | None = None, sigma_scale: float = 1.0) -> dict[str, Any]:
    """metrics.summarise of D_i per method on the kept objects, ratio of each to the CNN;
    calibration of the CNN's sigma (and of the sampled sigma, with the per-pixel ratio of the
    two methods before `sigma_scale`, the bundle's calibration factor on `sigma`)."""
    from img2spec.evaluate.stage import paired_comparison
    from img2spec.metrics import calibration, deviation, summarise

    obs, ivar = np.asarray(fresh.flux)[keep], np.asarray(fresh.ivar)[keep]
    table, d = {}, {}
    for name in BASELINE_ORDER:
        if name in methods:
            d[name] = deviation(methods[name][keep], obs, ivar)
            table[name] = {"label": LABELS[name], **summarise(d[name])}
    cnn_mean = table["cnn"]["mean"]
    for row in table.values():
        row["ratio_to_cnn"] = round(row["mean"] / cnn_mean, 3) if cnn_mean else None
    out: dict[str, Any] = {"table": table, "comparison": {
        f"cnn_vs_{b}": paired_comparison(d["cnn"], d[b]) for b in ("mean_spectrum", "knn_colour", "pca_cnn") if b in d}}
    if sigma is not None:
        out["cnn_calibration"] = calibration(methods["cnn"][keep], sigma[keep], obs, ivar)
    if sigma is not None and sigma_sampled is not None:
        out["cnn_calibration_sampled"] = calibration(methods["cnn"][keep], sigma_sampled[keep], obs, ivar)
        a, b = sigma[keep] / np.float32(sigma_scale or 1.0), sigma_sampled[keep]
        ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
        pct = np.percentile(a[ok] / b[ok], SIGMA_RATIO_PERCENTILES) if ok.any() else [float("nan")] * 3
        out["sigma_ratio_to_sampled"] = {f"p{q}": round(float(v), 4) for q, v in zip(SIGMA_RATIO_PERCENTILES, pct)}
    return out


AGREEMENT_METHODS = ("cnn", "cnn_given_z")
AGREEMENT_QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a")
AGREEMENT_SCHEMES = ("sf_quiescent", "bpt", "agn")
AGREEMENT_SIGMAS = 3.0
"""A fresh figure agrees with the committed one within this many combined standard errors."""
BOOTSTRAP_DRAWS = 200
BOOTSTRAP_SEED = 0


def _bootstrap_se(figure, n: int) -> float:
    """Standard error of `figure(idx)` over objects: its std over BOOTSTRAP_DRAWS resamples."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = [figure(rng.integers(0, n, n)) for _ in range(BOOTSTRAP_DRAWS)]
    return float(np.nanstd(values, ddof=1))


def _fresh_figures(tables: dict, d: dict[str, np.ndarray]) -> dict[str, tuple]:
    """{key: (value on every fresh object, figure(idx) for the bootstrap, n objects)} of the compared figures."""
    from img2spec.evaluate.measurements import QUANTITIES, SCHEMES, class_scores, robust_difference

    ref = tables["truth"] if "truth" in tables else tables["observed"]
    out: dict[str, tuple] = {}
    for m in AGREEMENT_METHODS:
        if m in d:
            out[f"mean_deviation.{m}"] = (lambda idx, v=d[m]: float(np.nanmean(v[idx])), len(d[m]))
        for q in AGREEMENT_QUANTITIES:
            col = QUANTITIES[q]
            if m in tables and col in tables[m]:
                for stat in ("bias", "nmad"):
                    out[f"measurements.{q}.{m}.{stat}"] = (
                        lambda idx, v=tables[m][col], r=ref[col], st=stat: robust_difference(v[idx], r[idx])[st],
                        len(ref[col]))
        for scheme in AGREEMENT_SCHEMES:
            col, labels = SCHEMES[scheme]
            if m in tables:
                out[f"classes.{scheme}.{m}.balanced_accuracy"] = (
                    lambda idx, v=tables[m][col], r=ref[col], lab=labels: class_scores(r[idx], v[idx], lab)["balanced_accuracy"],
                    len(ref[col]))
    return out


def _committed(metrics: dict, key: str) -> tuple[float, float | None, int]:
    """(value, standard error if recorded, n) of a dotted `key` of metrics/evaluate.json."""
    parts = key.split(".")
    if parts[0] == "mean_deviation":
        row = metrics["mean_deviation"][parts[1]]
        return float(row["mean"]), float(row["sem"]), int(row["n"])
    node = metrics
    for k in parts[:-1]:
        node = node[k]
    return float(node[parts[-1]]), None, int(node.get("n", 0))


def agreement(tables: dict, d: dict[str, np.ndarray], committed: dict) -> dict[str, Any]:
    """Each compared figure on the fresh survey against the committed test split's: the difference in
    combined standard errors (the fresh one bootstrapped over objects; the committed one its recorded
    sem, else the fresh one scaled to the committed n), and whether it is within AGREEMENT_SIGMAS."""
    out = {}
    for key, (figure, n) in _fresh_figures(tables, d).items():
        try:
            c_value, c_se, c_n = _committed(committed, key)
        except KeyError:
            continue
        value = figure(np.arange(n))
        se = _bootstrap_se(figure, n)
        if c_se is None:
            c_se = se * np.sqrt(n / c_n) if c_n else float("nan")
        diff, total = abs(value - c_value), float(np.hypot(se, c_se))
        sigmas = 0.0 if diff == 0 else (diff / total if total > 0 else float("inf"))
        out[key] = {"fresh": value, "fresh_se": se, "committed": c_value, "committed_se": float(c_se),
                    "sigmas": sigmas, "agrees": bool(sigmas <= AGREEMENT_SIGMAS)}
    return out


def run(trained_root: Path, workdir: Path, n: int = DEFAULT_N, seed: int | None = None) -> dict[str, Any]:
    """The whole science check (see module doc); returns a JSON-able dict."""
    from img2spec.config import load_params
    from img2spec.io.processed import ProcessedData
    from img2spec.predict import Predictor

    trained_root = trained_root.resolve()
    bundle = trained_root / "models" / "img2spec"
    if not (bundle / "bundle.json").exists():
        raise FileNotFoundError(f"{bundle}: no published bundle; run the pipeline to `publish` first")
    trained = load_params(trained_root / "params.yaml")
    seed = trained.mock.seed + FRESH_SEED_OFFSET if seed is None else seed
    ws = workdir / f"fresh-seed{seed}-n{n}"
    ws.mkdir(parents=True, exist_ok=True)
    fresh_params(trained_root / "params.yaml", ws / "params.yaml", n, seed)
    code_root = trained_root if (trained_root / "src" / "img2spec").is_dir() else REPO
    env = bench_env({"PYTHONPATH": str(code_root / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}"})
    gen_seconds = generate_fresh(code_root, ws, env)

    params = load_params(ws / "params.yaml")
    fresh = ProcessedData.open(ws / "data" / "processed")
    predictor = Predictor.from_path(bundle)
    if len(predictor.wave) != len(fresh.wave) or not np.allclose(predictor.wave, fresh.wave, rtol=1e-9):
        raise ValueError(f"{ws}/data/processed wave grid differs from the bundle's ({len(fresh.wave)} vs "
                         f"{len(predictor.wave)} pixels): prepare params changed since training")
    images, rejected = trained_images(predictor, fresh, ws)
    keep = np.ones(len(fresh), bool)
    keep[[i for i, _ in rejected]] = False
    methods, info = predictions(trained_root, fresh, predictor, images, params)
    results, rest_only = info.pop("results"), info.pop("rest_only", {})
    result = score(methods, fresh, keep, info.pop("cnn_sigma"), info.pop("cnn_sigma_sampled", None),
                   info.get("cnn_sigma_scale", 1.0))
    from img2spec.evaluate.measurements import score_measurements
    from img2spec.metrics import deviation

    tables = measurement_tables(trained_root, fresh, predictor, images, methods, results, keep, params, rest_only)
    result.update(score_measurements(tables, params.measure))
    obs, ivar = np.asarray(fresh.flux)[keep], np.asarray(fresh.ivar)[keep]
    d = {m: deviation(methods[m][keep], obs, ivar) for m in AGREEMENT_METHODS if m in methods}
    committed_path = trained_root / "metrics" / "evaluate.json"
    if committed_path.exists():
        result["agreement"] = agreement(tables, d, json.loads(committed_path.read_text()))
    train_cat = ProcessedData.open(trained_root / "data" / "processed").catalog
    same = fresh.catalog.merge(train_cat[["objid", "z"]], on="objid", suffixes=("", "_train"))
    prep = json.loads((ws / "reports" / "prepare.json").read_text())
    return {
        "trained_root": str(trained_root),
        "training_seed": trained.mock.seed,
        "training_n_galaxies": trained.mock.n_galaxies,
        "fresh_seed": seed,
        "fresh_n_galaxies": n,
        "n_prepared": len(fresh),
        "prepare_dropped": prep.get("dropped_by_reason", {}),
        "n_rejected_by_bundle": len(rejected),
        "rejected": [r for _, r in rejected[:20]],
        "n_scored": int(keep.sum()),
        "shared_objid_same_z": int(np.isclose(same["z"], same["z_train"], rtol=0, atol=1e-9).sum()),
        "generation_seconds": gen_seconds,
        **info,
        **result,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained-root", type=Path, default=REPO, help="project root with a trained bundle")
    ap.add_argument("--workdir", type=Path, default=None, help="where the fresh survey goes (default: temp)")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="galaxies in the fresh survey")
    ap.add_argument("--seed", type=int, default=None, help=f"fresh mock.seed (default: training seed + {FRESH_SEED_OFFSET})")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args()
    os.environ.setdefault("IMG2SPEC_NO_PROGRESS", "1")
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="img2spec_science_"))
    result = run(args.trained_root, workdir, args.n, args.seed)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    for key, row in (result.get("agreement") or {}).items():
        print(f"{key:48s} fresh {row['fresh']:8.4f} +- {row['fresh_se']:.4f}  committed {row['committed']:8.4f} "
              f"+- {row['committed_se']:.4f}  {row['sigmas']:4.1f} se  {'agrees' if row['agrees'] else 'DIFFERS'}")


if __name__ == "__main__":
    main()
