"""Latents moved toward the direct baseline's measurements (VAL split): does the spectrum then measure as well?

The CNN's spectrum measures worse than the direct baseline predicts the same quantities from the
same images (EW(Halpha), Dn4000, Hdelta_A NMAD). This check fuses the two after training: each
val galaxy's latents start at the CNN's mean mu and minimise

    sum_q w ((m_q(decoder(x, z)) - d_q) / s_q)^2 / 2  +  sum_l ((x_l - mu_l) / std_l)^2 / 2,

the direct model's predictions d_q with their predicted sigmas s_q (its Gaussian heads) as a
likelihood of the decoded rest-frame spectrum's measurements, the CNN's latent posterior
N(mu, std^2) as the prior: `models.fusion`, the pipeline's own fusion (`fusion:` params), here with
any weight, quantities and number of Levenberg-Marquardt steps. The refined spectrum is then measured and classified as the evaluate stage does (rest
frame, the observation's ivar carried onto the rest grid, classes on 32 posterior draws around the
refined latents with priors fitted on the same val galaxies; a third row with the draws weighed by
the direct model's class probabilities, `fusion.classes`) and scored against the noiseless truth,
beside the unrefined CNN and the direct model; D against the observation at the CNN's own z. Both
networks read the same images, so the fusion counts their information twice: a point estimate, not a
posterior. The test split is never read.

    python bench/bench_fusion.py [--iterations 8] [--weight 10] [--quantities Q ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from img2spec.config import load_params  # noqa: E402
from img2spec.evaluate.measurements import SCHEMES, class_scores, rest_error_model, robust_difference  # noqa: E402
from img2spec.evaluate.redshift import catalogue_photometry  # noqa: E402
from img2spec.evaluate.rows import RowView, load_rows  # noqa: E402
from img2spec.io.processed import ProcessedData  # noqa: E402
from img2spec.measure import measure_spectra  # noqa: E402

SCORED = ("halpha_ew", "dn4000", "hdelta_a")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processed", default=str(ROOT / "data" / "processed"))
    ap.add_argument("--vae", default=str(ROOT / "models" / "vae"))
    ap.add_argument("--cnn", default=str(ROOT / "models" / "cnn"))
    ap.add_argument("--direct", default=str(ROOT / "models" / "direct"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--iterations", type=int, default=None, help="Levenberg-Marquardt steps (default: fusion params)")
    ap.add_argument("--weight", type=float, default=None,
                    help="weight of the direct model's likelihood term (default: fusion params)")
    ap.add_argument("--quantities", nargs="+", default=None,
                    help="direct predictions the spectrum is pulled toward (default: fusion params)")
    ap.add_argument("--out", default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)

    from img2spec.metrics import deviation
    from img2spec.models.class_draws import decide, draw_classes, fit_class_priors, weigh_draws
    from img2spec.models.direct import load_direct, load_direct_heads, predict_direct
    from img2spec.models.fusion import STD_FLOOR, Fusion
    from img2spec.models.inference import decode_latents, latent_std, load_models, predict_outputs, rest_decoder

    params = load_params(args.params)
    mp, fp = params.measure, params.fusion
    data = ProcessedData.open(args.processed)
    models = load_models(args.vae, args.cnn)
    rest = rest_decoder(models.decoder)
    if rest is None or data.truth_flux is None:
        raise SystemExit("needs a rest-frame decoder and the mock's truth_flux")
    val = data.indices("val")
    z = data.catalog["z"].to_numpy(np.float64)[val]
    obs, ivar = load_rows(data.flux, val), load_rows(data.ivar, val)
    ref = measure_spectra(load_rows(data.truth_flux, val), data.wave, z, mp, ivar=ivar, frame=data.frame)
    rest_ivar = rest_error_model(data.wave, ivar, z, rest.grid.wave)
    mu, logvar, z_pred, z_err = predict_outputs(models.cnn, RowView(data.images, val),
                                                photometry=catalogue_photometry(data, val))
    std = latent_std(logvar)
    direct = predict_direct(*load_direct(args.direct), data, val)
    fusion = Fusion(load_direct_heads(args.direct), tuple(args.quantities or fp.quantities),
                    fp.weight if args.weight is None else args.weight,
                    fp.iterations if args.iterations is None else args.iterations, mp, classes=True)
    start = time.perf_counter()
    fused, evidence = fusion(models.decoder, mu, std, z_pred, RowView(data.images, val),
                             catalogue_photometry(data, val), 256)
    seconds = time.perf_counter() - start

    report = {"iterations": fusion.iterations, "weight": fusion.weight, "quantities": list(fusion.quantities),
              "n_val": int(len(val)), "fusion_seconds": round(seconds, 2),
              "latent_shift_in_std": float(np.median(np.abs(fused - mu) / np.maximum(std, STD_FLOOR))), "methods": {}}
    for name, lat, weigh in (("cnn", mu, None), ("cnn fused with direct", fused, None),
                             ("cnn fused, classes weighed", fused, evidence)):
        pred = decode_latents(models.decoder, lat, std, z_used=z_pred, z_given=np.zeros(len(val), bool), z_err=z_err,
                              with_sigma=False)
        table = measure_spectra(pred.rest_flux, rest.grid.wave, 0.0, mp, ivar=rest_ivar, frame="rest")
        draws = weigh_draws(draw_classes(models.decoder, lat, std, z_pred, mp, ivar=rest_ivar), weigh)
        table.update(decide(draws, fit_class_priors(draws)))
        report["methods"][name] = _scores(table, ref, float(np.nanmean(deviation(pred.flux, obs, ivar))))
    report["methods"]["direct"] = _scores(direct, ref, float("nan"))
    print(f"val, {len(val)} galaxies; median latent shift {report['latent_shift_in_std']:.2f} std; "
          f"fusion {seconds:.1f} s (direct model + {fusion.iterations} steps)")
    print(f"{'method':28s}{'D':>8s}" + "".join(f"{q + ' NMAD':>16s}" for q in SCORED)
          + "".join(f"{s:>14s}" for s in SCHEMES))
    for name, r in report["methods"].items():
        print(f"{name:28s}{r['D']:8.3f}" + "".join(f"{r[q]['nmad']:16.3f}" for q in SCORED)
              + "".join(f"{r[s]:14.3f}" for s in SCHEMES))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _scores(table: dict, ref: dict, d: float) -> dict:
    out: dict = {"D": d}
    out.update({q: robust_difference(table[q], ref[q]) for q in SCORED})
    out.update({s: class_scores(ref[col], table[col], labels)["balanced_accuracy"] for s, (col, labels) in SCHEMES.items()})
    return out


if __name__ == "__main__":
    main()
