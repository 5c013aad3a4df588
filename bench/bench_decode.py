"""Decode arithmetic of a bundle's decoder: latents -> spectra per second, flux alone and with sigma.

What `open_survey(...).spectra()` spends per galaxy besides reading the latent shard and the
catalogue: the one per-batch decode (`models.inference.decode_latents`) of a rest-frame decoder at
a predicted z (so the spectrum is averaged over the redshift's uncertainty), in this process, on
the bundle's exported graphs (`--runtime onnx`, what survey reads and workers run; all cores) or
its Keras decoder (`--runtime tensorflow`). Latents are the encode stage's (`--latents`), redshifts
uniform over the mock's range with z_err 0.015, latent 1-sigma 0.3. Median of `--repeats` timed
calls after one warm-up. The read path end to end (shards, catalogue, decode) is
`bench/bench_survey.py`'s `decode` section.

    python bench/bench_decode.py --bundle models/img2spec --latents data/latents/mu.npy
    python bench/bench_decode.py --runtime tensorflow     # the Keras decoder instead
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

Z_RANGE = (0.05, 0.3)
Z_ERR = 0.015
LATENT_STD = 0.3
SEED = 0


def rates(decoder, mu: np.ndarray, repeats: int) -> dict[str, float]:
    """Median galaxies per second of `decode_latents`, flux alone and flux with sigma."""
    from img2spec.models.inference import decode_latents

    rng = np.random.default_rng(SEED)
    n = len(mu)
    kw = dict(z_used=rng.uniform(*Z_RANGE, n).astype(np.float32), z_given=np.zeros(n, bool),
              z_err=np.full(n, Z_ERR, np.float32))
    std = np.full_like(mu, LATENT_STD)
    out = {}
    for name, with_sigma in (("flux_per_s", False), ("flux_sigma_per_s", True)):
        decode_latents(decoder, mu[:256], std[:256], with_sigma=with_sigma, **{k: v[:256] for k, v in kw.items()})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decode_latents(decoder, mu, std, with_sigma=with_sigma, **kw)
            times.append(time.perf_counter() - t0)
        out[name] = round(n / statistics.median(times), 1)
    return out


def load_decoder(bundle: Path, runtime: str):
    """The bundle's decoder on `runtime`, loaded as predict and survey load it."""
    from img2spec.predict.runtime import load_networks

    return load_networks(bundle, runtime)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="models/img2spec", help="a published bundle")
    ap.add_argument("--latents", default="data/latents/mu.npy")
    ap.add_argument("--n", type=int, default=4096, help="galaxies per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--runtime", choices=("onnx", "tensorflow"), default="onnx",
                    help="the bundle's exported graphs (onnxruntime) or its Keras decoder")
    args = ap.parse_args(argv)
    mu = np.load(args.latents)[:args.n].astype(np.float32)
    result = {"n": len(mu), "repeats": args.repeats, "runtime": args.runtime,
              **rates(load_decoder(Path(args.bundle), args.runtime), mu, args.repeats)}
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
