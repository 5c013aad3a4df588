"""`img2spec survey`: predict every shard on Dask distributed, one task per shard, and write `survey.json`.

Default: a LocalCluster on this machine (`survey.n_workers` processes of
`survey.threads_per_worker` threads, dashboard on 127.0.0.1 only); `scheduler` joins an
existing cluster (dask-jobqueue SLURMCluster, the Dask Kubernetes operator), whose
workers must see the shard, output and bundle paths. Shards already predicted by the
same bundle from the same input are skipped before any worker starts, so a rerun is a
no-op and a killed run resumes. Dask retries a failed task `survey.retries` times and
reschedules the task of a worker that died; a shard that still fails is reported in
`survey.json`, the others finish. Skipped objects are counted by reason in `survey.json` and
listed in `skipped.parquet`. An output directory holding outputs of shards that are not in the
shard directory (an earlier packing, another shard directory), or outputs of the other store
(`survey.store`: compact or spectra), is refused. LocalCluster
workers are forked from this process on Linux (`START_METHODS`), with its modules already
imported; every worker sets its own malloc thresholds (`task.WORKER_MALLOC_THRESHOLDS`), and the cluster
runs with fewer periodic callbacks (`task.WORKER_DASK_CONFIG`). This process (the client) needs only
the bundle's manifest (`BundleInfo`) and never imports TensorFlow; the workers load the networks.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Params
from ..io.atomic import atomic_path, remove_stale_temps, write_json
from ..io.processes import die_with_parent
from ..io.shards import PARTITION_PREFIX, SHARD_SUFFIX, iter_parts, list_parts, read_attrs
from ..logs import progress
from ..predict.bundle_info import BundleInfo
from .store import check_store, store_of
from .task import (CATALOGUE_DIR, CATALOGUE_SUFFIX, PHASES, WORKER_DASK_CONFIG, ModelSpec, fsync_dirs, fsync_path,
                   is_done, output_paths, predict_shard)

log = logging.getLogger(__name__)
SURVEY_REPORT = "survey.json"
SKIPPED_TABLE = "skipped.parquet"
"""One row per skipped object of the run's predicted shards: shard, object_id, reason, detail."""
SKIPPED_COLUMNS = ("shard", "object_id", "reason", "detail")
SKIPPED_ROW_GROUP = 10_000
"""Skipped rows held in memory before they go to the table file (memory stays bounded on any survey)."""
STALE_EXAMPLES = 5
DASHBOARD_HOST = "127.0.0.1"
START_METHODS = ("auto", "fork", "forkserver", "spawn")
"""How `img2spec survey --start-method` starts the LocalCluster's worker processes (`resolve_start_method`).

A forked worker has the survey command's modules already imported and is up in ~0.1 s; a
spawned one imports Dask, NumPy, pandas, astropy and the survey task anew (~2 s of CPU each)
before its first shard. The client imports neither TensorFlow nor ONNX Runtime, so a forked
worker inherits no thread pool of either."""


class SurveyError(ValueError):
    """The survey cannot run at all (no shards, unusable directory); one bad shard is not this."""


@dataclass
class ShardJob:
    healpix: int
    path: Path
    rel: str
    n_objects: int
    input_hash: str | None


@dataclass
class SurveyCounts:
    n_shards: int = 0
    done: int = 0
    skipped_done: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    n_objects: int = 0
    n_predicted: int = 0
    n_skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    predict_seconds: float = 0.0
    load_seconds: float = 0.0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    """(pid, started, finished, n_predicted, loaded_bundle) of every predicted shard: task span, start-up, steady rate."""
    phase_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    cluster_start_seconds: float | None = None
    shutdown_seconds: float | None = None
    tf_threads: set[tuple[int, ...]] = field(default_factory=set)
    cpu_seconds: float = 0.0
    worker_environ: list[dict[str, str | None]] = field(default_factory=list)
    worker_malloc: list[dict[str, int] | None] = field(default_factory=list)
    worker_dask_config: list[dict[str, Any]] = field(default_factory=list)


