"""Latents moved toward the direct baseline's measurements (VAL split): does the spectrum then measure as well?

The CNN's spectrum measures worse than the direct baseline predicts the same quantities from the
same images (EW(Halpha), Dn4000, Hdelta_A NMAD). This check fuses the two after training: each
val galaxy's latents start at the CNN's mean mu and minimise

    sum_q w ((m_q(decoder(x, z)) - d_q) / s_q)^2 / 2  +  sum_l ((x_l - mu_l) / std_l)^2 / 2,

the direct model's predictions d_q with their predicted sigmas s_q (its Gaussian heads) as a
likelihood of the decoded rest-frame spectrum's measurements (`models.measure_loss`, the
differentiable `measure_spectra`), the CNN's latent posterior N(mu, std^2) as the prior; `--steps`
Adam steps. The refined spectrum is then measured and classified as the evaluate stage does (rest
frame, the observation's ivar carried onto the rest grid, classes on 32 posterior draws around the
refined latents with priors fitted on the same val galaxies) and scored against the noiseless truth,
beside the unrefined CNN and the direct model; D against the observation at the CNN's own z. Both
networks read the same images, so the fusion counts their information twice: a point estimate, not a
posterior. The test split is never read.

    python bench/bench_fusion.py [--steps 200] [--learning-rate 0.02] [--weight 1] [--quantities Q ...] [--out FILE]
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
from img2spec.evaluate.measurements import SCHEMES, class_scores, rest_error_model, robust_difference  # noqa: E402
from img2spec.evaluate.redshift import catalogue_photometry  # noqa: E402
from img2spec.evaluate.rows import RowView, load_rows  # noqa: E402
from img2spec.io.processed import ProcessedData  # noqa: E402
from img2spec.measure import measure_spectra  # noqa: E402

SCORED = ("halpha_ew", "dn4000", "hdelta_a")
STD_FLOOR = 1e-3
"""Lowest latent std in the prior term (a collapsed direction would pin its latent)."""


def refine_to_direct(rest_model, weights, mu: np.ndarray, std: np.ndarray, z: np.ndarray, target: np.ndarray,
                     target_sigma: np.ndarray, quantities: tuple[str, ...], *, steps: int, learning_rate: float,
                     weight: float) -> np.ndarray:
    """(N, L) latents minimising the module doc's objective from `mu` (NaN targets left out)."""
    import keras
    import tensorflow as tf

    from img2spec.models.measure_loss import measure_tensor

    ok = np.isfinite(target) & np.isfinite(target_sigma) & (target_sigma > 0)
    t = tf.constant(np.where(ok, target, 0.0).astype(np.float32))
    s = tf.constant(np.where(ok, target_sigma, 1.0).astype(np.float32))
    on = tf.constant(ok.astype(np.float32))
    prior_mu = tf.constant(mu.astype(np.float32))
    prior_std = tf.constant(np.maximum(std, STD_FLOOR).astype(np.float32))
    zc = tf.constant(np.asarray(z, np.float32).reshape(-1, 1))
    x = tf.Variable(mu.astype(np.float32))
    opt = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            m = measure_tensor(rest_model(tf.concat([x, zc], axis=1), training=False), weights, quantities)
            d = on * (m - t) / s
            loss = weight * 0.5 * tf.reduce_sum(tf.square(d)) + 0.5 * tf.reduce_sum(tf.square((x - prior_mu) / prior_std))
        opt.apply_gradients([(tape.gradient(loss, x), x)])

    for _ in range(int(steps)):
        step()
    return x.numpy()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processed", default=str(ROOT / "data" / "processed"))
    ap.add_argument("--vae", default=str(ROOT / "models" / "vae"))
    ap.add_argument("--cnn", default=str(ROOT / "models" / "cnn"))
    ap.add_argument("--direct", default=str(ROOT / "models" / "direct"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--learning-rate", type=float, default=0.02)
    ap.add_argument("--weight", type=float, default=1.0, help="weight of the direct model's likelihood term")
    ap.add_argument("--quantities", nargs="+", default=None,
                    help="direct predictions the spectrum is pulled toward (default: all the direct model predicts)")
    ap.add_argument("--out", default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)

    from img2spec.measure.linear import measurement_weights
    from img2spec.metrics import deviation
    from img2spec.models.class_draws import decide, draw_classes, fit_class_priors
    from img2spec.models.direct import QUANTITIES, load_direct, predict_direct
    from img2spec.models.inference import decode_latents, latent_std, load_models, predict_outputs, rest_decoder

    mp = load_params(args.params).measure
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
    quantities = tuple(args.quantities or QUANTITIES)
    unknown = sorted(set(quantities) - set(QUANTITIES))
    if unknown:
        raise SystemExit(f"--quantities: the direct model predicts {', '.join(QUANTITIES)}, not {', '.join(unknown)}")
    target = np.stack([direct[q] for q in quantities], axis=1)
    sigma = np.stack([direct[f"{q}_sigma"] for q in quantities], axis=1)
    weights = measurement_weights(rest.grid.wave, mp)
    fused = refine_to_direct(rest.model, weights, mu, std, z_pred, target, sigma, quantities, steps=args.steps,
                             learning_rate=args.learning_rate, weight=args.weight)

    report = {"steps": args.steps, "learning_rate": args.learning_rate, "weight": args.weight,
              "quantities": list(quantities), "n_val": int(len(val)),
              "latent_shift_in_std": float(np.median(np.abs(fused - mu) / np.maximum(std, STD_FLOOR))), "methods": {}}
    for name, lat in (("cnn", mu), ("cnn fused with direct", fused)):
        pred = decode_latents(models.decoder, lat, std, z_used=z_pred, z_given=np.zeros(len(val), bool), z_err=z_err,
                              with_sigma=False)
        table = measure_spectra(pred.rest_flux, rest.grid.wave, 0.0, mp, ivar=rest_ivar, frame="rest")
        draws = draw_classes(models.decoder, lat, std, z_pred, mp, ivar=rest_ivar)
        table.update(decide(draws, fit_class_priors(draws)))
        report["methods"][name] = _scores(table, ref, float(np.nanmean(deviation(pred.flux, obs, ivar))))
    report["methods"]["direct"] = _scores(direct, ref, float("nan"))
    print(f"val, {len(val)} galaxies; median latent shift {report['latent_shift_in_std']:.2f} std")
    print(f"{'method':24s}{'D':>8s}" + "".join(f"{q + ' NMAD':>16s}" for q in SCORED)
          + "".join(f"{s:>14s}" for s in SCHEMES))
    for name, r in report["methods"].items():
        print(f"{name:24s}{r['D']:8.3f}" + "".join(f"{r[q]['nmad']:16.3f}" for q in SCORED)
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
