"""Benchmark the mock survey: galaxies/s per stage and peak memory, at one or more sizes.

    python bench/bench_mock.py --n 5000 36000 [--workers 2] [--root WORKDIR]

Each size runs the four source stages in a fresh subprocess (so peak RSS is per
size) under <root>/n<N>/ and prints a table; results also go to <root>/bench_mock.json.
Peak memory: ru_maxrss of the stage process and of its (largest) worker child.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import sys
import time
from pathlib import Path

STAGES = ("select", "fetch_spectra", "fetch_images", "fetch_photometry")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from img2spec.config import load_params
from img2spec.paths import Paths
from img2spec.sources import run_source_stage
params_file, root, n, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
params = load_params(params_file)
params = params.model_copy(update={"mock": params.mock.model_copy(update={"n_galaxies": n, "n_workers": workers})})
out = {}
for stage in %r:
    t = time.perf_counter()
    run_source_stage(stage, params, Paths(root))
    out[stage] = time.perf_counter() - t
out["maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("BENCH " + json.dumps(out))
""" % (STAGES,)


def run(n: int, workers: int, root: Path, params_file: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(params_file), str(root), str(n), str(workers)],
                          capture_output=True, text=True, env={**__import__("os").environ, "IMG2SPEC_NO_PROGRESS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"n={n} failed:\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
    res = json.loads(line[6:])
    res["n"] = n
    res["workers"] = workers
    res["total_s"] = time.perf_counter() - t0
    res["galaxies_per_s"] = n / res["total_s"]
    res["disk_mb"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[5000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "mockbench",
                    help="work directory (default: mockbench in the system temporary directory)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    results = []
    for n in args.n:
        r = run(n, args.workers, args.root / f"n{n}", args.params.resolve())
        results.append(r)
        stages = "  ".join(f"{s}={r[s]:.1f}s" for s in STAGES)
        print(f"n={n:>6} workers={r['workers']} total={r['total_s']:.1f}s ({r['galaxies_per_s']:.1f} gal/s)  {stages}  "
              f"peak RSS main={r['maxrss_self_mb']:.0f} MB worker={r['maxrss_children_mb']:.0f} MB  disk={r['disk_mb']:.0f} MB",
              flush=True)
    (args.root / "bench_mock.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
