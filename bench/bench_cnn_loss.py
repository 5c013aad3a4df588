"""Does a measurement term in the image network's loss keep the lines? (VAL split only.)

Trains the CNN on the committed VAE latents and decoder once per variant of the `cnn:` params
(same data, split and seed; early stopping on val, as the pipeline trains it), then scores the
VAL objects as the evaluate stage scores the test split: `cnn` (no z given: the spectrum carried
through the CNN's own photo-z, lines measured on its rest-frame prediction) and `cnn_given_z`
(decoded at the catalogue z): D against the observation, EW(Halpha), Dn4000, Hdelta_A, the BPT
ratios and the classes against the noiseless truth (mock data), and the photo-z's sigma_NMAD.
The direct baseline in `--direct` (if trained) is scored on the same val objects. The test
split is never read.

    python bench/bench_cnn_loss.py --out reports/cnn_loss.json \
        --variant default: --variant measure1:measure_weight=1 --variant measure10:measure_weight=10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from img2spec.config import load_params
from img2spec.evaluate.direct import add_direct_table
from img2spec.evaluate.measurements import measure_methods, score_measurements
from img2spec.evaluate.redshift import catalogue_photometry, photoz_metrics, redshift_scales, scale_of
from img2spec.evaluate.rows import RowView, load_rows
from img2spec.io.processed import ProcessedData
from img2spec.metrics import deviation, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_representation import QUANTITIES, SCHEMES, variant_section  # noqa: E402

DEFAULT_VARIANTS = ("default:", "measure1:measure_weight=1", "measure10:measure_weight=10")
MODES = ("cnn", "cnn_given_z")


def val_inputs(data: ProcessedData) -> dict:
    """The val rows' observation, error model, truth, catalogue z and photometry."""
    val = data.indices("val")
    return {"rows": val, "obs": load_rows(data.flux, val), "ivar": load_rows(data.ivar, val),
            "truth": None if data.truth_flux is None else load_rows(data.truth_flux, val),
            "z": data.catalog["z"].to_numpy(np.float64)[val], "photometry": catalogue_photometry(data, val)}


def predict_modes(cnn, decoder, data: ProcessedData, v: dict, batch_size: int) -> tuple[dict, dict, dict]:
    """(observed-grid spectra per mode, rest-frame spectra and grid, photo-z metrics) of the val rows,
    as evaluate predicts them (z_err calibrated on val; flux only: D and measurements need no sigma)."""
    from img2spec.models.inference import predict_spectra

    z_scales = redshift_scales(cnn, data, batch_size=batch_size)
    preds, rest, photoz = {}, {}, {}
    for mode, z in (("cnn", None), ("cnn_given_z", v["z"])):
        p = predict_spectra(cnn, decoder, RowView(data.images, v["rows"]), batch_size=batch_size,
                            sigma_method="none", photometry=v["photometry"], z_err_scale=scale_of(z_scales), z=z)
        preds[mode] = p.flux
        if mode == "cnn" and p.rest_flux is not None:
            rest = {"wave": p.rest_wave, "flux": {mode: p.rest_flux}}
        if mode == "cnn" and p.z is not None:
            photoz = photoz_metrics(p.z, v["z"], z_err=p.z_err)
    return preds, rest, photoz


def score(tables: dict, mp) -> dict:
    """Bias / NMAD of the quantities and balanced accuracies of the classes, per method."""
    scored = score_measurements(tables, mp)
    methods = [m for m in tables if m not in ("truth", "observed")]
    return {m: {"measurements": {q: scored["measurements"][q][m] for q in QUANTITIES if m in scored["measurements"][q]},
                "classes": {s: scored["classes"][s][m]["balanced_accuracy"] for s in SCHEMES}} for m in methods}


