"""Survey start-up: seconds from launching `img2spec survey` to its first finished shard, with the
workers running the bundle's networks on TensorFlow (Keras) or on its exported ONNX graphs.

Setup (not timed): two bundles built from the repository's trained models (`models/vae`,
`models/cnn`, `data/processed`, `metrics/evaluate.json`) with `publish.runtime: tensorflow` and
`onnx` (the same models; the second adds the exported graphs and makes them the default), N
cutout files from the project's raw cutouts (`bench_survey.make_inputs`) packed into shards.
Then, alternately per repeat: one fresh worker process alone (`WORKER_PROBE`: imports, bundle
load, a first batch, with its CPU seconds) and `img2spec survey` at `--workers` workers of each bundle into a
fresh output directory; the first finished shard is the earliest output shard file's
modification time (a task writes its output shard last, when the shard is done).

    python bench/bench_startup.py --n 512 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_survey import make_inputs  # noqa: E402
from common import bench_env, machine_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("tensorflow", "onnx")
TARGET_SECONDS = 4.0
"""Target: the first shard finished within this many seconds of the command at 2 workers."""


def build_bundles(dest: Path) -> dict[str, Path]:
    """One bundle per runtime from the repository's trained models (same models, same params otherwise)."""
    from img2spec.config import load_params
    from img2spec.paths import Paths
    from img2spec.predict.bundle import build_bundle

    params = load_params(REPO / "params.yaml")
    out = {}
    for runtime in RUNTIMES:
        p = params.model_copy(update={"publish": params.publish.model_copy(update={"runtime": runtime,
                                                                                  "registry": False})})
        out[runtime] = dest / f"bundle_{runtime}"
        build_bundle(p, Paths(REPO), dest=out[runtime])
    return out


def _params_file(dest: Path, workers: int) -> Path:
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.setdefault("survey", {}).update(n_workers=workers)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def first_shard_seconds(shards: Path, bundle: Path, out: Path, pfile: Path, log: Path) -> dict[str, Any]:
    """Run `img2spec survey` once; seconds from launch to the first output shard and to the end."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "img2spec.cli", "survey", str(shards), "--model", str(bundle), "--out", str(out),
           "--params", str(pfile)]
    t0 = time.time()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=REPO, env=bench_env(), stdout=fh, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    firsts = [p.stat().st_mtime for p in out.glob("healpix=*/*.hdf5")]
    rep = json.loads((out / "survey.json").read_text())
    return {"first_shard_seconds": round(min(firsts) - t0, 2), "command_seconds": round(wall, 2),
            "startup_seconds": rep.get("startup_seconds"), "bundle_load_seconds": rep.get("bundle_load_seconds"),
            "n_predicted": rep["objects"]["predicted"]}


WORKER_PROBE = """
import resource, sys, time
t0 = time.perf_counter()
import numpy as np
from img2spec.predict.bundle_info import BundleInfo
from img2spec.survey.task import ModelSpec, worker_predictor
t1 = time.perf_counter()
pred = worker_predictor(ModelSpec.of(BundleInfo.from_path(sys.argv[1])))
t2 = time.perf_counter()
pred.predict_batch(np.zeros((8, *pred.input_shape), np.float32))
t3 = time.perf_counter()
r = resource.getrusage(resource.RUSAGE_SELF)
print(round(t1 - t0, 3), round(t2 - t1, 3), round(t3 - t2, 3), round(r.ru_utime + r.ru_stime, 3),
      "tensorflow" in sys.modules)
"""
"""A worker's start-up alone, in a fresh process: imports, bundle load, first batch; its CPU seconds
(user + system, less sensitive than wall time to other jobs on the machine)."""


def worker_startup(bundle: Path) -> dict[str, Any]:
    """Seconds of a fresh worker process to import the survey task, load `bundle`, run a first batch."""
    done = subprocess.run([sys.executable, "-c", WORKER_PROBE, str(bundle)], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True, check=True)
    imp, load, first, cpu, tf = done.stdout.split()[-5:]
    return {"import_seconds": float(imp), "load_seconds": float(load), "first_batch_seconds": float(first),
            "cpu_seconds": float(cpu), "tensorflow_imported": tf == "True"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="cutouts in the packed survey")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cutouts", type=Path, default=REPO / "data" / "raw" / "images")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_startup_"))
    work.mkdir(parents=True, exist_ok=True)
    bundles = build_bundles(work)
    make_inputs(args.cutouts, args.n, work / "inputs")
    subprocess.run([sys.executable, "-m", "img2spec.cli", "pack", str(work / "inputs"), "--out", str(work / "shards")],
                   cwd=REPO, env=bench_env(), check=True, stdout=subprocess.DEVNULL)
    pfile = _params_file(work / "params.yaml", args.workers)
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNTIMES}
    workers: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNTIMES}
    for k in range(args.repeats):
        for runtime in RUNTIMES:
            workers[runtime].append(worker_startup(bundles[runtime]))
            print(f"{runtime} worker {k}: {workers[runtime][-1]}", flush=True)
            r = first_shard_seconds(work / "shards", bundles[runtime], work / f"out_{runtime}", pfile,
                                    work / f"survey_{runtime}_{k}.log")
            print(f"{runtime} run {k}: {r}", flush=True)
            runs[runtime].append(r)
    summary = {
        "command": " ".join(["python", "bench/bench_startup.py", "--n", str(args.n), "--workers", str(args.workers),
                             "--repeats", str(args.repeats)]),
        "machine": machine_facts(), "n": args.n, "workers": args.workers,
        "median_first_shard_seconds": {r: statistics.median(x["first_shard_seconds"] for x in v) for r, v in runs.items()},
        "median_startup_seconds": {r: statistics.median(x["startup_seconds"] or 0.0 for x in v) for r, v in runs.items()},
        "median_worker_cpu_seconds": {r: statistics.median(x["cpu_seconds"] for x in v) for r, v in workers.items()},
        "median_worker_wall_seconds": {r: statistics.median(x["import_seconds"] + x["load_seconds"] + x["first_batch_seconds"]
                                                            for x in v) for r, v in workers.items()},
        "target_seconds": TARGET_SECONDS, "runs": runs, "workers": workers,
    }
    summary["target_met"] = summary["median_first_shard_seconds"]["onnx"] <= TARGET_SECONDS
    print(json.dumps({k: summary[k] for k in ("median_first_shard_seconds", "median_startup_seconds",
                                              "median_worker_cpu_seconds", "median_worker_wall_seconds", "target_met")}))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