def exit_now() -> None:
    """Leave this process at once (exit status 0), logs and standard streams flushed.

    For a LocalCluster worker whose work is done: Python's finalisation of a process that
    loaded TensorFlow takes ~1.3 s (a LocalCluster of 2 such workers closed in 1.4 s, 0.1 s with
    this), and every `img2spec survey` run waited for it.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _local_worker_plugin():
    """A Dask worker plugin for the LocalCluster: its workers exit when the client process is killed,
    and skip the interpreter's finalisation once they are closed normally (`exit_now`)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class LocalWorker(WorkerPlugin):
        name = "img2spec-local-worker"

        def setup(self, worker) -> None:
            die_with_parent()

        def teardown(self, worker) -> None:
            # Runs in Worker.close; the handler runs when that process's interpreter starts to exit,
            # before any other exit handler (they run last-registered first).
            atexit.register(exit_now)

    return LocalWorker()


def _jobs(shards_dir: Path) -> list[ShardJob]:
    jobs = []
    for healpix, path, rel in iter_parts(shards_dir):
        attrs = read_attrs(path) or {}
        jobs.append(ShardJob(healpix, path, rel, int(attrs.get("n_objects", 0) or 0), attrs.get("content_hash")))
    return jobs


class SkippedTable:
    """Streams skipped objects into a Parquet file (`SKIPPED_COLUMNS`, all strings) in row groups."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = pa.schema([(c, pa.string()) for c in SKIPPED_COLUMNS])
        self._writer = pq.ParquetWriter(path, self.schema)
        self._rows: list[dict[str, str]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Queue `rows` (dicts with `SKIPPED_COLUMNS`); a full row group is written."""
        self._rows.extend({c: str(r[c]) for c in SKIPPED_COLUMNS} for r in rows)
        if len(self._rows) >= SKIPPED_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def close(self) -> None:
        """Write what is queued and the file's footer (a run without skips gives an empty table)."""
        self._flush()
        self._writer.close()


def task_key(shards_dir: Path, out_dir: Path, rel: str, bundle_hash: str) -> str:
    """The Dask key of a shard's task: its shard, bundle, shard directory and output directory.

    A scheduler keeps results by key, so two surveys on one scheduler with the same shard names
    (other shard or output directories) must never share one."""
    where = hashlib.sha256(f"{Path(shards_dir).resolve()}\0{Path(out_dir).resolve()}".encode()).hexdigest()
    return f"img2spec-shard-{rel}-{bundle_hash[:12]}-{where[:16]}"


def stale_outputs(out_dir: Path, jobs: list[ShardJob]) -> list[Path]:
    """Spectra shards and catalogue parts under `out_dir` of shards that are not among `jobs`
    (an earlier packing with another HEALPix order or part size, or another shard directory)."""
    rels = {j.rel for j in jobs}
    stale = [p for _, p in list_parts(out_dir) if p.relative_to(out_dir).as_posix() not in rels]
    cat_dir = out_dir / CATALOGUE_DIR
    for pdir in sorted(cat_dir.glob(f"{PARTITION_PREFIX}*")):
        for p in sorted(pdir.glob(f"*{CATALOGUE_SUFFIX}")):
            rel = p.relative_to(cat_dir).with_suffix(SHARD_SUFFIX).as_posix()
            if not p.name.startswith(".") and rel not in rels:
                stale.append(p)
    return stale


def _refuse_stale(out_dir: Path, shards_dir: Path, jobs: list[ShardJob]) -> None:
    stale = stale_outputs(out_dir, jobs)
    if stale:
        examples = ", ".join(p.relative_to(out_dir).as_posix() for p in stale[:STALE_EXAMPLES])
        raise SurveyError(
            f"{out_dir}: {len(stale)} output file(s) of shards that are not in {shards_dir} (e.g. {examples}): "
            "outputs of an earlier packing (another HEALPix order or part size) or of another shard directory, "
            "which would be read beside this run's; remove them or choose another --out")


def mixed_store_outputs(out_dir: Path, store: str) -> list[Path]:
    """Output shards under `out_dir` written by the other store (one directory holds one store:
    `open_survey` reads them all alike, and a done check of one store never counts the other's)."""
    return [p for _, p in list_parts(out_dir) if store_of(read_attrs(p)) not in (None, store)]


