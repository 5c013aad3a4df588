"""What bounds the survey's rate on this machine: its shard tasks without Dask around them.

Runs the survey's own task (`survey.task.predict_shard`, compact store, one runtime thread, the
workers' malloc settings) over every shard of a packed directory, after one warm-up shard, in
`--processes` plain processes at once, each over all the shards. Each process's milliseconds per
galaxy is the CPU cost of a galaxy with that many processes sharing the machine (caches, memory
bandwidth); `processes / ms` is the rate that many workers would reach if the cluster cost
nothing between and around tasks. Set beside `img2spec survey`'s warm rate on the same shards
(`galaxies_per_s_steady`, run right after), the difference is what scheduling tasks, one output
pair per shard and the small shards' fixed costs take.

    python bench/bench_survey_bound.py --shards SHARDS --bundle models/img2spec --processes 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER_ENVIRON = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""One BLAS/OpenMP thread per process, as Dask's nanny starts the survey's workers."""


def child(shards: Path, bundle: Path, out: Path) -> dict[str, float]:
    """One process: every shard of `shards` through `predict_shard`, after a warm-up shard."""
    from img2spec.io.shards import iter_parts
    from img2spec.predict.bundle_info import BundleInfo
    from img2spec.survey.task import ModelSpec, predict_shard

    spec = ModelSpec.of(BundleInfo.from_path(bundle))  # the networks load once, in predict_shard
    parts = [(str(path), rel) for _, path, rel in iter_parts(shards)]
    predict_shard(*parts[0], str(out / "warm-up"), spec)
    t0, cpu0, n = time.perf_counter(), time.process_time(), 0
    for path, rel in parts:
        n += int(predict_shard(path, rel, str(out / "run"), spec)["n_predicted"])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"n": n, "seconds": round(seconds, 3), "ms_per_galaxy": round(1e3 * seconds / n, 4),
            "cpu_ms_per_galaxy": round(1e3 * cpu / n, 4)}


def run(shards: Path, bundle: Path, processes: int) -> dict[str, object]:
    """`processes` children at once; their figures and the rate they add up to."""
    env = bench_env(WORKER_ENVIRON)
    with tempfile.TemporaryDirectory(prefix="survey-bound-") as tmp:
        procs = [subprocess.Popen([sys.executable, __file__, "--child", "--shards", str(shards), "--bundle", str(bundle),
                                   "--out", str(Path(tmp) / str(k))], env=env, cwd=REPO, stdout=subprocess.PIPE)
                 for k in range(processes)]
        results = []
        for p in procs:
            stdout, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a child process failed ({p.returncode})")
            results.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    ms = sum(r["ms_per_galaxy"] for r in results) / len(results)
    return {"processes": processes, "each": results, "mean_ms_per_galaxy": round(ms, 4),
            "galaxies_per_s": round(processes * 1e3 / ms, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, required=True, help="a directory written by `img2spec pack`")
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "img2spec")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="processes at once, one run per value")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.shards, args.bundle, args.out)))
        return 0
    for k in args.processes:
        print(json.dumps(run(args.shards, args.bundle, k)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
