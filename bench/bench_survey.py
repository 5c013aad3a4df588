"""Survey-scale inference: pack, survey on Dask at 1 and 2 workers, and file-based predict, on the same cutouts.

One run, the same N cutout files throughout:
1. inputs: N 5-band cutout files written with `io.ps1_cutout.write_cutout` from the
   project's raw mock cutouts (`--cutouts`, default data/raw/images), cycled with new
   object ids and positions spread over ~`SKY_SPAN_DEG` degrees of sky so they fall into
   several HEALPix shards (setup, not timed);
2. `img2spec pack` (whole process): cutouts/s;
3. `img2spec survey` from the shards at 1 worker and at 2 workers of
   `survey.threads_per_worker` threads (whole process, fresh output each): galaxies/s
   end to end (command wall time, with Python/TensorFlow start-up and model load) and
   in-run (survey.json: cluster start to last shard), start-up and steady state apart
   (survey.json: the client's own start-up = command wall time - survey.json seconds, i.e.
   Python, Dask and the bundle's manifest (the client imports no TensorFlow); `startup_seconds` from the run's start to the
   first shard task (cluster start, worker spawn, their TensorFlow import and bundle load);
   `galaxies_per_s_steady`, the summed rate of warm workers, what 10^8 galaxies would see),
   the workers' time per task phase, CPU outside the tasks, peak memory per worker (kernel
   high-water RSS of each worker process) and of the whole tree;
3b. a longer run: the packed shards `--copies` times over (new object ids, written with the
   real shard writer), surveyed at 1 and 2 workers: the same cutouts, but start-up is paid
   once for 4x the galaxies, as in a real survey;
3c. the large run: the packed shards `--large-copies` times over (>= 250,000 galaxies) at the
   default workers only: peak memory per worker against the first run's, steady rate against
   the longer run's; with the steady rate and the bytes per galaxy, core-hours and TB per 10^9;
4. the same cutouts through file-based `img2spec predict --no-per-object --table`, and the
   per-object path (one FITS per object) on the first `--per-object-n` of them;
5. projected core-hours for 10^8 galaxies at the default setting (`survey.n_workers`), from the
   steady-state rate;
6. the bound: the same shards through the survey's task in plain processes, as many as the
   default workers, without Dask (`bench/bench_survey_bound.py`; `bound`, and the survey's steady
   rate over it, `bound.survey_steady_vs_bound`);
7. storage and reading: `bytes_per_galaxy`, everything the default run (`survey.store`: compact)
   leaves in its output directory (latent shards, catalogue, survey.json, skipped.parquet) over the
   catalogue's objects, and `bytes_per_galaxy_spectra_store`, the same for `--store spectra` at the
   default workers; `decode`: the compact output read back with `open_survey(...)` as a user
   reads it (its defaults: the workers' runtime threads, one shard per core decoded at once), every
   object, catalogue, shard reads and decoding included, after one warm-up shard: flux and sigma
   (`flux_sigma_per_s`) and flux alone (`flux_per_s`), and the largest difference from the spectra
   store's files (bit for bit expected); side by side in the same run, one shard at a time on
   all the machine's cores' runtime threads (`decode.one_shard_at_a_time`, the reader's setting
   before shards were decoded in parallel).

    python bench/bench_survey.py --n 16000 --bundle models/img2spec      # the published figures
    python bench/bench_survey.py --n 500 --bundle models/img2spec --copies 1 --large-copies 0  # smoke run
    python bench/bench_survey.py --decode-rate OUT --compare SPECTRA_OUT  # step 6's read figures alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_survey_bound import run as bound_rate  # noqa: E402
from common import bench_env, machine_facts, measure_command  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SKY_SPAN_DEG = 20.0
"""Positions are spread over a SKY_SPAN_DEG x SKY_SPAN_DEG/4 patch: a few order-4 HEALPix pixels."""
SURVEY_TARGET = 10**8
"""Galaxies of the projected run (LSST/Euclid scale)."""
TARGET_PER_S = 1500.0
TARGET_SCALING = 1.7
SCALE_TARGETS = {"steady_per_s": 2000.0, "replicated_per_s": 1700.0, "startup_seconds": 4.0, "bytes_ratio": 0.1,
                 "decode_flux_sigma_per_s": 1300.0, "decode_flux_per_s": 10000.0}
"""The survey-at-scale targets (`targets(...)["scale"]`): steady rate at 2 workers, end to end on the
replicated run at 2 workers, command to first finished shard at 2 workers, default output bytes over
`--store spectra`'s, and reading the compact output back (flux and sigma; flux alone)."""
SCALE_TARGETS_AT_MOST = frozenset({"startup_seconds", "bytes_ratio"})
"""The `SCALE_TARGETS` that are ceilings; the others are floors."""
SCALE_LABELS = {"steady_per_s": "steady galaxies/s at 2 workers", "replicated_per_s":
                "end to end on the replicated run at 2 workers", "startup_seconds": "start-up s at 2 workers",
                "bytes_ratio": "default bytes / --store spectra bytes", "decode_flux_sigma_per_s":
                "read back with sigma, galaxies/s", "decode_flux_per_s": "read back flux alone, galaxies/s"}