def _refuse_mixed_store(out_dir: Path, store: str) -> None:
    other = mixed_store_outputs(out_dir, store)
    if other:
        examples = ", ".join(p.relative_to(out_dir).as_posix() for p in other[:STALE_EXAMPLES])
        theirs = store_of(read_attrs(other[0]))
        raise SurveyError(
            f"{out_dir}: {len(other)} output shard(s) of --store {theirs} (e.g. {examples}), and this run writes "
            f"--store {store}: one output directory holds one store; rerun with --store {theirs}, "
            "or remove them or choose another --out")


def _cleanup(out_dir: Path, jobs: list[ShardJob]) -> None:
    """Temporaries left by killed writers (a kill -9 of this client or of a worker) in the output tree."""
    dirs = {output_paths(out_dir, j.rel)[0].parent for j in jobs} | {output_paths(out_dir, j.rel)[1].parent for j in jobs}
    dirs.add(out_dir)  # survey.json's temporary
    for d in sorted(dirs):
        remove_stale_temps(d)


def resolve_start_method(method: str = "auto") -> str:
    """The multiprocessing start method of the LocalCluster's workers: one of `START_METHODS`;
    'auto' is fork on Linux (a worker inherits the client's imports) and spawn elsewhere
    (fork is unsafe on macOS)."""
    if method not in START_METHODS:
        raise SurveyError(f"start method {method!r}: expected one of {', '.join(START_METHODS)}")
    if method == "auto":
        return "fork" if sys.platform.startswith("linux") else "spawn"
    return method


@contextlib.contextmanager
def _worker_start(method: str, quiet: bool = True):
    """Dask's `distributed.worker.multiprocessing-method` set to `method` while the LocalCluster
    runs (its nannies read it at every worker (re)start), with `task.WORKER_DASK_CONFIG` when
    `quiet` (`survey.worker_profiling` false: the scheduler and workers read it when they start;
    a nanny hands its config to a spawned worker), and Dask's INFO chatter off (forked workers
    would repeat it: the survey logs the dashboard's address itself). Buffered output is flushed
    first, so a forked worker does not write it a second time."""
    import dask
    import distributed  # noqa: F401  (its config defaults first: dask.config.set restores a missing key by deleting it)

    sys.stdout.flush()
    sys.stderr.flush()
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    dask_log.setLevel(max(dask_log.getEffectiveLevel(), logging.WARNING))
    settings = {"distributed.worker.multiprocessing-method": method, **(WORKER_DASK_CONFIG if quiet else {})}
    try:
        with dask.config.set(settings):
            yield
    finally:
        dask_log.setLevel(level)


def _local_cluster(params: Params):
    from distributed import LocalCluster

    sp = params.survey
    return LocalCluster(
        n_workers=sp.n_workers, threads_per_worker=sp.threads_per_worker, processes=True,
        memory_limit=sp.memory_limit, host=DASHBOARD_HOST, dashboard_address=f"{DASHBOARD_HOST}:{sp.dashboard_port}",
        silence_logs=logging.WARNING,
    )


