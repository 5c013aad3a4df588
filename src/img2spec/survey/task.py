"""One survey task: a cutout shard in, its output shard and catalogue part out (runs on a Dask worker).

A worker loads the bundle once (`worker_predictor`, cached per process and keyed on the
bundle hash and inference options) with TensorFlow's thread pools sized before its first
op, so `n_workers` workers of `threads_per_worker` threads use the cores without
oversubscribing them. The task writes the catalogue part first and the output shard last
(a latent shard for the `compact` store, a spectra shard for `spectra`: `survey.store`),
both atomically and durably (each file fsynced before its rename, its directories after):
both stamped with the bundle hash, the input shard's content hash and the store (HDF5
attributes, Parquet key-value metadata), and a shard is done only when both are there with
this bundle's, this input's and this store's stamps (`is_done`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..io.atomic import atomic_path
from ..io.shards import (CutoutShard, LatentShard, prefetch, read_attrs, read_cutout_shard, write_latent_shard,
                         write_spectra_shard)
from ..predict.bundle_info import BundleInfo
from ..predict.predictor import BatchResult, Predictor
from .catalogue import catalogue_frame
from .store import batch_groups, output_shard, store_of

log = logging.getLogger(__name__)
CATALOGUE_DIR = "catalogue"
CATALOGUE_SUFFIX = ".parquet"
CATALOGUE_STAMP_KEY = b"img2spec_survey"
"""Parquet key-value metadata of a catalogue part: JSON of its bundle hash, input hash, store and row count."""
LEGACY_STORE = "spectra"
"""Store of a catalogue stamp without one (written before the compact store existed)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the client's bundle and predict as the client would."""

    path: str
    bundle_hash: str
    sigma_method: str
    n_samples: int
    intra_op_threads: int = 1
    inter_op_threads: int = 1

    @classmethod
    def of(cls, bundle: BundleInfo | Predictor, intra_op_threads: int = 1, inter_op_threads: int = 1) -> "ModelSpec":
        return cls(str(Path(bundle.bundle_dir).resolve()), bundle.bundle_hash, bundle.sigma_method,
                   bundle.n_samples, intra_op_threads, inter_op_threads)


