"""`img2spec survey`: predict every shard on Dask distributed, one task per shard, and write `survey.json`.

Default: a LocalCluster on this machine (`survey.n_workers` processes of
`survey.threads_per_worker` threads, dashboard on 127.0.0.1 only); `scheduler` joins an
existing cluster (dask-jobqueue SLURMCluster, the Dask Kubernetes operator), whose
workers must see the shard, output and bundle paths. Shards already predicted by the
same bundle from the same input are skipped before any worker starts, so a rerun is a
no-op and a killed run resumes. Dask retries a failed task `survey.retries` times and
reschedules the task of a worker that died; a shard that still fails is reported in
`survey.json`, the others finish.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Params
from ..io.atomic import remove_stale_temps, write_json
from ..io.processes import die_with_parent
from ..io.shards import iter_parts, read_attrs
from ..logs import progress
from ..predict.predictor import Predictor
from .pack import reason_counts
from ..predict.inputs import Skip
from .task import CATALOGUE_DIR, ModelSpec, is_done, output_paths, predict_shard

log = logging.getLogger(__name__)
SURVEY_REPORT = "survey.json"
DASHBOARD_HOST = "127.0.0.1"


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
    skipped: list[Skip] = field(default_factory=list)
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    predict_seconds: float = 0.0
    load_seconds: float = 0.0
    first_start: float | None = None
    """Unix time the first shard task started (after cluster start-up)."""
    last_end: float | None = None


def _die_with_client_plugin():
    """A Dask worker plugin for the LocalCluster: its workers exit when the client process is killed."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class DieWithClient(WorkerPlugin):
        name = "img2spec-die-with-client"

        def setup(self, worker) -> None:
            die_with_parent()

    return DieWithClient()


def _jobs(shards_dir: Path) -> list[ShardJob]:
    jobs = []
    for healpix, path, rel in iter_parts(shards_dir):
        attrs = read_attrs(path) or {}
        jobs.append(ShardJob(healpix, path, rel, int(attrs.get("n_objects", 0) or 0), attrs.get("content_hash")))
    return jobs


def _cleanup(out_dir: Path, jobs: list[ShardJob]) -> None:
    """Temporaries left by killed writers (a kill -9 of this client or of a worker) in the output tree."""
    dirs = {output_paths(out_dir, j.rel)[0].parent for j in jobs} | {output_paths(out_dir, j.rel)[1].parent for j in jobs}
    for d in sorted(dirs):
        remove_stale_temps(d)


def _local_cluster(params: Params):
    from distributed import LocalCluster

    sp = params.survey
    return LocalCluster(
        n_workers=sp.n_workers, threads_per_worker=sp.threads_per_worker, processes=True,
        memory_limit=sp.memory_limit, host=DASHBOARD_HOST, dashboard_address=f"{DASHBOARD_HOST}:{sp.dashboard_port}",
        silence_logs=logging.WARNING,
    )