def run_survey(
    shards_dir: str | Path, bundle: BundleInfo, out_dir: str | Path, params: Params,
    scheduler: str | None = None, store: str | None = None, start_method: str = "auto",
) -> dict[str, Any]:
    """Predict every shard under `shards_dir` into `out_dir`; returns (and writes) the survey report.

    `bundle`: the model as the workers will load it (a `BundleInfo`; a loaded `Predictor` works
    too). This process never runs the networks, so it need not import TensorFlow. `store`:
    'compact' or 'spectra' (`survey.store` of `params` when None). `start_method`: how a
    LocalCluster starts its workers (`START_METHODS`; ignored with `scheduler`).
    """
    t0, t0_unix = time.perf_counter(), time.time()
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    method = resolve_start_method(start_method)
    if not shards_dir.is_dir():
        raise SurveyError(f"{shards_dir}: no such shard directory (make one with `img2spec pack`)")
    jobs = _jobs(shards_dir)
    if not jobs:
        raise SurveyError(f"{shards_dir}: no shards (healpix=<N>/<part>.hdf5); make them with `img2spec pack`")
    out_dir.mkdir(parents=True, exist_ok=True)
    _refuse_stale(out_dir, shards_dir, jobs)
    store = check_store(store or params.survey.store)
    _refuse_mixed_store(out_dir, store)
    if scheduler is None:  # pids in temporary names mean something only on this machine
        _cleanup(out_dir, jobs)
    sp = params.survey
    spec = ModelSpec.of(bundle, sp.threads_per_worker, sp.tf_inter_op_threads)
    counts = SurveyCounts(n_shards=len(jobs))
    todo: list[ShardJob] = []
    for job in jobs:
        done = is_done(out_dir, job.rel, bundle.bundle_hash, job.input_hash, store)
        if done is None:
            todo.append(job)
        else:
            counts.skipped_done += 1
            counts.n_objects += int(done.get("n_input_objects", job.n_objects))
    info: dict[str, Any] = {"scheduler": scheduler or "LocalCluster", "n_workers": 0, "threads_per_worker": None,
                            "start_method": None}
    with atomic_path(out_dir / SKIPPED_TABLE) as tmp:
        table = SkippedTable(tmp)
        try:
            if todo:
                _run_jobs(todo, shards_dir, out_dir, spec, params, scheduler, counts, info, table, store, method)
        finally:
            table.close()
        fsync_path(tmp)
    fsync_dirs(out_dir / SKIPPED_TABLE, out_dir)
    if todo and scheduler is None:
        _cleanup(out_dir, jobs)
    seconds = time.perf_counter() - t0
    report = _report(counts, seconds, t0_unix, bundle, info, shards_dir, out_dir, store)
    write_json(out_dir / SURVEY_REPORT, report)
    for f in counts.failed:
        log.error("shard %s failed: %s", f["shard"], f["reason"])
    log.info("survey: %d shards (%d done, %d already done, %d failed), %d objects predicted in %.1f s -> %s",
             counts.n_shards, counts.done, counts.skipped_done, len(counts.failed), counts.n_predicted, seconds, out_dir)
    return report


def _run_jobs(todo: list[ShardJob], shards_dir: Path, out_dir: Path, spec: ModelSpec, params: Params,
              scheduler: str | None, counts: SurveyCounts, info: dict[str, Any], skipped: SkippedTable,
              store: str, method: str) -> None:
    """The todo shards on a LocalCluster (workers started by `method`) or on the cluster at `scheduler`."""
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            stack.enter_context(_worker_start(method, quiet=not params.survey.worker_profiling))
            info["start_method"] = method
        _run_on_cluster(todo, shards_dir, out_dir, spec, params, scheduler, counts, info, skipped, store)


