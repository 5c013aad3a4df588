"""Photo-z and spectrum D of the CNN against its training-set size.

Anchor: Pasquet et al. 2019 (A&A 621, A26), a CNN on 64x64 SDSS ugriz cutouts, reaches
sigma_MAD < 0.01 with >= 100k training galaxies. This script says where this model stands
and how it scales with the number of training galaxies.

Given a trained project root (data/processed, data/latents, models/vae, params.yaml), for
each training fraction f (default `DEFAULT_FRACTIONS`) of the TRAIN split:
1. n = round(f x N_train) train objects: the first n of one seeded permutation of the train
   split (so smaller subsets are nested in larger ones and f = 1 is the whole split, in
   catalogue order, i.e. exactly what the train_cnn stage trains on);
2. the CNN is trained by the pipeline's own `img2spec.models.train.train_cnn` with the
   params.yaml `cnn` section (same epochs, patience, seed, loss through the trained decoder
   models/vae/decoder.keras), early stopping on the full val split as in the pipeline;
3. on the TEST split (only evaluated, never trained or tuned on): the CNN's photo-z (a hybrid
   CNN, `cnn.photometry`, twice: with its catalogue photometry and, as `cnn_images_only`, the same
   network with the photometry withheld)
   (`img2spec.evaluate.redshift.photoz_metrics`: sigma_NMAD, bias, outlier fraction), the
   colour-kNN photo-z fitted on the same n train objects (`knn_photoz`), and the CNN's
   spectrum D_i through the decoder (`predict_spectra` + `img2spec.metrics.deviation`,
   `summarise`), as the evaluate stage computes them.
Held fixed at every fraction: the VAE (its latents and decoder) and the image stretch, both
fitted on the full train split. Only the CNN and the kNN see the subset.

A least-squares power law sigma_NMAD = A n^s over the fractions gives the slope s and the
n_train at which the CNN would reach sigma_NMAD = 0.01: an EXTRAPOLATION beyond the measured
sizes, not a measurement. sigma_NMAD errors are bootstrap standard deviations over the test
objects (the test set's finite size, not the training noise).

    python bench/bench_photoz.py                                  # root: this repo -> reports/photoz_scaling.json
    python bench/bench_photoz.py --root DIR --out reports/photoz_scaling.json
    python bench/bench_photoz.py --fractions 0.5 1.0 --epochs 2   # smoke run (figures not comparable)

Progress goes to stderr, one line per fraction; the JSON (written atomically after every
fraction, `complete: false` until the last) is the result. CPU time is about
sum(fractions) x one train_cnn stage (early stopping makes small subsets cheaper per epoch
but not necessarily in epochs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import parse_override, set_dotted  # noqa: E402

from img2spec.io.processed import ProcessedData  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
"""Fractions of the train split (factors of 2 up to the whole split: ~1,000 / 2,000 / 4,000 galaxies on the mock)."""
SUBSAMPLE_SEED = 0
"""Seed of the train-split permutation the nested subsets are cut from."""
TARGET_SIGMA_NMAD = 0.01
"""The anchor's sigma_MAD (Pasquet et al. 2019) the power law is extrapolated to."""
MAX_LOG10_PROJECTION = 12.0
"""A projected n_train above 10^this is reported as no projection (a nearly flat power law)."""
BOOTSTRAP_SAMPLES = 200
"""Test-set bootstrap resamples for the sigma_NMAD error."""
BOOTSTRAP_SEED = 0
MIN_TRAIN = 2
"""Smallest subset trained (a kNN and a train mean/std need at least two objects)."""
PREDICT_BATCH = 256
"""Test objects per forward pass (memory bound only; results do not depend on it)."""
ANCHOR = ("Pasquet et al. 2019 (A&A 621, A26): a CNN on 64x64 SDSS ugriz cutouts reaches sigma_MAD < 0.01 "
          "with >= 100k training galaxies (their sigma_MAD is 1.4826 x MAD of "
          "dz/(1+z), the sigma_NMAD here). Not like for like: this model sees PS1 grizy cutouts (mock survey "
          "unless data.source: sdss), average-pooled by cnn.input_pool, and predicts spectra as well.")