def run_survey(
    shards_dir: str | Path, predictor: Predictor, out_dir: str | Path, params: Params,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Predict every shard under `shards_dir` into `out_dir`; returns (and writes) the survey report."""
    t0 = time.perf_counter()
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    if not shards_dir.is_dir():
        raise SurveyError(f"{shards_dir}: no such shard directory (make one with `img2spec pack`)")
    jobs = _jobs(shards_dir)
    if not jobs:
        raise SurveyError(f"{shards_dir}: no shards (healpix=<N>/<part>.hdf5); make them with `img2spec pack`")
    out_dir.mkdir(parents=True, exist_ok=True)
    if scheduler is None:  # pids in temporary names mean something only on this machine
        _cleanup(out_dir, jobs)
    sp = params.survey
    spec = ModelSpec.of(predictor, sp.threads_per_worker, sp.tf_inter_op_threads)
    counts = SurveyCounts(n_shards=len(jobs))
    todo: list[ShardJob] = []
    for job in jobs:
        done = is_done(out_dir, job.rel, predictor.bundle_hash, job.input_hash)
        if done is None:
            todo.append(job)
        else:
            counts.skipped_done += 1
            counts.n_objects += int(done.get("n_input_objects", job.n_objects))
    info: dict[str, Any] = {"scheduler": scheduler or "LocalCluster", "n_workers": 0, "threads_per_worker": None}
    if todo:
        _run_jobs(todo, out_dir, spec, params, scheduler, counts, info)
        if scheduler is None:
            _cleanup(out_dir, jobs)
    seconds = time.perf_counter() - t0
    report = _report(counts, seconds, predictor, info, shards_dir, out_dir)
    write_json(out_dir / SURVEY_REPORT, report)
    for f in counts.failed:
        log.error("shard %s failed: %s", f["shard"], f["reason"])
    log.info("survey: %d shards (%d done, %d already done, %d failed), %d objects predicted in %.1f s -> %s",
             counts.n_shards, counts.done, counts.skipped_done, len(counts.failed), counts.n_predicted, seconds, out_dir)
    return report


def _run_jobs(todo: list[ShardJob], out_dir: Path, spec: ModelSpec, params: Params, scheduler: str | None,
              counts: SurveyCounts, info: dict[str, Any]) -> None:
    from distributed import Client, as_completed

    sp = params.survey
    cluster = _local_cluster(params) if scheduler is None else None
    client = Client(cluster) if cluster is not None else Client(scheduler)
    try:
        if cluster is not None:
            client.register_plugin(_die_with_client_plugin())
        nthreads = client.nthreads()
        info["n_workers"] = len(nthreads)
        info["threads_per_worker"] = sorted(set(nthreads.values()))
        info["dashboard"] = client.dashboard_link
        futures = {
            client.submit(predict_shard, str(job.path.resolve()), job.rel, str(out_dir.resolve()), spec, sp.batch_size,
                          key=f"img2spec-shard-{job.rel}-{spec.bundle_hash[:12]}", retries=sp.retries, pure=False): job
            for job in todo
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
                    _add(counts, res)
                shard_bar.update(1)
                obj_bar.update(job.n_objects)
                fut.release()
        finally:
            shard_bar.close()
            obj_bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _add(counts: SurveyCounts, res: dict[str, Any]) -> None:
    if res["status"] == "skipped_done":
        counts.skipped_done += 1
    else:
        counts.done += 1
    counts.n_objects += int(res["n_objects"])
    counts.n_predicted += int(res["n_predicted"]) if res["status"] == "done" else 0
    counts.skipped.extend(Skip(s["file"], s["reason"], s["detail"]) for s in res["skipped"])
    counts.predict_seconds += float(res["seconds"])
    if res["status"] == "done":
        counts.load_seconds += float(res.get("load_seconds", 0.0))
        counts.first_start = min(counts.first_start or res["started"], res["started"])
        counts.last_end = max(counts.last_end or res["finished"], res["finished"])
    pid = str(res["pid"])
    counts.worker_peak_rss_mb[pid] = max(counts.worker_peak_rss_mb.get(pid, 0.0), float(res["peak_rss_mb"]))


def _report(counts: SurveyCounts, seconds: float, predictor: Predictor, info: dict[str, Any],
            shards_dir: Path, out_dir: Path) -> dict[str, Any]:
    span = (counts.last_end - counts.first_start) if counts.first_start is not None else None
    return {
        "shards": {"total": counts.n_shards, "done": counts.done, "skipped_already_done": counts.skipped_done,
                   "failed": len(counts.failed)},
        "failed": counts.failed,
        "objects": {"total": counts.n_objects, "predicted": counts.n_predicted, "skipped": len(counts.skipped),
                    "skipped_by_reason": reason_counts(counts.skipped)},
        "skipped": [s.as_dict() for s in counts.skipped],
        "seconds": round(seconds, 3),
        "galaxies_per_s": round(counts.n_predicted / seconds, 1) if seconds > 0 and counts.n_predicted else None,
        # from the first shard task's start (after its worker loaded the bundle) to the last one's
        # end: without the cluster start-up, TensorFlow import and bundle load (bundle_load_seconds,
        # summed over workers), which a survey of 1e8 galaxies pays once per worker
        "task_span_seconds": round(span, 3) if span else None,
        "galaxies_per_s_tasks": round(counts.n_predicted / span, 1) if span and counts.n_predicted else None,
        "bundle_load_seconds": round(counts.load_seconds, 2),
        "worker_peak_rss_mb": {k: round(v, 1) for k, v in sorted(counts.worker_peak_rss_mb.items())},
        "cluster": info,
        "model": {"name": predictor.name, "version": predictor.version, "bundle_hash": predictor.bundle_hash,
                  "sigma_method": predictor.sigma_method, **predictor.provenance},
        "shards_dir": str(shards_dir), "catalogue": str(out_dir / CATALOGUE_DIR),
    }