def _run_on_cluster(todo: list[ShardJob], shards_dir: Path, out_dir: Path, spec: ModelSpec, params: Params,
                    scheduler: str | None, counts: SurveyCounts, info: dict[str, Any], skipped: SkippedTable,
                    store: str) -> None:
    from distributed import Client, as_completed

    sp = params.survey
    t_start = time.perf_counter()
    cluster = _local_cluster(params) if scheduler is None else None
    try:
        client = Client(cluster) if cluster is not None else Client(scheduler)
    except BaseException:
        if cluster is not None:  # its worker processes would outlive the failed start
            cluster.close()
        raise
    try:
        if cluster is not None:
            client.register_plugin(_local_worker_plugin())
        counts.cluster_start_seconds = time.perf_counter() - t_start
        nthreads = client.nthreads()
        info["n_workers"] = len(nthreads)
        info["threads_per_worker"] = sorted(set(nthreads.values()))
        info["dashboard"] = client.dashboard_link
        log.info("survey: %d workers, Dask dashboard at %s", len(nthreads), client.dashboard_link)
        # Largest shards first (also Dask's priority): no worker is left with a big shard while the
        # others idle at the end of the run.
        ordered = sorted(todo, key=lambda j: -j.n_objects)
        paths = [str(job.path.resolve()) for job in ordered]
        distance = sum(nthreads.values()) if sp.prefetch else 0
        info["prefetch_distance"] = distance
        futures = {
            client.submit(predict_shard, path, job.rel, str(out_dir.resolve()), spec, sp.batch_size,
                          store, ahead, key=task_key(shards_dir, out_dir, job.rel, spec.bundle_hash),
                          retries=sp.retries, pure=False, priority=job.n_objects): job
            for job, path, ahead in zip(ordered, paths, read_ahead_paths(paths, distance))
        }
        shard_bar = progress(total=counts.n_shards, initial=counts.skipped_done, desc="survey: shards", unit="shard")
        obj_bar = progress(total=sum(j.n_objects for j in todo), desc="survey: objects", unit="obj")
        try:
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # a shard that kept failing after Dask's retries: reported, not fatal
                    counts.failed.append({"shard": job.rel, "reason": f"{type(exc).__name__}: {exc}"})
                    counts.n_objects += job.n_objects
                else:
                    _add(counts, res, skipped)
                shard_bar.update(1)
                obj_bar.update(job.n_objects)
                fut.release()
        finally:
            shard_bar.close()
            obj_bar.close()
    finally:
        t_close = time.perf_counter()
        client.close()
        if cluster is not None:
            cluster.close()
        counts.shutdown_seconds = time.perf_counter() - t_close  # workers retire, TensorFlow processes exit


def read_ahead_paths(paths: list[str], distance: int) -> list[str | None]:
    """Per shard path in run order, the shard its task has the kernel read ahead: the one `distance`
    tasks later, which starts about when this one's successors on every worker thread have started
    (None for the last `distance` shards, and for all of them when `distance` < 1)."""
    return [paths[k + distance] if distance >= 1 and k + distance < len(paths) else None for k in range(len(paths))]


def _add(counts: SurveyCounts, res: dict[str, Any], skipped: SkippedTable) -> None:
    if res["status"] == "skipped_done":
        counts.skipped_done += 1
    else:
        counts.done += 1
    counts.n_objects += int(res["n_objects"])
    counts.n_predicted += int(res["n_predicted"]) if res["status"] == "done" else 0
    for s in res["skipped"]:
        counts.skipped_by_reason[s["reason"]] = counts.skipped_by_reason.get(s["reason"], 0) + 1
    counts.n_skipped += len(res["skipped"])
    skipped.add(res["skipped"])
    counts.predict_seconds += float(res["seconds"])
    if res["status"] == "done":
        counts.load_seconds += float(res.get("load_seconds", 0.0))
        counts.tasks.append({"pid": res["pid"], "started": res["started"], "finished": res["finished"],
                             "n_predicted": int(res["n_predicted"]), "loaded_bundle": bool(res.get("loaded_bundle"))})
        counts.cpu_seconds += float(res.get("cpu_seconds", 0.0))
        for phase, sec in res.get("phase_seconds", {}).items():
            counts.phase_seconds[phase] = counts.phase_seconds.get(phase, 0.0) + float(sec)
    if "tf_threads" in res:
        counts.tf_threads.add(tuple(res["tf_threads"]))
    if "environ" in res and res["environ"] not in counts.worker_environ:
        counts.worker_environ.append(res["environ"])
    if "malloc" in res and res["malloc"] not in counts.worker_malloc:
        counts.worker_malloc.append(res["malloc"])
    if "dask_config" in res and res["dask_config"] not in counts.worker_dask_config:
        counts.worker_dask_config.append(res["dask_config"])
    pid = str(res["pid"])
    counts.worker_peak_rss_mb[pid] = max(counts.worker_peak_rss_mb.get(pid, 0.0), float(res["peak_rss_mb"]))