"""What each of `SCALE_TARGETS` measures, as `bench.md` names it."""
PER_OBJECT_N = 500
COPIES = 4
"""The longer survey run: the packed shards this many times over (16,000 -> 64,000 galaxies)."""
LARGE_COPIES = 16
"""The large run: the packed shards this many times over at the default workers (16,000 -> 256,000)."""
LARGE_MEMORY_TOLERANCE = 0.10
"""The large run's peak memory per worker stays within this share of the first run's."""
LARGE_RATE_TOLERANCE = 0.05
"""The large run's steady rate stays within this share of the replicated run's."""


def make_inputs(src: Path, n: int, dest: Path, seed: int = 0) -> float:
    """N cutout files in `dest` from the cutouts in `src` (cycled, new ids and positions); seconds taken."""
    import numpy as np

    from img2spec.io.fastfits import fast_read_cutout
    from img2spec.io.ps1_cutout import read_cutout, write_cutout

    t0 = time.perf_counter()
    files = sorted(p for p in src.iterdir() if p.name.endswith(".fits"))
    if not files:
        raise SystemExit(f"{src}: no cutout files (run `make repro` or give --cutouts)")
    templates = []
    for path in files[: min(len(files), n)]:
        try:
            templates.append(fast_read_cutout(path) or read_cutout(path))
        except ValueError:
            continue
    rng = np.random.default_rng(seed)
    ra0, dec0 = 180.0, 20.0
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = templates[i % len(templates)]
        c.objid = 10**15 + i
        c.ra = ra0 + rng.uniform(0, SKY_SPAN_DEG)
        c.dec = dec0 + rng.uniform(0, SKY_SPAN_DEG / 4)
        write_cutout(dest / f"{c.objid}.fits", c)
    return time.perf_counter() - t0


def replicate_shards(src: Path, copies: int, dest: Path) -> tuple[int, float]:
    """`copies` x the shards of `src` in `dest` (copy k: object ids prefixed 'k-', part names
    'copyk-<part>'), written with the real shard writer; (objects, seconds taken)."""
    from dataclasses import replace

    import numpy as np

    from img2spec.io.shards import iter_parts, part_path, read_cutout_shard, write_cutout_shard

    t0, n = time.perf_counter(), 0
    for healpix, path, _ in iter_parts(src):
        shard = read_cutout_shard(path)
        for k in range(copies):
            ids = np.asarray([f"{k}-{oid}" for oid in shard.object_id], dtype=object)
            write_cutout_shard(part_path(dest, healpix, f"copy{k}-{path.stem}"), replace(shard, object_id=ids, attrs={}))
            n += len(shard)
    return n, time.perf_counter() - t0


