"""Speed of measure.measure_spectra on a survey-shard-sized block of spectra.

    python bench/bench_measure.py [--n 5000] [--repeats 5] [--processed data/processed]

Prints wall seconds per call (median and best of `repeats`), spectra per second and the
process CPU seconds per call (what the call costs on a busy machine), for
float32 (N, P) arrays on the project grid with per-pixel sigma, as a survey worker holds
them. With --processed, the first N rows of data/processed (memmapped, ivar errors) are
measured instead of synthetic spectra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from img2spec.config import Params
from img2spec.config.prepare import PrepareParams
from img2spec.measure import measure_spectra
from img2spec.prep.spectra import make_grid


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n noisy spectra: a 4000 A break, Halpha + [NII] + [OIII] + Hbeta lines, z in 0.01-0.25."""
    rng = np.random.default_rng(seed)
    wave = make_grid(PrepareParams()).centres
    z = rng.uniform(0.01, 0.25, n)
    rest = wave[None, :] / (1 + z[:, None])
    flux = np.where(rest < 4000.0, 0.6, 1.0) + rng.normal(0, 0.05, (n, wave.size))
    for lam, amp in ((6564.61, 3.0), (6585.27, 1.0), (5008.24, 1.5), (4862.68, 1.0)):
        flux += amp * np.exp(-0.5 * ((rest - lam) / 2.5) ** 2)
    return flux.astype(np.float32), np.full(flux.shape, 0.05, np.float32), wave, z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--processed", default=None)
    a = ap.parse_args()
    mp = Params().measure
    if a.processed:
        from img2spec.io.processed import ProcessedData

        d = ProcessedData.open(a.processed)
        n = min(a.n, len(d))
        flux, err, wave, z = d.flux[:n], d.ivar[:n], d.wave, d.catalog["z"].to_numpy()[:n]
        kw = {"ivar": err, "frame": d.frame}
    else:
        flux, err, wave, z = synthetic(a.n)
        kw = {"sigma": err}
    times, cpu = [], []
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = measure_spectra(flux, wave, z, mp, **kw)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    n = len(z)
    med = statistics.median(times)
    print(f"measure_spectra: {n} spectra x {wave.size} pixels, {len(out)} columns; "
          f"median {med:.3f} s, best {min(times):.3f} s per call ({n / med:,.0f} spectra/s) over {a.repeats} calls; "
          f"CPU {statistics.median(cpu):.3f} s per call (wall time also counts other load: "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