def steady_rate(tasks: list[dict[str, Any]]) -> float | None:
    """Galaxies/s once every worker is warm: per worker, the objects of its shards after the one(s)
    that loaded the bundle (TensorFlow import, bundle load, first graph traces) over the span
    from the first such shard's start to the last one's end; summed over workers. What a long
    survey (1e8 galaxies) sees; None when no worker ran a second shard. A later retrace (a
    batch size TensorFlow has not seen yet) stays in, so this errs low."""
    total, any_warm = 0.0, False
    by_worker: dict[Any, list[dict[str, Any]]] = {}
    for t in tasks:
        by_worker.setdefault(t["pid"], []).append(t)
    for worker_tasks in by_worker.values():
        warm = [t for t in worker_tasks if not t["loaded_bundle"]]
        if not warm:
            continue
        span = max(t["finished"] for t in warm) - min(t["started"] for t in warm)
        if span > 0:
            total += sum(t["n_predicted"] for t in warm) / span
            any_warm = True
    return total if any_warm else None


def _report(counts: SurveyCounts, seconds: float, t0_unix: float, bundle: BundleInfo, info: dict[str, Any],
            shards_dir: Path, out_dir: Path, store: str) -> dict[str, Any]:
    first_start = min((t["started"] for t in counts.tasks), default=None)  # after cluster start-up
    span = max(t["finished"] for t in counts.tasks) - first_start if first_start is not None else None
    steady = steady_rate(counts.tasks)
    return {
        "shards": {"total": counts.n_shards, "done": counts.done, "skipped_already_done": counts.skipped_done,
                   "failed": len(counts.failed)},
        "failed": counts.failed,
        # this run's skipped objects (shards predicted now); one row each in skipped_table
        "objects": {"total": counts.n_objects, "predicted": counts.n_predicted, "skipped": counts.n_skipped,
                    "skipped_by_reason": dict(sorted(counts.skipped_by_reason.items()))},
        "skipped_table": str(out_dir / SKIPPED_TABLE),
        "seconds": round(seconds, 3),
        "galaxies_per_s": round(counts.n_predicted / seconds, 1) if seconds > 0 and counts.n_predicted else None,
        # from the first shard task's start (after its worker loaded the bundle) to the last one's
        # end: without the cluster start-up, TensorFlow import and bundle load (bundle_load_seconds,
        # summed over workers), which a survey of 1e8 galaxies pays once per worker
        "task_span_seconds": round(span, 3) if span else None,
        "galaxies_per_s_tasks": round(counts.n_predicted / span, 1) if span and counts.n_predicted else None,
        "bundle_load_seconds": round(counts.load_seconds, 2),
        # start-up and steady state apart: cluster start (client side), run start -> first shard task
        # start (cluster start, worker spawn, TensorFlow import, bundle load), and the summed rate of
        # warm workers (`steady_rate`)
        "cluster_start_seconds": None if counts.cluster_start_seconds is None else round(counts.cluster_start_seconds, 2),
        "startup_seconds": round(first_start - t0_unix, 2) if first_start is not None else None,
        # closing the client and the LocalCluster after the last shard (part of `seconds`)
        "shutdown_seconds": None if counts.shutdown_seconds is None else round(counts.shutdown_seconds, 2),
        "galaxies_per_s_steady": round(steady, 1) if steady else None,
        # summed over shard tasks (worker CPU-bound time per phase; PHASES in survey/task.py)
        "task_phase_seconds": {k: round(v, 3) for k, v in counts.phase_seconds.items()},
        # the workers' CPU time in those tasks: near the phases' sum on an idle machine, less when
        # other processes share the cores
        "task_cpu_seconds": round(counts.cpu_seconds, 2),
        "worker_peak_rss_mb": {k: round(v, 1) for k, v in sorted(counts.worker_peak_rss_mb.items())},
        "cluster": {**info, "tf_intra_inter_op_threads": sorted(list(t) for t in counts.tf_threads),
                    "worker_environ": counts.worker_environ, "worker_malloc": counts.worker_malloc,
                    "worker_dask_config": counts.worker_dask_config},
        # `path`: the bundle `open_survey` decodes with unless told otherwise
        "model": {"name": bundle.name, "version": bundle.version, "bundle_hash": bundle.bundle_hash,
                  "sigma_method": bundle.sigma_method, **bundle.provenance,
                  "path": str(Path(bundle.bundle_dir).resolve())},
        "store": store,
        "shards_dir": str(shards_dir), "catalogue": str(out_dir / CATALOGUE_DIR),
    }