def _params_file(dest: Path, **survey: Any) -> Path:
    """A copy of params.yaml with survey overrides (validated by the commands themselves)."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.setdefault("survey", {}).update(survey)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def _img2spec(*args: str) -> list[str]:
    return [sys.executable, "-m", "img2spec.cli", *args]


def _run(cmd: list[str], log: Path) -> dict[str, Any]:
    m = measure_command(cmd, cwd=REPO, env=bench_env(), log_path=log)
    if not m.ok:
        raise SystemExit(f"failed ({m.returncode}): {' '.join(cmd)}\n{m.log_tail}")
    return {"seconds": round(m.seconds, 2), "cpu_seconds": round(m.cpu_seconds, 2),
            "peak_tree_gib": round(m.peak_gib, 3)}


def bench(n: int, bundle: Path, cutouts: Path, workdir: Path, per_object_n: int, copies: int = 1,
          large_copies: int = 0) -> dict[str, Any]:
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text()).get("survey", {})
    default_workers = int(params.get("n_workers", 2))
    threads = int(params.get("threads_per_worker", 1))
    inputs = workdir / "cutouts"
    setup_s = make_inputs(cutouts, n, inputs)
    print(f"inputs: {n} cutout files in {setup_s:.0f} s", flush=True)

    out: dict[str, Any] = {"n": n, "bundle": str(bundle), "cutouts_from": str(cutouts),
                           "threads_per_worker": threads, "default_n_workers": default_workers}
    shards = workdir / "shards"
    run = _run(_img2spec("pack", str(inputs), "--out", str(shards)), workdir / "pack.log")
    packed = json.loads((shards / "pack.json").read_text())
    out["pack"] = {**run, "n_packed": packed["n_objects_packed"], "n_parts": packed["n_parts"],
                   "cutouts_per_s": round(packed["n_objects_packed"] / run["seconds"], 1),
                   "cutouts_per_s_in_run": packed["cutouts_per_s"]}
    print(f"pack: {out['pack']}", flush=True)

    by_workers = {str(w): _survey(shards, bundle, workdir, w, tag="", keep=w == default_workers) for w in (1, 2)}
    default_key = str(default_workers) if str(default_workers) in by_workers else "2"
    default = by_workers[default_key]
    # the same shards through the survey's task in plain processes, right after: the rate without the cluster
    out["bound"] = bound_rate(shards, bundle, int(default_key))
    if default.get("galaxies_per_s_steady"):
        out["bound"]["survey_steady_vs_bound"] = round(default["galaxies_per_s_steady"] / out["bound"]["galaxies_per_s"], 3)
    print(f"bound: {out['bound']}", flush=True)
    # storage of the two stores, and reading the default (compact) one back
    spectra = _survey(shards, bundle, workdir, default_workers, tag="_spectra", store="spectra", keep=True)
    out["store"] = default["store"]
    out["bytes_per_galaxy"] = default["bytes_per_galaxy"]
    out["bytes_per_galaxy_spectra_store"] = spectra["bytes_per_galaxy"]
    out["survey_spectra_store"] = spectra
    # open_survey's defaults: the workers' threads (their sums' order: the same bits), shards in parallel
    out["decode"] = _decode_rates(Path(default["out_dir"]), Path(spectra["out_dir"]), workdir)
    serial = _decode_rates(Path(default["out_dir"]), Path(spectra["out_dir"]), workdir, os.cpu_count(), parallel=1)
    out["decode"]["one_shard_at_a_time"] = {k: serial[k] for k in DECODE_KEYS}
    print(f"bytes per galaxy: {out['bytes_per_galaxy']} ({out['store']}), {out['bytes_per_galaxy_spectra_store']} "
          f"(spectra); decode: {out['decode']}", flush=True)
    for r in (default, spectra):
        shutil.rmtree(r.pop("out_dir"), ignore_errors=True)
    out["by_workers"] = by_workers
    out["galaxies_per_s"] = default["galaxies_per_s"]
    out["galaxies_per_s_command"] = default["galaxies_per_s_command"]
    out["galaxies_per_s_steady"] = default["galaxies_per_s_steady"]
    rate = {w: steady_or_tasks(r) for w, r in by_workers.items()}
    out["scaling_2_vs_1"] = round(rate["2"] / rate["1"], 2)  # once tasks run: start-up is not what scales
    cores = default_workers * threads
    # 1e8 galaxies pay the start-up once: the projection uses the steady-state rate
    out["core_hours_per_1e8"] = round(SURVEY_TARGET / rate[default_key]
                                      * cores / 3600.0, 1)
    out["core_hours_per_1e9"] = round(out["core_hours_per_1e8"] * 10, 0)
    out["tb_per_1e9"] = round(out["bytes_per_galaxy"] * 1e9 / 1e12, 2)
    out["tb_per_1e9_spectra_store"] = round(out["bytes_per_galaxy_spectra_store"] * 1e9 / 1e12, 2)

    if copies > 1:  # a longer run: the same cutouts `copies` times over (start-up paid once)
        big = workdir / "shards_x"
        n_big, setup_s = replicate_shards(shards, copies, big)
        print(f"replicated shards: {n_big} objects in {setup_s:.0f} s", flush=True)
        out["replicated"] = {"copies": copies, "n": n_big,
                             "by_workers": {str(w): _survey(big, bundle, workdir, w, tag="_x") for w in (1, 2)}}
        rep_rate = {w: steady_or_tasks(r) for w, r in out["replicated"]["by_workers"].items()}
        out["replicated"]["scaling_2_vs_1"] = round(rep_rate["2"] / rep_rate["1"], 2)
        shutil.rmtree(big, ignore_errors=True)

    if large_copies > 1:  # >= 250,000 galaxies at the default workers: memory and rate hold at scale
        out["large"] = large_run(shards, bundle, workdir, large_copies, default_workers, default,
                                 out.get("replicated", {}).get("by_workers", {}).get(str(default_workers)))

    table_dir = workdir / "predict_table"
    run = _run(_img2spec("predict", str(inputs), "--model", str(bundle), "--out", str(table_dir), "--no-per-object",
                         "--table", str(table_dir / "spectra.fits")), workdir / "predict_table.log")
    summary = json.loads((table_dir / "summary.json").read_text())
    out["predict_table"] = {**run, "n": summary["n_predicted"], "galaxies_per_s": round(summary["n_predicted"] / run["seconds"], 1),
                            "galaxies_per_s_in_run": summary["objects_per_s"]}
    print(f"predict --no-per-object --table: {out['predict_table']}", flush=True)
    shutil.rmtree(table_dir, ignore_errors=True)

    sub = workdir / "subset"
    sub.mkdir()
    for path in sorted(inputs.iterdir())[:per_object_n]:
        (sub / path.name).symlink_to(path)
    obj_dir = workdir / "predict_objects"
    run = _run(_img2spec("predict", str(sub), "--model", str(bundle), "--out", str(obj_dir)), workdir / "predict_objects.log")
    summary = json.loads((obj_dir / "summary.json").read_text())
    out["predict_per_object"] = {**run, "n": summary["n_predicted"], "subset_of_n": n,
                                 "galaxies_per_s": round(summary["n_predicted"] / run["seconds"], 1),
                                 "galaxies_per_s_in_run": summary["objects_per_s"]}
    print(f"predict per-object ({per_object_n} of the cutouts): {out['predict_per_object']}", flush=True)
    out["targets"] = targets(out)
    return out


def large_run(shards: Path, bundle: Path, workdir: Path, copies: int, workers: int, small: dict[str, Any],
              medium: dict[str, Any] | None) -> dict[str, Any]:
    """The packed shards `copies` times over, surveyed at `workers`: its figures beside the
    `small` run's peak memory per worker (within LARGE_MEMORY_TOLERANCE) and the `medium`
    (replicated) run's steady rate (within LARGE_RATE_TOLERANCE)."""
    big = workdir / "shards_large"
    n_big, setup_s = replicate_shards(shards, copies, big)
    print(f"large run: {n_big} objects replicated in {setup_s:.0f} s", flush=True)
    r = _survey(big, bundle, workdir, workers, tag="_large")
    shutil.rmtree(big, ignore_errors=True)
    out: dict[str, Any] = {"copies": copies, "n": n_big, "workers": workers, **r}
    mem, mem_ref = r["peak_rss_mb_per_worker"], small["peak_rss_mb_per_worker"]
    if mem and mem_ref:
        out["memory_vs_small"] = round(mem / mem_ref, 3)
        out["memory_met"] = bool(abs(mem / mem_ref - 1) <= LARGE_MEMORY_TOLERANCE)
    if medium:
        out["rate_vs_medium"] = round(steady_or_tasks(r) / steady_or_tasks(medium), 3)
        out["rate_met"] = bool(abs(out["rate_vs_medium"] - 1) <= LARGE_RATE_TOLERANCE)
    return out