def run_variant(cp, params, data: ProcessedData, decoder, latents, v: dict,
                direct_table: dict | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Train one CNN and score it (and the direct baseline, if given) on val; also its per-object D."""
    from img2spec.models.train import train_cnn

    t0 = time.perf_counter()
    result = train_cnn(cp, data, latents, decoder, measure_params=params.measure)
    ep = params.evaluate
    preds, rest, photoz = predict_modes(result.model, decoder, data, v, ep.batch_size)
    tables = measure_methods(data.wave, v["z"], data.frame, v["obs"], v["ivar"], preds, v["truth"], params.measure,
                             rest=(rest["wave"], rest["flux"]) if rest else None)
    if direct_table is not None:
        tables["direct"] = direct_table
    out = {"params": cp.model_dump(mode="json"), "seconds": round(time.perf_counter() - t0, 1),
           "epochs_run": result.info["epochs_run"], "best_val_loss": result.best_val_loss,
           "history_last": {k: vals[-1] for k, vals in result.history.items()},
           "mean_deviation": {m: summarise(deviation(preds[m], v["obs"], v["ivar"])) for m in MODES},
           "photoz": photoz, "scores": score(tables, params.measure)}
    return out, {m: deviation(preds[m], v["obs"], v["ivar"]) for m in MODES}


def paired(d: np.ndarray, d_ref: np.ndarray) -> dict:
    """Mean over objects of D(variant) - D(reference) and its standard error."""
    ok = np.isfinite(d) & np.isfinite(d_ref)
    diff = d[ok] - d_ref[ok]
    return {"mean": float(diff.mean()), "sem": float(diff.std(ddof=1) / np.sqrt(diff.size)), "n": int(diff.size)}


def line(name: str, r: dict, mode: str) -> str:
    s = r["scores"][mode]
    m, c = s["measurements"], s["classes"]
    d = r["mean_deviation"][mode]["mean"] if mode in r["mean_deviation"] else float("nan")
    return (f"{name:>12} {mode:>12}: D {d:.3f} | EW(Ha) {m['halpha_ew']['bias']:+.2f}/{m['halpha_ew']['nmad']:.2f} | "
            f"Dn4000 {m['dn4000']['nmad']:.3f} | HdA {m['hdelta_a']['nmad']:.2f} | SF {c['sf_quiescent']:.2f} "
            f"BPT {c['bpt']:.2f} AGN {c['agn']:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", default="data/processed")
    ap.add_argument("--vae", default="models/vae", help="the VAE whose decoder the CNN decodes through")
    ap.add_argument("--latents", default="data/latents")
    ap.add_argument("--direct", default="models/direct", help="the direct baseline scored beside (if trained)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/cnn_loss.json")
    ap.add_argument("--variant", action="append", help="name:key=value,... over params.yaml's cnn section")
    args = ap.parse_args(argv)
    import keras

    from img2spec.models import layers  # noqa: F401  (registers the decoder's custom layers for loading)
    from img2spec.models.latents import load_latents

    params = load_params(args.params)
    data = ProcessedData.open(args.processed)
    decoder = keras.saving.load_model(Path(args.vae) / "decoder.keras", compile=False)
    latents = load_latents(args.latents)
    v = val_inputs(data)
    notes: dict[str, str] = {}
    direct: dict = {}
    add_direct_table(direct, args.direct, data, v["rows"], notes, batch_size=params.evaluate.batch_size)
    results: dict = {}
    d_first: dict[str, np.ndarray] | None = None
    command = "python bench/bench_cnn_loss.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for text in args.variant or DEFAULT_VARIANTS:
        name, cp = variant_section(params.cnn, text)
        r, d_obj = run_variant(cp, params, data, decoder, latents, v, direct.get("direct"))
        if d_first is None:
            d_first = d_obj
        else:  # paired against the first variant: the same objects, so the scatter of D_i cancels
            r["paired_d_vs_first"] = {m: paired(d_obj[m], d_first[m]) for m in MODES}
        results[name] = r
        for mode in MODES:
            print(line(name, r, mode), f"| z NMAD {r['photoz'].get('sigma_nmad', float('nan')):.4f} | "
                  f"{r['epochs_run']} ep {r['seconds']:.0f} s", flush=True)
        if "direct" in r["scores"]:
            s = r["scores"]["direct"]
            print(f"{'direct':>25}: EW(Ha) {s['measurements']['halpha_ew']['bias']:+.2f}/"
                  f"{s['measurements']['halpha_ew']['nmad']:.2f} | Dn4000 {s['measurements']['dn4000']['nmad']:.3f} | "
                  f"SF {s['classes']['sf_quiescent']:.2f} BPT {s['classes']['bpt']:.2f} AGN {s['classes']['agn']:.2f}",
                  flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"split": "val", "n_val": int(len(v["rows"])), "command": command,
                                              "notes": notes, "variants": results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