REPORTED_ENVIRON = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables of the worker that decide its speed (BLAS threads), reported in survey.json."""
WORKER_MALLOC_THRESHOLDS = {"mmap_threshold": 32 * 2**20, "trim_threshold": 128 * 2**20}
"""glibc malloc thresholds a worker sets when it loads the bundle (`io.processes.set_malloc_thresholds`),
in bytes: allocations below 32 MiB (glibc's maximum on 64-bit) come from the heap, where freed
blocks are reused, and free memory above 128 MiB at the top of the heap goes back to the system:
what the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables set, but those
glibc reads only when a process starts (not in a worker forked from a running process).

Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins the mmap
threshold at 128 KiB, so every batch-sized numpy temporary of a task was a fresh mmap,
page-faulted in and unmapped again: measured on one 459-object shard in one process, 133,000
minor faults and 1.25-1.38 s CPU per shard against 200-12,000 faults and 0.70-0.85 s with these
values (0.65-0.83 s with glibc's own defaults). Set in the worker itself, they hold for workers
of any start method and of clusters `img2spec survey` did not start."""
WORKER_DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing": False,
}
"""Dask settings of the LocalCluster `img2spec survey` starts (`survey.worker_profiling`: false):
fewer wake-ups of the workers' event loops while a shard task computes. By default a worker's
event loop samples the task's stack for the dashboard's Profile page every 10 ms, checks its own
latency every 20 ms, polls its memory every 100 ms and the system every 500 ms; each wake-up takes
the GIL from the task thread. Measured alternately on the 16,000 galaxies of `make bench` (23
pairs of whole `img2spec survey` runs at 2 workers: 8 switched by `survey.worker_profiling`, 15 by
DASK_* environment variables): 1,597 against 1,733 galaxies/s steady on average (1.085x), task CPU
20.6 against 19.2 s; single runs ranged over 1,378-2,029 galaxies/s as the host drifted. The
profiler alone, or the other four alone, moved the rate by less than that drift (five runs each).
Work stealing has nothing to balance here: the tasks are independent shards of similar size,
queued on the scheduler until a worker thread frees up."""
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt(3) parameter numbers from glibc's <malloc.h>."""

_PREDICTORS: dict[ModelSpec, Predictor] = {}
_WORKER_STATE: dict[str, Any] = {"malloc": None}
"""Per process: the malloc thresholds in force (None: not set, no glibc), reported with each task."""
_LOAD_LOCK = threading.Lock()


def _dask_threads() -> int | None:
    """Threads of the Dask worker running this task (None outside a worker): the runtime's intra-op pool."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def worker_dask_config() -> dict[str, Any]:
    """The values of `WORKER_DASK_CONFIG`'s keys in this process's Dask config (survey.json shows what the workers ran with)."""
    import dask

    return {key: dask.config.get(key, None) for key in WORKER_DASK_CONFIG}


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc malloc's mmap and trim thresholds of this process (mallopt(3)); False where there
    is no glibc (not Linux, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return (libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1)
    except (OSError, AttributeError):
        return False


def worker_predictor(spec: ModelSpec) -> Predictor:
    """The bundle of `spec`, loaded once per process and checked against the client's hash."""
    with _LOAD_LOCK:
        pred = _PREDICTORS.get(spec)
        if pred is None:
            from ..logs import quiet_tensorflow
            from ..predict.bundle import BundleError

            quiet_tensorflow()
            _WORKER_STATE["malloc"] = WORKER_MALLOC_THRESHOLDS if set_malloc_thresholds(**WORKER_MALLOC_THRESHOLDS) else None
            # the bundle's runtime (its exported graphs: no TensorFlow) sized to this worker's threads
            pred = Predictor.from_path(spec.path, threads=(_dask_threads() or spec.intra_op_threads,
                                                           spec.inter_op_threads))
            if pred.bundle_hash != spec.bundle_hash:
                raise BundleError(f"{spec.path}: bundle hash {pred.bundle_hash[:16]} on this worker, "
                                  f"{spec.bundle_hash[:16]} on the client (a different bundle at that path)")
            pred = pred.with_options(sigma_method=spec.sigma_method, n_samples=spec.n_samples)
            _PREDICTORS[spec] = pred
        return pred


def output_paths(out_dir: str | Path, rel: str) -> tuple[Path, Path]:
    """(output shard (latent or spectra), catalogue part) of the cutout shard at `rel` (e.g. 'healpix=12/part-00000.hdf5')."""
    out_dir = Path(out_dir)
    spectra = out_dir / rel
    catalogue = (out_dir / CATALOGUE_DIR / rel).with_suffix(CATALOGUE_SUFFIX)
    return spectra, catalogue


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (a directory: the names created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(path: str | Path, top: str | Path) -> None:
    """fsync every directory from `path`'s parent up to `top` (included): a renamed file's name,
    and the names of directories created for it, are on disk."""
    path, top = Path(path).absolute(), Path(top).absolute()
    d = path.parent
    while True:
        fsync_path(d)
        if d == top or top not in d.parents:
            break
        d = d.parent


def write_durably(path: str | Path, write: Callable[[Path], None], top: str | Path) -> None:
    """`write(tmp)` into a temporary beside `path`, fsync it, rename it onto `path`, fsync the
    directories up to `top`. The io writers rename without fsync; a file that counts as done
    must survive a power cut, so the durability is added here around them."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
        fsync_path(tmp)
    fsync_dirs(path, top)


def write_catalogue_part(path: str | Path, frame: pd.DataFrame, stamp: dict[str, Any], top: str | Path) -> None:
    """The catalogue part `frame` as Parquet with `stamp` (and its row count) in the file's metadata, durably."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {**(table.schema.metadata or {}),
            CATALOGUE_STAMP_KEY: json.dumps({**stamp, "n_rows": len(frame)}).encode()}
    table = table.replace_schema_metadata(meta)
    write_durably(path, lambda tmp: pq.write_table(table, tmp), top)


def catalogue_stamp(path: str | Path) -> dict[str, Any] | None:
    """The stamp of a catalogue part (its footer only), or None when missing, unreadable or unstamped."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        raw = (md.metadata or {}).get(CATALOGUE_STAMP_KEY)
        stamp = json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("n_rows") != md.num_rows:
        return None
    return stamp


def is_done(out_dir: str | Path, rel: str, bundle_hash: str, input_hash: str | None,
            store: str = "compact") -> dict[str, Any] | None:
    """The attributes of a finished output of `rel` by this bundle from this input in `store`, else None.

    Finished: the output shard (of `store`'s format) and the catalogue part both exist, both
    stamped with this bundle hash and this input hash, the catalogue stamped with `store` and
    with one row per input object. An output of the other store is not done (the client refuses
    to mix stores in one directory: `run.mixed_store_outputs`)."""
    if input_hash is None:
        return None
    shard, catalogue = output_paths(out_dir, rel)
    attrs = read_attrs(shard) if shard.exists() else None
    if (attrs is None or store_of(attrs) != store or attrs.get("bundle_hash") != bundle_hash
            or attrs.get("input_hash") != input_hash):
        return None
    stamp = catalogue_stamp(catalogue)
    if (stamp is None or stamp.get("bundle_hash") != bundle_hash or stamp.get("input_hash") != input_hash
            or stamp.get("store", LEGACY_STORE) != store or stamp.get("n_rows") != attrs.get("n_input_objects")):
        return None
    return attrs


PHASES = ("read", "prepare", "predict", "catalogue", "write")
"""Where a task's time goes (`predict_shard`'s `phase_seconds`, summed in survey.json): reading the
shard, checks + stretch (`Predictor.prepare_stack`), network + sigma, catalogue rows and
measurements, the two atomic writes."""


class _Clock:
    """Seconds per phase of one task (perf_counter; the overhead is two calls per phase)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._t = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to `phase`."""
        now = time.perf_counter()
        self.seconds[phase] += now - self._t
        self._t = now


def _cpu_seconds() -> float:
    """CPU time of this process (user + system; the worker's own threads are a small share)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _predict_in_batches(predictor: Predictor, shard: CutoutShard, batch_size: int, clock: _Clock,
                        store: str) -> tuple[BatchResult, np.ndarray, dict, np.ndarray]:
    """Check, stretch and predict `batch_size` objects at a time (memory: one batch of images).

    The compact store keeps latents, not spectra: its batches decode only what the catalogue
    measures (`Predictor.predict_batch(measure_only=True)`).

    Returns the predictions of the kept objects in shard order, their indices,
    {index: (code, detail)} of the rejected ones, and each kept object's decode group (the rows
    one decode call saw: `store.batch_groups`).
    """
    parts: list[BatchResult] = []
    groups: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    rejected: dict[int, tuple[str, str]] = {}
    for start in range(0, len(shard), batch_size):
        sl = slice(start, start + batch_size)
        # (n, bands, H, W) as packed -> (n, H, W, bands) as the network reads it
        stack = np.moveaxis(shard.image_flux[sl], 1, -1)
        prepared = predictor.prepare_stack(stack, shard.magzp[sl], shard.bands, shard.pixel_scale[sl],
                                           shard.object_id[sl])
        clock.lap("prepare")
        # the shard's z (NaN: unknown) is the z a rest-frame bundle decodes at, and measures at
        z = None if shard.z is None else np.asarray(shard.z[sl], np.float64)[prepared.kept]
        # a hybrid bundle's catalogue photometry (None: images alone; NaN rows fall back, logged)
        phot = None if predictor.photometry_bands is None else shard.magnitudes(predictor.photometry_bands, sl)
        parts.append(predictor.predict_batch(prepared.images, batch_size=batch_size, z=z,
                                             photometry=None if phot is None else phot[prepared.kept],
                                             object_ids=shard.object_id[sl][prepared.kept],
                                             measure_only=store == "compact"))
        groups.append(batch_groups(parts[-1], sum(len(np.unique(g)) for g in groups)))  # numbered on
        clock.lap("predict")
        kept.append(prepared.kept + start)
        rejected.update({i + start: r for i, r in prepared.rejected.items()})
    if not parts:  # an empty shard
        parts.append(predictor.predict_batch(np.zeros((0, *predictor.input_shape), np.float32)))
    result = BatchResult.concat(parts)
    decode_group = np.concatenate(groups) if groups else np.zeros(0, np.int32)
    return result, (np.concatenate(kept) if kept else np.zeros(0, np.int64)), rejected, decode_group


def predict_shard(shard_path: str, rel: str, out_dir: str, spec: ModelSpec, batch_size: int | None = None,
                  store: str = "compact", read_ahead: str | None = None) -> dict[str, Any]:
    """Predict every usable cutout of one shard into `store`; returns the task's counts (for survey.json).
    `read_ahead`: a shard a later task reads, handed to the kernel to read in the background
    (`io.shards.prefetch`) while this one computes."""
    t0 = time.perf_counter()
    if read_ahead is not None:
        prefetch(read_ahead)
    base: dict[str, Any] = {"shard": rel, "pid": os.getpid()}
    input_attrs = read_attrs(shard_path) or {}
    done = is_done(out_dir, rel, spec.bundle_hash, input_attrs.get("content_hash"), store)
    if done is not None:
        return {**base, "status": "skipped_done", "n_objects": int(done.get("n_input_objects", 0)),
                "n_predicted": int(done.get("n_objects", 0)), "skipped": [], "seconds": 0.0,
                "peak_rss_mb": _peak_rss_mb()}
    t_load = time.perf_counter()
    base["loaded_bundle"] = spec not in _PREDICTORS  # this worker's first shard: bundle load and graph traces
    predictor = worker_predictor(spec)
    base["load_seconds"] = time.perf_counter() - t_load  # > 0 only for a worker's first shard
    base["tf_threads"] = list(predictor.threads)  # survey.json shows that workers do not oversubscribe the cores
    base["environ"] = {k: os.environ.get(k) for k in REPORTED_ENVIRON}
    base["malloc"] = _WORKER_STATE["malloc"]
    base["dask_config"] = worker_dask_config()
    base["started"] = time.time()  # after the bundle load: the steady-state clock starts here
    clock, cpu0 = _Clock(), _cpu_seconds()
    shard = read_cutout_shard(shard_path)
    clock.lap("read")
    batch_size = batch_size or predictor.batch_size
    result, kept, rejected, decode_group = _predict_in_batches(predictor, shard, batch_size, clock, store)
    predicted = np.zeros(len(shard), bool)
    predicted[kept] = True
    reasons = [rejected[i][0] if i in rejected else "" for i in range(len(shard))]
    norm, norm_mag = np.full(len(shard), np.nan), np.full(len(shard), np.nan, np.float32)
    if shard.rKronMag is not None and predictor.manifest["normalisation"]["band"] == "r":
        norm = np.asarray(predictor.norm_from_mag(shard.rKronMag), np.float64)
        norm_mag = np.asarray(shard.rKronMag, np.float32)
    frame = catalogue_frame(
        object_id=shard.object_id, ra=shard.ra, dec=shard.dec, shard=rel, norm=norm,
        skip_reason=reasons, predicted=predicted, wave=predictor.wave, flux=result.flux, sigma=result.sigma,
        z_input=shard.z, z_pred=result.z, z_pred_err=result.z_err, frame=predictor.frame,
        z_used=result.z_used, z_given=result.z_given, rest_wave=result.rest_wave, rest_flux=result.rest_flux,
        rest_sigma=result.rest_sigma, measure_params=predictor.measure_params, rest_columns=result.rest_columns,
        class_draws=predictor.class_draws(result), class_priors=predictor.class_priors,
    )
    if result.photometry_used is not None:  # hybrid bundle: which objects it saw with catalogue photometry
        frame["photometry_used"] = np.isin(np.arange(len(shard)), kept[result.photometry_used])
    clock.lap("catalogue")
    output_path, catalogue_path = output_paths(out_dir, rel)
    input_hash = str(input_attrs.get("content_hash"))
    stamp = {"bundle_hash": spec.bundle_hash, "input_hash": input_hash, "store": store}
    write_catalogue_part(catalogue_path, frame, stamp, out_dir)
    attrs = {
        "bundle_hash": spec.bundle_hash, "input_hash": input_hash,
        "input_shard": rel, "n_input_objects": len(shard), "model_name": predictor.name,
        "model_version": predictor.version, "sigma_method": predictor.sigma_method,
        "sigma_scale": predictor.sigma_scale, "flux_unit": "normalised (multiply by catalogue norm for 1e-17 erg/s/cm2/A)",
    }
    output = output_shard(store, result=result, groups=decode_group, object_id=shard.object_id[kept],
                          ra=shard.ra[kept], dec=shard.dec[kept], norm_mag=norm_mag[kept], wave=predictor.wave,
                          attrs=attrs, predictor=predictor, batch_size=batch_size)
    write = write_latent_shard if isinstance(output, LatentShard) else write_spectra_shard
    # last: an output shard under its final name (with a stamped catalogue beside it) marks the shard done
    write_durably(output_path, lambda tmp: write(tmp, output), out_dir)
    clock.lap("write")
    skipped = [{"shard": rel, "object_id": str(shard.object_id[i]), "reason": code, "detail": detail}
               for i, (code, detail) in sorted(rejected.items())]
    return {**base, "status": "done", "n_objects": len(shard), "n_predicted": len(kept), "skipped": skipped,
            "seconds": time.perf_counter() - t0, "finished": time.time(), "peak_rss_mb": _peak_rss_mb(),
            "phase_seconds": clock.seconds, "cpu_seconds": _cpu_seconds() - cpu0}