def _survey(shards: Path, bundle: Path, workdir: Path, workers: int, tag: str, store: str | None = None,
            keep: bool = False) -> dict[str, Any]:
    """`img2spec survey` of `shards` at `workers` workers (whole process, fresh output): its figures.
    `store`: --store (None: params' survey.store); `keep`: leave the output (its path in `out_dir`)."""
    pfile = _params_file(workdir / f"params_w{workers}.yaml", n_workers=workers)
    dest = workdir / f"survey{tag}_w{workers}"
    cmd = _img2spec("survey", str(shards), "--model", str(bundle), "--out", str(dest), "--params", str(pfile))
    run = _run(cmd + (["--store", store] if store else []), workdir / f"survey{tag}_w{workers}.log")
    rep = json.loads((dest / "survey.json").read_text())
    done = rep["objects"]["predicted"]
    out = {
        **run, "n_predicted": done, "n_skipped": rep["objects"]["skipped"], "failed_shards": rep["shards"]["failed"],
        # from shards to spectra and catalogue files: cluster start, workers' TensorFlow import and bundle
        # load included (survey.json); the command's wall time adds the client's own start-up
        "galaxies_per_s": rep["galaxies_per_s"], "galaxies_per_s_command": round(done / run["seconds"], 1),
        "galaxies_per_s_tasks": rep.get("galaxies_per_s_tasks"), "bundle_load_seconds": rep.get("bundle_load_seconds"),
        # start-up apart from the steady state (see the module doc)
        "client_startup_seconds": round(run["seconds"] - rep["seconds"], 2),
        "cluster_start_seconds": rep.get("cluster_start_seconds"), "startup_seconds": rep.get("startup_seconds"),
        "shutdown_seconds": rep.get("shutdown_seconds"), "task_span_seconds": rep.get("task_span_seconds"),
        "galaxies_per_s_steady": rep.get("galaxies_per_s_steady"),
        "task_phase_seconds": rep.get("task_phase_seconds"), "task_cpu_seconds": rep.get("task_cpu_seconds"),
        # CPU of the whole process tree outside the shard tasks: imports, bundle loads, Dask's scheduler,
        # nannies and client
        "cpu_seconds_outside_tasks": round(run["cpu_seconds"] - (rep.get("task_cpu_seconds") or 0.0), 2),
        "worker_environ": rep.get("cluster", {}).get("worker_environ"),
        "tf_intra_inter_op_threads": rep.get("cluster", {}).get("tf_intra_inter_op_threads"),
        "worker_peak_rss_mb": rep["worker_peak_rss_mb"],
        "peak_rss_mb_per_worker": round(max(rep["worker_peak_rss_mb"].values()), 1) if rep["worker_peak_rss_mb"] else None,
    }
    out["store"] = rep.get("store")
    # everything the run left in its output directory, per object of the catalogue
    out["bytes_total"] = directory_bytes(dest)
    out["bytes_per_galaxy"] = round(out["bytes_total"] / rep["objects"]["total"], 1) if rep["objects"]["total"] else None
    print(f"survey{tag}, {workers} worker(s): {out}", flush=True)
    if keep:
        out["out_dir"] = str(dest)
    else:
        shutil.rmtree(dest, ignore_errors=True)
    return out


