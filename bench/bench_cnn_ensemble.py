"""Would an ensemble of image networks trained with different seeds predict better spectra? (VAL split only.)

Trains the pipeline's CNN (params.yaml's `cnn:` section) once per seed on the committed VAE, latents
and data, scores each network alone on the VAL objects as `bench_cnn_loss.py` does (`cnn` and
`cnn_given_z`: D, measurements, classes, photo-z), then scores their ensemble as the pipeline
builds it with `cnn.ensemble` (`img2spec.models.ensemble.cnn_ensemble`: per object the members'
latent means and redshifts averaged, their variances combined as a mixture's, the mean of the
variances plus the variance of the means). D is paired against the first seed's network
on the same objects. The test split is never read.

    python bench/bench_cnn_ensemble.py --seeds 0 1 --out reports/cnn_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from img2spec.config import load_params
from img2spec.evaluate.direct import add_direct_table
from img2spec.evaluate.measurements import measure_methods
from img2spec.io.processed import ProcessedData
from img2spec.metrics import deviation, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cnn_loss import MODES, line, paired, predict_modes, score, val_inputs  # noqa: E402


def scored(cnn, params, data, decoder, v: dict, direct_table: dict | None) -> tuple[dict, dict]:
    preds, rest, photoz = predict_modes(cnn, decoder, data, v, params.evaluate.batch_size)
    tables = measure_methods(data.wave, v["z"], data.frame, v["obs"], v["ivar"], preds, v["truth"], params.measure,
                             rest=(rest["wave"], rest["flux"]) if rest else None)
    if direct_table is not None:
        tables["direct"] = direct_table
    d = {m: deviation(preds[m], v["obs"], v["ivar"]) for m in MODES}
    return {"mean_deviation": {m: summarise(d[m]) for m in MODES}, "photoz": photoz,
            "scores": score(tables, params.measure)}, d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", default="data/processed")
    ap.add_argument("--vae", default="models/vae")
    ap.add_argument("--latents", default="data/latents")
    ap.add_argument("--direct", default="models/direct")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="reports/cnn_ensemble.json")
    args = ap.parse_args(argv)
    import keras

    from img2spec.models import layers  # noqa: F401  (registers the decoder's custom layers for loading)
    from img2spec.models.contract import has_redshift_head
    from img2spec.models.ensemble import cnn_ensemble
    from img2spec.models.latents import load_latents
    from img2spec.models.train import train_cnn

    params = load_params(args.params)
    data = ProcessedData.open(args.processed)
    decoder = keras.saving.load_model(Path(args.vae) / "decoder.keras", compile=False)
    latents = load_latents(args.latents)
    v = val_inputs(data)
    notes: dict[str, str] = {}
    direct: dict = {}
    add_direct_table(direct, args.direct, data, v["rows"], notes, batch_size=params.evaluate.batch_size)
    members, results, per_object = [], {}, {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        cp = params.cnn.model_copy(update={"seed": seed, "ensemble": 1})
        members.append(train_cnn(cp, data, latents, decoder, measure_params=params.measure).model)
        results[f"seed{seed}"], per_object[f"seed{seed}"] = scored(members[-1], params, data, decoder, v,
                                                                   direct.get("direct"))
        results[f"seed{seed}"]["seconds"] = round(time.perf_counter() - t0, 1)
    ensemble = cnn_ensemble(members, has_redshift_head(members[0]))
    results["ensemble"], per_object["ensemble"] = scored(ensemble, params, data, decoder, v, direct.get("direct"))
    first = per_object[f"seed{args.seeds[0]}"]
    for name, r in results.items():
        r["paired_d_vs_first"] = {m: paired(per_object[name][m], first[m]) for m in MODES}
        for mode in MODES:
            print(line(name, r, mode), f"| z NMAD {r['photoz'].get('sigma_nmad', float('nan')):.4f}", flush=True)
    command = "python bench/bench_cnn_ensemble.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"split": "val", "n_val": int(len(v["rows"])), "command": command,
                                          "notes": notes, "results": results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
