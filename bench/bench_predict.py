"""Inference speed: galaxies per second end to end, from raw cutout arrays to spectra.

End to end = `Predictor.predict_counts`: counts -> nanomaggies -> asinh stretch
(`prep.images.preprocess_stack`) -> CNN -> decoder of the latent mean, plus the
uncertainty: the decoder's Jacobian along the L latent directions (`linearised`) or
`n_samples` latent draws through the decoder (`sampled`) (`models.inference.predict_spectra`).
FITS reading/writing is not included (it is per-file I/O, measured by `img2spec predict`'s
summary.json `objects_per_s`).

Model: the published bundle `models/img2spec/` if present, else the trained
models/vae + models/cnn, else the default architecture from params.yaml with random
weights (the speed does not depend on the weights). Usage:

    python bench/bench_predict.py [--batch-sizes 1 32 256 1024] [--sigma linearised|sampled|none] [--n-samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_BATCH_SIZES = (1, 32, 256, 1024)
MIN_OBJECTS = 256
"""Each batch size is timed over at least this many objects (and at least 2 batches)."""
MAX_OBJECTS_BS1 = 128
"""Batch size 1 is slow per object; time fewer."""
TARGET_PER_S = 1000.0


def _random_predictor(params, root: Path):
    """Default architecture from params with random weights (+ the real scaling if prepared)."""
    from img2spec import BANDS
    from img2spec.models.cnn import build_cnn
    from img2spec.models.vae import build_decoder
    from img2spec.predict.predictor import Predictor
    from img2spec.prep.images import make_scaling
    from img2spec.prep.spectra import make_grid

    grid = make_grid(params.prepare)
    wave = np.asarray(grid.centres, np.float64)
    L, size = params.vae.latent_dim, params.data.cutout_size
    cnn = build_cnn((size, size, len(BANDS)), L, params.cnn, np.zeros(L), np.ones(L))
    decoder = build_decoder(len(wave), L, params.vae.decoder_units)
    scaling_file = root / "data" / "processed" / "image_scaling.json"
    scaling = (json.loads(scaling_file.read_text()) if scaling_file.exists()
               else make_scaling(BANDS, np.ones(5), np.zeros(5), np.ones(5), 0))
    manifest = {
        "name": "random-weights", "version": "bench", "bundle_hash": "0" * 64,
        "input": {"shape": [size, size, len(BANDS)], "bands": list(BANDS), "pixel_scale_arcsec": 0.25},
        "output": {"frame": params.prepare.frame, "n_pix": len(wave)},
        "inference": {"sigma_method": params.publish.sigma_method, "n_samples": params.publish.n_samples, "batch_size": params.publish.batch_size,
                      "seed": params.publish.seed},
        "normalisation": {"band": params.prepare.norm_band, "wavelength_A": 6201.2},
    }
    return Predictor(root, manifest, cnn, decoder, scaling, wave, {"source": "random"}), "default architecture, random weights"


def load_predictor(params, root: Path):
    from img2spec.predict.predictor import Predictor

    bundle = root / "models" / "img2spec"
    if (bundle / "bundle.json").exists():
        return Predictor.from_path(bundle), f"bundle {bundle}"
    return _random_predictor(params, root)


def bench(predictor, batch_sizes, n_samples: int, seed: int = 0, sigma_method: str | None = None) -> list[dict]:
    """Rows of galaxies/s per batch size; `sigma_method` None: the bundle's."""
    h, w, c = predictor.input_shape
    rng = np.random.default_rng(seed)
    n_max = max(max(MIN_OBJECTS, 2 * bs) for bs in batch_sizes)
    counts = rng.normal(0.0, 5.0, (n_max, h, w, c)).astype(np.float32)
    counts[:, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2, :] += 500.0  # a compact "galaxy"
    magzp = np.full((n_max, c), 30.0)
    rows = []
    for bs in batch_sizes:
        n = min(max(MIN_OBJECTS, 2 * bs), n_max) if bs > 1 else MAX_OBJECTS_BS1
        predictor.predict_counts(counts[:bs], magzp[:bs], n_samples=n_samples, batch_size=bs,
                                 sigma_method=sigma_method)  # warm-up (also traces the graphs)
        t_pre = t_all = 0.0
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            sl = slice(start, min(start + bs, n))
            a = time.perf_counter()
            images = predictor.preprocess_stack(counts[sl], magzp[sl])
            t_pre += time.perf_counter() - a
            predictor.predict(images, n_samples=n_samples, batch_size=bs, sigma_method=sigma_method)
        t_all = time.perf_counter() - t0
        rows.append({"batch_size": bs, "n_objects": n, "seconds": round(t_all, 3),
                     "galaxies_per_s": round(n / t_all, 1), "preprocess_fraction": round(t_pre / t_all, 3)})
        print(f"{bs:>10d} {n:>9d} {t_all:>9.2f} {n / t_all:>12.1f} {100 * t_pre / t_all:>11.1f}%", flush=True)
    return rows