def directory_bytes(path: Path) -> int:
    """Bytes of every file under `path` (apparent sizes)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


DECODE_KEYS = ("threads", "parallel", "flux_sigma_per_s", "flux_per_s", "max_abs_diff_vs_spectra_store",
               "bit_identical_fraction")
"""What `decode` reports of each reading setting."""


def _decode_rates(compact: Path, spectra: Path, workdir: Path, threads: int | None = None,
                  parallel: int | None = None) -> dict[str, Any]:
    """`--decode-rate` in its own process (the bench process itself never imports TensorFlow)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--decode-rate", str(compact), "--compare", str(spectra)]
    cmd += ["--threads", str(threads)] if threads else []  # else open_survey's default
    cmd += ["--parallel", str(parallel)] if parallel else []
    log = workdir / "decode.log"
    with open(log, "wb") as fh:
        done = subprocess.run(cmd, cwd=REPO, env=bench_env(), stdout=subprocess.PIPE, stderr=fh)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{log.read_text(errors='replace')[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def decode_rates(compact: Path, spectra: Path | None, threads: int | None = None,
                 parallel: int | None = None) -> dict[str, Any]:
    """Objects/s reading the compact survey `compact` back (flux and sigma; flux alone), the
    networks on `threads` intra-op threads (None: the survey's workers', `open_survey`'s default),
    `parallel` shards at once (None: `open_survey`'s default, one per core), and the largest
    difference from the spectra store `spectra` of the same shards."""
    import numpy as np

    from img2spec.io.shards import read_spectra_shard
    from img2spec.survey import open_survey

    survey = open_survey(compact, threads=None if threads is None else (threads, 1), parallel=parallel)
    rows = survey.select()
    first = rows[rows["shard"] == rows["shard"].iloc[0]]
    for with_sigma in (True, False):  # warm-up: graph traces of both paths
        list(survey.decode_selected(first, with_sigma))
    out: dict[str, Any] = {"n": len(rows), "runtime": survey.predictor.runtime, "threads": list(survey.predictor.threads),
                           "parallel": survey.parallel}
    for name, with_sigma in (("flux_sigma_per_s", True), ("flux_per_s", False)):
        t0 = time.perf_counter()
        n = sum(len(part) for _, part in survey.decode_selected(survey.select(), with_sigma))
        out[name] = round(n / (time.perf_counter() - t0), 1)
    if spectra is not None:
        diff = {k: 0.0 for k in ("flux", "sigma", "rest_flux", "rest_sigma")}
        equal, values = 0, 0
        for _, part in survey.decode_selected(rows):
            stored = read_spectra_shard(spectra / part.catalogue["shard"].iloc[0])
            idx = {oid: k for k, oid in enumerate(stored.object_id)}
            at = [idx[oid] for oid in part.object_id]
            for key in diff:
                got, ref = getattr(part.result, key), getattr(stored, key)
                if got is None or ref is None:
                    continue
                ref = ref[at]
                diff[key] = max(diff[key], float(np.nanmax(np.abs(got.astype(np.float64) - ref), initial=0.0)))
                equal += int((got.view(np.uint32) == ref.view(np.uint32)).sum())
                values += got.size
        out["max_abs_diff_vs_spectra_store"] = diff
        out["bit_identical_fraction"] = round(equal / values, 6) if values else None
    return out


def targets(s: dict[str, Any]) -> dict[str, Any]:
    """The survey path's two targets, each on its own: the default setting's end-to-end rate >= TARGET_PER_S,
    and 2 workers >= TARGET_SCALING x one; also on the replicated (longer) run when there is one."""
    out: dict[str, Any] = {"galaxies_per_s": TARGET_PER_S, "scaling_2_vs_1": TARGET_SCALING,
                           "rate_met": bool((s["galaxies_per_s"] or 0) >= TARGET_PER_S),
                           "scaling_met": bool(s["scaling_2_vs_1"] >= TARGET_SCALING),
                           # the same rate target once the workers are warm (start-up excluded)
                           "steady_met": bool((s["galaxies_per_s_steady"] or 0) >= TARGET_PER_S)}
    out["met"] = out["rate_met"] and out["scaling_met"]
    rep = s.get("replicated")
    if rep:
        big = rep["by_workers"][str(s["default_n_workers"])] if str(s["default_n_workers"]) in rep["by_workers"] \
            else rep["by_workers"]["2"]
        out["replicated_rate_met"] = bool((big["galaxies_per_s"] or 0) >= TARGET_PER_S)
        out["replicated_scaling_met"] = bool(rep["scaling_2_vs_1"] >= TARGET_SCALING)
    out["scale"] = scale_targets(s)
    return out


def scale_targets(s: dict[str, Any]) -> dict[str, Any]:
    """Each of `SCALE_TARGETS` beside its measured value and whether it is met (None: not measured in this run)."""
    w2, rep, dec = s["by_workers"].get("2", {}), (s.get("replicated") or {}).get("by_workers", {}).get("2", {}), \
        s.get("decode") or {}
    spectra = s.get("bytes_per_galaxy_spectra_store")
    measured = {
        "steady_per_s": w2.get("galaxies_per_s_steady"), "replicated_per_s": rep.get("galaxies_per_s"),
        "startup_seconds": w2.get("startup_seconds"),
        "bytes_ratio": round(s["bytes_per_galaxy"] / spectra, 4) if s.get("bytes_per_galaxy") and spectra else None,
        "decode_flux_sigma_per_s": dec.get("flux_sigma_per_s"), "decode_flux_per_s": dec.get("flux_per_s"),
    }
    return {key: {"target": target, "measured": measured[key],
                  "met": None if measured[key] is None else bool(
                      measured[key] <= target if key in SCALE_TARGETS_AT_MOST else measured[key] >= target)}
            for key, target in SCALE_TARGETS.items()}


def steady_or_tasks(r: dict[str, Any]) -> float:
    """The steady-state rate of one survey run, else (too few shards per worker) the task-span rate."""
    return r.get("galaxies_per_s_steady") or r["galaxies_per_s_tasks"] or r["galaxies_per_s"]


def markdown_rows(s: dict[str, Any]) -> list[str]:
    """README lines for the survey section (used by run_all.markdown)."""
    w1, w2 = s["by_workers"]["1"], s["by_workers"]["2"]
    t = targets(s)

    def met(flag: bool) -> str:
        return "met" if flag else "not met"

    when = f" (measured {s['generated']} with `{s['command']}`)" if s.get("generated") else ""
    lines = [
        f"Survey path on the same {s['n']:,} cutouts (`bench/bench_survey.py`){when}: galaxies/s from files to outputs "
        "as the command reports it (survey.json, summary.json, pack.json), the whole command's wall time incl. Python "
        "start-up in brackets:",
        "",
        "| path | galaxies/s | peak memory |",
        "|---|---|---|",
        f"| `img2spec pack` (cutouts/s) | {s['pack']['cutouts_per_s_in_run']} ({s['pack']['cutouts_per_s']}) | {s['pack']['peak_tree_gib']} GiB |",
        f"| `img2spec survey`, 1 worker x {s['threads_per_worker']} thread | {w1['galaxies_per_s']} ({w1['galaxies_per_s_command']}) | {w1['peak_rss_mb_per_worker']} MB per worker |",
        f"| `img2spec survey`, 2 workers x {s['threads_per_worker']} thread | {w2['galaxies_per_s']} ({w2['galaxies_per_s_command']}) | {w2['peak_rss_mb_per_worker']} MB per worker |",
    ]
    rep = s.get("replicated")
    if rep:
        r1, r2 = rep["by_workers"]["1"], rep["by_workers"]["2"]
        lines += [
            f"| `img2spec survey` of {rep['n']:,} galaxies (the packed shards x {rep['copies']}, new ids), 1 worker | {r1['galaxies_per_s']} ({r1['galaxies_per_s_command']}) | {r1['peak_rss_mb_per_worker']} MB per worker |",
            f"| `img2spec survey` of {rep['n']:,} galaxies, 2 workers | {r2['galaxies_per_s']} ({r2['galaxies_per_s_command']}) | {r2['peak_rss_mb_per_worker']} MB per worker |",
        ]
    lines += [
        f"| `img2spec predict --no-per-object --table` | {s['predict_table']['galaxies_per_s_in_run']} ({s['predict_table']['galaxies_per_s']}) | {s['predict_table']['peak_tree_gib']} GiB |",
        f"| `img2spec predict` per-object FITS (first {s['predict_per_object']['n']}) | {s['predict_per_object']['galaxies_per_s_in_run']} ({s['predict_per_object']['galaxies_per_s']}) | {s['predict_per_object']['peak_tree_gib']} GiB |",
        "",
        f"Once the workers have loaded the bundle (no cluster start-up, TensorFlow import, bundle load): "
        f"{w1['galaxies_per_s_tasks']}/s at 1 worker, "
        f"{w2['galaxies_per_s_tasks']}/s at 2; once every worker is warm (steady state, survey.json "
        f"`galaxies_per_s_steady`): {w1.get('galaxies_per_s_steady')}/s at 1 worker, {w2.get('galaxies_per_s_steady')}/s at 2. "
        f"Start-up at 2 workers: {w2.get('client_startup_seconds')} s in the client (Python, Dask and the bundle's "
        f"manifest; the client imports no TensorFlow), then {w2.get('startup_seconds')} s to the first shard task "
        f"(cluster start {w2.get('cluster_start_seconds')} s, workers' TensorFlow import and bundle load); "
        f"closing the cluster after the last shard took {w2.get('shutdown_seconds')} s. "
        f"2 workers / 1 worker: {s['scaling_2_vs_1']}x"
        + (f" ({rep['scaling_2_vs_1']}x on the {rep['n']:,}-galaxy run)" if rep else "")
        + f"; projected {s['core_hours_per_1e8']} core-hours for 10^8 galaxies at the default {s['default_n_workers']} "
        f"workers. Targets: >= {TARGET_PER_S:.0f} galaxies/s end to end {met(t['rate_met'])} at {s['n']:,}"
        + (f", {met(t['replicated_rate_met'])} at {rep['n']:,}" if rep else "")
        + f"; 2 workers >= {TARGET_SCALING}x one {met(t['scaling_met'])} at {s['n']:,}"
        + (f", {met(t['replicated_scaling_met'])} at {rep['n']:,}" if rep else "") + ".",
    ]
    b = s.get("bound")
    if b:
        lines += ["", f"Without the cluster (`bench/bench_survey_bound.py`: the survey's task over the same shards in "
                      f"{b['processes']} plain processes at once, right after): {b['galaxies_per_s']:,.0f} galaxies/s "
                      f"({b['mean_ms_per_galaxy']} ms per galaxy per process); the survey's steady rate is "
                      f"{b.get('survey_steady_vs_bound')} x that."]
    big = s.get("large")
    if big:
        lines += [
            "",
            f"Large run: {big['n']:,} galaxies (the packed shards x {big['copies']}, new ids) at {big['workers']} "
            f"workers: {big['galaxies_per_s']}/s end to end, {big.get('galaxies_per_s_steady')}/s steady, peak "
            f"{big['peak_rss_mb_per_worker']} MB per worker ({big.get('memory_vs_small')} x the {s['n']:,} run's; "
            f"within {100 * LARGE_MEMORY_TOLERANCE:.0f}%: {met(big.get('memory_met', False))}); steady rate "
            f"{big.get('rate_vs_medium')} x the replicated run's (within {100 * LARGE_RATE_TOLERANCE:.0f}%: "
            f"{met(big.get('rate_met', False))}).",
        ]
    lines += ["", "Targets at survey scale: " + "; ".join(
        f"{SCALE_LABELS[k]} {'<=' if k in SCALE_TARGETS_AT_MOST else '>='} {v['target']:g}: {v['measured']} "
        f"({'not measured' if v['met'] is None else met(v['met'])})" for k, v in t["scale"].items()) + "."]
    if s.get("core_hours_per_1e9") is not None:
        lines += ["", f"Per 10^9 galaxies at the steady rate: {s['core_hours_per_1e9']:,.0f} core-hours; "
                      f"{s['tb_per_1e9']} TB with the default store, {s['tb_per_1e9_spectra_store']} TB with "
                      "`--store spectra`."]
    d = s.get("decode")
    if d:
        diff = d.get("max_abs_diff_vs_spectra_store") or {}
        lines += [
            "",
            f"Storage: {s['bytes_per_galaxy']:,.0f} bytes per galaxy in the output directory with the default "
            f"`--store {s['store']}` (catalogue included), {s['bytes_per_galaxy_spectra_store']:,.0f} with "
            f"`--store spectra`. Reading the compact output back (`open_survey(...)`'s defaults, one process: "
            f"{d.get('parallel', 1)} shards at once on {d['threads'][0]} runtime thread(s) each): "
            f"{d['flux_sigma_per_s']:,.0f} galaxies/s with sigma, {d['flux_per_s']:,.0f}/s "
            f"flux alone; {100 * (d.get('bit_identical_fraction') or 0):.4g}% of the values bit for bit those of "
            f"`--store spectra` (largest difference: flux {diff.get('flux', 0):.3g}, sigma {diff.get('sigma', 0):.3g})"
            + (f"; one shard at a time on {d['one_shard_at_a_time']['threads'][0]} runtime threads: "
               f"{d['one_shard_at_a_time']['flux_sigma_per_s']:,.0f} / {d['one_shard_at_a_time']['flux_per_s']:,.0f} per s"
               if d.get("one_shard_at_a_time") else "") + ".",
        ]
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16000, help="cutouts (>= 16000 for the README figures)")
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "img2spec")
    ap.add_argument("--cutouts", type=Path, default=REPO / "data" / "raw" / "images", help="template cutouts")
    ap.add_argument("--per-object-n", type=int, default=PER_OBJECT_N, help="cutouts for the per-object predict path")
    ap.add_argument("--copies", type=int, default=COPIES,
                    help="also survey the packed shards this many times over (new ids; 1: not)")
    ap.add_argument("--large-copies", type=int, default=LARGE_COPIES,
                    help="the large run: the packed shards this many times over at the default workers (0: not)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: temp, removed)")
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ap.add_argument("--decode-rate", type=Path, default=None, metavar="OUT",
                    help="only measure reading the compact survey OUT back (one JSON line)")
    ap.add_argument("--compare", type=Path, default=None, metavar="SPECTRA_OUT",
                    help="with --decode-rate: the --store spectra survey of the same shards to compare with")
    ap.add_argument("--threads", type=int, default=None,
                    help="with --decode-rate: intra-op threads of the reader's runtime (default: the survey workers')")
    ap.add_argument("--parallel", type=int, default=None,
                    help="with --decode-rate: shards decoded at once (default: open_survey's, one per core)")
    args = ap.parse_args(argv)
    if args.decode_rate is not None:
        print(json.dumps(decode_rates(args.decode_rate, args.compare, args.threads, args.parallel)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="img2spec_bench_survey_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = {"generated": time.strftime("%Y-%m-%d", time.gmtime()),
                  "command": " ".join(["python bench/bench_survey.py", *(argv if argv is not None else sys.argv[1:])])}
        result.update(bench(args.n, args.bundle.resolve(), args.cutouts.resolve(), workdir,
                            min(args.per_object_n, args.n), args.copies, args.large_copies))
        result["machine"] = machine_facts(REPO)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        from img2spec.io.atomic import write_text

        write_text(args.out, text + "\n")
    print(text)
    print("\n".join(markdown_rows(result)))


if __name__ == "__main__":
    main()
