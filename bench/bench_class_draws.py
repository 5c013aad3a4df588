"""Class decisions of the CNN's spectra on the val split: the point spectrum against posterior draws.

For the committed CNN and decoder, measures the val galaxies' classes (star-forming / quiescent,
BPT, AGN) against the noiseless truth, decided four ways: on the point spectrum; the most probable
class over `--draws` posterior draws; that divided by the train truth's class frequencies; and
divided by the model's own mean probabilities (`models.class_draws`, the published rule; here fitted
on the same val galaxies, in evaluate on val and applied to test). Optionally the latent sigma
scaled by `--temperature`. Prints a table and writes JSON.

    python bench/bench_class_draws.py [--draws 32] [--seed 0] [--temperature 1] [--out reports/class_draws.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from img2spec.config import load_params  # noqa: E402
from img2spec.evaluate.measurements import SCHEMES, class_scores, rest_error_model  # noqa: E402
from img2spec.evaluate.redshift import catalogue_photometry  # noqa: E402
from img2spec.evaluate.rows import RowView, load_rows  # noqa: E402
from img2spec.io.processed import ProcessedData  # noqa: E402
from img2spec.measure import UNCLASSIFIED, measure_spectra  # noqa: E402

TRAIN_PRIOR_OBJECTS = 1500
"""Train galaxies whose truth gives the class frequencies of the 'train frequencies' rule."""


def _truth_table(data: ProcessedData, rows: np.ndarray, mp) -> dict[str, np.ndarray]:
    z = data.catalog["z"].to_numpy(np.float64)[rows]
    return measure_spectra(load_rows(data.truth_flux, rows), data.wave, z, mp, ivar=load_rows(data.ivar, rows),
                           frame=data.frame)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processed", default=str(ROOT / "data" / "processed"))
    ap.add_argument("--vae", default=str(ROOT / "models" / "vae"))
    ap.add_argument("--cnn", default=str(ROOT / "models" / "cnn"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws (the published one: 0)")
    ap.add_argument("--temperature", type=float, default=1.0, help="factor on the latent sigma of the draws")
    ap.add_argument("--out", default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)

    from img2spec.models.class_draws import class_codes, decide, draw_classes, fit_class_priors
    from img2spec.models.inference import latent_std, load_models, predict_outputs, rest_decoder, split_decoder

    mp = load_params(args.params).measure
    data = ProcessedData.open(args.processed)
    if data.truth_flux is None:
        raise SystemExit(f"{args.processed}: no truth_flux (the mock survey has it): nothing to score against")
    models = load_models(args.vae, args.cnn)
    rest = rest_decoder(models.decoder)
    if rest is None:
        raise SystemExit(f"{args.vae}: an observed-frame decoder has no rest-frame draws")
    val = data.indices("val")
    ref = _truth_table(data, val, mp)
    train_ref = _truth_table(data, data.indices("train")[:TRAIN_PRIOR_OBJECTS], mp)
    mu, logvar, z_pred, _ = predict_outputs(models.cnn, RowView(data.images, val),
                                            photometry=catalogue_photometry(data, val))
    z = data.catalog["z"].to_numpy(np.float64)[val]
    ivar = rest_error_model(data.wave, load_rows(data.ivar, val), z, rest.grid.wave)
    point_flux = split_decoder(rest.model).flux(np.concatenate([mu, z_pred[:, None]], axis=1))
    point = measure_spectra(point_flux, rest.grid.wave, 0.0, mp, ivar=ivar, frame="rest")
    draws = draw_classes(models.decoder, mu, latent_std(logvar) * np.float32(args.temperature), z_pred, mp,
                         ivar=ivar, n_draws=args.draws, seed=args.seed)
    train_freq = {}
    for scheme, (col, _) in SCHEMES.items():
        have = train_ref[col][train_ref[col] != UNCLASSIFIED]
        train_freq[col] = [max(float(np.mean(have == c)), 1e-3) for c in class_codes(col)]
    rules = {"point spectrum": {col: point[col] for col, _ in SCHEMES.values()},
             "most probable": decide(draws),
             "/ train frequencies": decide(draws, train_freq),
             "/ own mean (published)": decide(draws, fit_class_priors(draws))}
    report = {"draws": args.draws, "seed": args.seed, "temperature": args.temperature, "n_val": int(len(val)),
              "balanced_accuracy": {rule: {scheme: class_scores(ref[col], codes[col], labels)["balanced_accuracy"]
                                           for scheme, (col, labels) in SCHEMES.items()}
                                    for rule, codes in rules.items()}}
    print(f"val, {len(val)} galaxies, {args.draws} draws (seed {args.seed}), temperature {args.temperature:g}: "
          "balanced accuracy")
    print(f"{'decision':26s}" + "".join(f"{s:>14s}" for s in SCHEMES))
    for rule, scores in report["balanced_accuracy"].items():
        print(f"{rule:26s}" + "".join(f"{v:14.3f}" for v in scores.values()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