def breakdown(predictor, batch_size: int, n_samples: int, repeats: int = 3) -> None:
    """Where the time goes at one batch size: CNN forward pass vs decoder (mean + latent draws)."""
    from img2spec.models.inference import decode, predict_latents

    h, w, c = predictor.input_shape
    x = np.random.default_rng(1).normal(size=(batch_size, h, w, c)).astype(np.float32)
    mu, _ = predict_latents(predictor.cnn, x, batch_size=batch_size)
    z = np.repeat(mu, max(n_samples, 1) + 1, axis=0)  # the mean + n_samples draws per object

    def timed(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    t_cnn = timed(lambda: predict_latents(predictor.cnn, x, batch_size=batch_size))
    t_dec = timed(lambda: decode(predictor.decoder, z, batch_size=max(batch_size, 1024)))
    print(f"breakdown at batch {batch_size}: CNN {batch_size / t_cnn:.0f} galaxies/s, "
          f"decoder x{n_samples + 1} {batch_size / t_dec:.0f} galaxies/s, "
          f"both {batch_size / (t_cnn + t_dec):.0f} galaxies/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    ap.add_argument("--n-samples", type=int, default=None, help="latent samples (default: publish.n_samples)")
    ap.add_argument("--sigma", default=None, choices=["linearised", "sampled", "none"],
                    help="uncertainty method (default: the bundle's)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--breakdown", action="store_true", help="also time CNN and decoder sampling separately")
    args = ap.parse_args()

    from img2spec.config import load_params

    params = load_params(args.params)
    predictor, label = load_predictor(params, Path(args.root))
    n_samples = params.publish.n_samples if args.n_samples is None else args.n_samples
    import tensorflow as tf

    print(f"model: {label}; input {predictor.input_shape}, {len(predictor.wave)} pixels, "
          f"sigma={args.sigma or predictor.sigma_method}, n_samples={n_samples}; TF {tf.__version__}, {os.cpu_count()} CPUs, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"{'batch_size':>10} {'n_objects':>9} {'seconds':>9} {'galaxies/s':>12} {'preprocess':>12}")
    rows = bench(predictor, args.batch_sizes, n_samples, sigma_method=args.sigma)
    default = next((r for r in rows if r["batch_size"] == params.publish.batch_size), None)
    if default:
        verdict = "meets" if default["galaxies_per_s"] >= TARGET_PER_S else "MISSES"
        print(f"default batch size {default['batch_size']}: {default['galaxies_per_s']:.0f} galaxies/s "
              f"({verdict} the {TARGET_PER_S:.0f}/s target)")
    if args.breakdown:
        breakdown(predictor, params.publish.batch_size, n_samples)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": label, "sigma_method": args.sigma or predictor.sigma_method,
                                               "n_samples": n_samples, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