EXTRAPOLATION_NOTE = ("n_train_at_target is an extrapolation of a power law fitted to the measured sizes, "
                      "not a measurement; it assumes the slope holds far beyond them.")


@dataclass
class TrainSubset(ProcessedData):
    """The processed data with its train split replaced by `train_rows` (val and test as they
    are): what `train_cnn`, which reads `data.indices("train")`, then trains on."""

    train_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def indices(self, split: str) -> np.ndarray:
        if split == "train":
            return self.train_rows
        return super().indices(split)


def nested_subsets(train: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Per fraction, the first round(f x len(train)) of one seeded permutation, sorted (catalogue
    order, so fraction 1 is exactly `train`); smaller subsets are inside larger ones."""
    order = np.random.default_rng(seed).permutation(np.asarray(train))
    out = []
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"training fraction {f} is not in (0, 1]")
        n = int(round(f * len(train)))
        if n < MIN_TRAIN:
            raise ValueError(f"fraction {f} of {len(train)} train objects is {n} < {MIN_TRAIN}")
        out.append(np.sort(order[:n]))
    return out


def power_law_fit(n: Sequence[float], sigma: Sequence[float], target: float = TARGET_SIGMA_NMAD) -> dict[str, Any]:
    """Least squares of log10 sigma = log10 A + s log10 n over the finite positive points, and
    n at which A n^s = target (None unless s < 0; an extrapolation: see EXTRAPOLATION_NOTE)."""
    n_arr, s_arr = np.asarray(n, np.float64), np.asarray(sigma, np.float64)
    ok = np.isfinite(n_arr) & np.isfinite(s_arr) & (n_arr > 0) & (s_arr > 0)
    out: dict[str, Any] = {"target_sigma_nmad": target, "n_points": int(ok.sum()), "slope": None,
                           "slope_err": None, "log10_amplitude": None, "n_train_at_target": None,
                           "note": EXTRAPOLATION_NOTE}
    x, y = np.log10(n_arr[ok]), np.log10(s_arr[ok])
    if ok.sum() < 2 or np.ptp(x) == 0:
        out["note"] = "fewer than two distinct sizes with a finite sigma_NMAD: no fit"
        return out
    from scipy.stats import linregress

    fit = linregress(x, y)
    slope, icpt = float(fit.slope), float(fit.intercept)
    # Two points fit exactly: no residual to estimate the slope's error from.
    out.update(slope=slope, log10_amplitude=icpt,
               slope_err=float(fit.stderr) if ok.sum() > 2 and math.isfinite(fit.stderr) else None)
    log_n = (math.log10(target) - icpt) / slope if slope < 0 else math.inf
    if log_n > MAX_LOG10_PROJECTION:  # a nearly flat slope: beyond any sample (and float range)
        out["note"] = f"slope {slope:.3f}: sigma_NMAD barely falls with n here; no projection"
    elif slope < 0:
        out["n_train_at_target"] = float(10 ** log_n)
        out["already_below_target_at"] = (int(n_arr[ok][s_arr[ok] <= target].min())
                                          if (s_arr[ok] <= target).any() else None)
    if slope >= 0:
        out["note"] = f"slope {slope:.3f} >= 0: sigma_NMAD does not fall with n here; no projection"
    return out


def with_bootstrap(z_pred: np.ndarray, z_true: np.ndarray, seed: int = BOOTSTRAP_SEED,
                   samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
    """`photoz_metrics` plus `sigma_nmad_err`, the std of sigma_NMAD over test-set bootstrap resamples."""
    from img2spec.evaluate.redshift import photoz_metrics

    m = photoz_metrics(z_pred, z_true)
    rng = np.random.default_rng(seed)
    n = len(z_true)
    boot = [photoz_metrics(z_pred[i], z_true[i])["sigma_nmad"] for i in (rng.integers(0, n, n) for _ in range(samples))]
    boot = np.asarray(boot, np.float64)
    m["sigma_nmad_err"] = float(np.nanstd(boot, ddof=1)) if np.isfinite(boot).sum() > 1 else float("nan")
    return m


def load_params_with(params_file: Path, overrides: dict[str, Any]):
    """params.yaml with dotted overrides applied, validated by the project's config."""
    from img2spec.config import params_from_dict

    raw = yaml.safe_load(params_file.read_text()) or {}
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return params_from_dict(raw, f"{params_file} + {overrides}" if overrides else str(params_file))


def evaluate_test(cnn, decoder, data: ProcessedData, test: np.ndarray,
                  photometry: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(predicted z or None, D_i) of the test objects, predicted as the evaluate stage does (the
    point prediction decoder(latent mean) and the CNN's redshift head; no sigma is needed).
    `photometry`: the test objects' catalogue magnitudes for a hybrid CNN (None: images alone)."""
    from img2spec.metrics import deviation
    from img2spec.models.inference import predict_spectra

    zs, ds = [], []
    for s in range(0, len(test), PREDICT_BATCH):
        rows = test[s:s + PREDICT_BATCH]
        phot = None if photometry is None else photometry[s:s + PREDICT_BATCH]
        pred = predict_spectra(cnn, decoder, np.asarray(data.images[rows]), batch_size=PREDICT_BATCH,
                               sigma_method="none", photometry=phot)
        ds.append(deviation(pred.flux, np.asarray(data.flux[rows]), np.asarray(data.ivar[rows])))
        if pred.z is not None:
            zs.append(pred.z)
    return (np.concatenate(zs) if zs else None), np.concatenate(ds)


def pipeline_reference(root: Path) -> dict[str, Any] | None:
    """The evaluate stage's own CNN figures (metrics/evaluate.json), which the fraction-1 row should
    reproduce (same data, params and seed; deterministic ops) unless that file is stale."""
    import json

    path = root / "metrics" / "evaluate.json"
    if not path.exists():
        return None
    ev = json.loads(path.read_text())
    return {"file": str(path), "cnn_photoz": (ev.get("redshift") or {}).get("cnn"),
            "knn_colour_photoz": (ev.get("redshift") or {}).get("knn_colour"),
            "cnn_mean_deviation": (ev.get("mean_deviation") or {}).get("cnn")}


def run(root: Path, params_file: Path, fractions: Sequence[float], seed: int, overrides: dict[str, Any],
        out: Path | None, command: str = "") -> dict[str, Any]:
    """Train and score one CNN per fraction; the report (also written to `out` after every row)."""
    import keras

    from img2spec.evaluate.redshift import REDSHIFT_COLUMN, catalogue_photometry, knn_photoz
    from img2spec.models.cnn import uses_photometry
    from img2spec.io.atomic import write_json
    from img2spec.metrics import summarise
    from img2spec.models.latents import load_latents
    from img2spec.models.train import train_cnn
    from img2spec.paths import Paths

    t0 = time.perf_counter()
    params = load_params_with(params_file, overrides)
    paths = Paths(root)
    full = ProcessedData.open(paths.processed)
    train, val, test = full.indices("train"), full.indices("val"), full.indices("test")
    if len(test) == 0:
        raise ValueError(f"{paths.processed}: the test split is empty; nothing to evaluate")
    latents = load_latents(paths.latents)
    # The decoder the train_cnn stage trains through and the evaluate stage scores with.
    decoder = keras.saving.load_model(paths.vae_dir / "decoder.keras", compile=False)
    z_true = full.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)[test]
    ep = params.evaluate
    subsets = nested_subsets(train, fractions, seed)
    report: dict[str, Any] = {
        "anchor": ANCHOR, "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "root": str(root), "params_file": str(params_file), "overrides": overrides,
        "fractions": [float(f) for f in fractions], "subsample_seed": seed,
        "n_train_full": int(len(train)), "n_val": int(len(val)), "n_test": int(len(test)),
        "cnn_params": params.cnn.model_dump(mode="json"),
        "knn": {"k": ep.knn_neighbours, "use_magnitude": ep.knn_use_magnitude},
        "held_fixed": "VAE latents/decoder and image stretch (fitted on the full train split); val split "
                      "(early stopping) and test split (scored) are the full splits",
        "metrics": "photo-z: img2spec.evaluate.redshift.photoz_metrics (sigma_nmad_err: test bootstrap std); "
                   "D_i: img2spec.metrics.deviation of the point prediction, summarise (mean +- sem)",
        "rows": [], "complete": False,
    }
    for k, (f, rows) in enumerate(zip(fractions, subsets), 1):
        print(f"photoz: [{k}/{len(fractions)}] fraction {f:g}: training the CNN on {len(rows)} of "
              f"{len(train)} train galaxies ({params.cnn.epochs} epochs max)", file=sys.stderr, flush=True)
        data = TrainSubset(paths.processed, train_rows=rows)
        res = train_cnn(params.cnn, data, latents, decoder, name=f"cnn_f{f:g}")
        hybrid = uses_photometry(res.model)
        z_cnn, d = evaluate_test(res.model, decoder, data, test, catalogue_photometry(full, test) if hybrid else None)
        z_images = evaluate_test(res.model, decoder, data, test)[0] if hybrid else None
        z_knn, knn_info = knn_photoz(data.catalog, rows, test, ep.knn_neighbours, ep.knn_use_magnitude)
        dsum = summarise(d)
        row = {"fraction": float(f), "n_train": int(len(rows)),
               "cnn": with_bootstrap(z_cnn, z_true) if z_cnn is not None else None,
               "cnn_images_only": with_bootstrap(z_images, z_true) if z_images is not None else None,
               "knn_colour": {**with_bootstrap(z_knn, z_true), "n_no_colours": knn_info["n_no_colours"]},
               "cnn_mean_d": dsum["mean"], "cnn_sem_d": dsum["sem"], "cnn_median_d": dsum["median"],
               "cnn_d_n": dsum["n"], "train_seconds": round(res.seconds, 1),
               "epochs_run": res.info["epochs_run"], "best_val_loss": res.best_val_loss}
        report["rows"].append(row)
        cnn_txt = (f"CNN sigma_NMAD {row['cnn']['sigma_nmad']:.4f} +- {row['cnn']['sigma_nmad_err']:.4f}, "
                   f"outliers {100 * row['cnn']['outlier_fraction']:.1f}%" if row["cnn"] else "CNN: no redshift head")
        if row["cnn_images_only"]:
            cnn_txt += f" (images only {row['cnn_images_only']['sigma_nmad']:.4f})"
        print(f"photoz: fraction {f:g} (n_train {len(rows)}): {cnn_txt}; kNN sigma_NMAD "
              f"{row['knn_colour']['sigma_nmad']:.4f}; CNN D {dsum['mean']:.3f} +- {dsum['sem']:.3f}; "
              f"{res.info['epochs_run']} epochs in {res.seconds:.0f} s", file=sys.stderr, flush=True)
        if out is not None:
            write_json(out, report)
    n = [r["n_train"] for r in report["rows"]]
    report["fit"] = {
        "cnn": power_law_fit(n, [r["cnn"]["sigma_nmad"] if r["cnn"] else float("nan") for r in report["rows"]]),
        "cnn_images_only": power_law_fit(n, [(r.get("cnn_images_only") or {}).get("sigma_nmad", float("nan"))
                                             for r in report["rows"]]),
        "knn_colour": power_law_fit(n, [r["knn_colour"]["sigma_nmad"] for r in report["rows"]]),
    }
    report["pipeline_reference"] = pipeline_reference(root)
    report["complete"] = True
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        write_json(out, report)
    fit = report["fit"]["cnn"]
    if fit["slope"] is not None:
        proj = fit["n_train_at_target"]
        print(f"photoz: CNN sigma_NMAD ~ n^{fit['slope']:.2f}; sigma_NMAD {TARGET_SIGMA_NMAD} projected at "
              f"n_train ~ {proj:,.0f} (extrapolation)" if proj else f"photoz: {fit['note']}", file=sys.stderr, flush=True)
    return report


def _f(x: Any, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def markdown_rows(r: dict[str, Any]) -> list[str]:
    """README lines of the photo-z scaling section (used by run_all.markdown)."""
    lines = [f"Photo-z and spectrum D vs CNN training size (`bench/bench_photoz.py`, {r['n_test']} test galaxies; "
             f"train subsets of {r['n_train_full']}, VAE fixed; sigma_NMAD +- test bootstrap std):", "",
             "| n_train | CNN sigma_NMAD | CNN bias | CNN outliers | images-only sigma_NMAD | kNN sigma_NMAD | "
             "kNN outliers | CNN mean D ± sem | train s (epochs) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r.get("rows", []):
        c, k, i = row.get("cnn") or {}, row["knn_colour"], row.get("cnn_images_only") or {}
        lines.append(f"| {row['n_train']} | {_f(c.get('sigma_nmad'), '{:.4f}')} ± {_f(c.get('sigma_nmad_err'), '{:.4f}')} | "
                     f"{_f(c.get('bias'), '{:+.4f}')} | {_f(c.get('outlier_fraction'), '{:.1%}')} | "
                     f"{_f(i.get('sigma_nmad'), '{:.4f}')} | "
                     f"{_f(k['sigma_nmad'], '{:.4f}')} | {_f(k['outlier_fraction'], '{:.1%}')} | "
                     f"{_f(row['cnn_mean_d'], '{:.3f}')} ± {_f(row['cnn_sem_d'], '{:.3f}')} | "
                     f"{row['train_seconds']:.0f} ({row['epochs_run']}) |")
    fit = (r.get("fit") or {}).get("cnn") or {}
    if fit.get("slope") is not None:
        proj = fit.get("n_train_at_target")
        lines.append(f"\nCNN sigma_NMAD ~ n_train^{fit['slope']:.2f}"
                     + (f" ± {fit['slope_err']:.2f}" if fit.get("slope_err") is not None else "")
                     + (f"; extrapolated (not measured), sigma_NMAD = {fit['target_sigma_nmad']} would need "
                        f"n_train ~ {proj:,.0f}." if proj else f"; {fit['note']}."))
    ref = r.get("pipeline_reference") or {}
    if ref.get("cnn_photoz") and ref.get("cnn_mean_deviation"):
        lines.append(f"\nThe pipeline's own evaluate stage on the same test split (`metrics/evaluate.json`, which the "
                     f"full-split row should reproduce): CNN sigma_NMAD {ref['cnn_photoz']['sigma_nmad']:.4f}, "
                     f"mean D {ref['cnn_mean_deviation']['mean']:.3f}.")
    if not r.get("complete", True):
        lines.append("\nIncomplete run: only the rows above were measured.")
    lines.append(f"\nAnchor: {ANCHOR}")  # the current wording; the measured rows come from the report
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO,
                    help="trained project root with data/processed, data/latents, models/vae (default: this repo)")
    ap.add_argument("--params", type=Path, default=None, help="params file (default: ROOT/params.yaml)")
    ap.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS),
                    help=f"fractions of the train split, each in (0, 1] (default {' '.join(map(str, DEFAULT_FRACTIONS))})")
    ap.add_argument("--seed", type=int, default=SUBSAMPLE_SEED, help="seed of the train-split subsampling")
    ap.add_argument("--epochs", type=int, default=None,
                    help="override cnn.epochs (and cap cnn.patience): smoke runs only; default: params.yaml's")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="params override key=value (e.g. cnn.filters=[4,8]); recorded in the output")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: ROOT/reports/photoz_scaling.json)")
    args = ap.parse_args(argv)
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.epochs is not None:
        params_file = args.params or args.root / "params.yaml"
        patience = load_params_with(params_file, overrides).cnn.patience
        overrides.update({"cnn.epochs": args.epochs, "cnn.patience": min(patience, args.epochs)})
    root = args.root.resolve()
    command = " ".join(["python bench/bench_photoz.py", *(argv if argv is not None else sys.argv[1:])])
    report = run(root, (args.params or root / "params.yaml").resolve(), args.fractions, args.seed, overrides,
                 args.out or root / "reports" / "photoz_scaling.json", command)
    print("\n".join(markdown_rows(report)))
    return report


if __name__ == "__main__":
    main()
