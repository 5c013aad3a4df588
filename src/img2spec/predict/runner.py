"""Batch inference over files: stream cutouts, predict in batches, write FITS/PNG/table, report skips.

Memory stays at one batch of images plus its spectra, whatever the number of inputs.
A bad input (unreadable, missing band, wrong shape, NaN centre, ...) is recorded with
its reason and skipped; the batch goes on. The summary (also `summary.json` in the
output directory) counts everything.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..config import Params
from ..io.atomic import remove_stale_temps, write_json
from ..io.fastfits import fast_read_cutout
from ..io.processes import guarded_initializer
from ..io.ps1_cutout import CutoutFormatError, read_cutout
from ..logs import progress
from ..io.ps1_single import BandGroup, read_band_group
from .inputs import (ObjectMeta, Skip, expand_inputs, fetch_table_cutouts, group_single_band, read_object_meta,
                     stack_photometry)
from .plot import plot_prediction
from .predictor import BatchResult, InputError, Predictor, check_code
from .measure_columns import Z_PREDICTED, MeasureTarget, measurement_target, target_columns
from .writers import (Z_FROM_CATALOGUE, Z_FROM_PHOTOZ, Z_UNKNOWN, ObjectInfo, RestSpectrum, ScaledPrediction,
                      TableWriter, output_stem, prediction_record, redshift_columns, scale, write_prediction)

log = logging.getLogger(__name__)
SUMMARY_FILE = "summary.json"
WRITER_POOL_MIN = 64
"""Below this many inputs, starting writer processes costs more than it saves."""
TITLE_ID_CHARS = 40
"""A plot title shows at most this much of an object id (the FITS header keeps it whole)."""


@dataclass
class RunOptions:
    out_dir: Path
    table: Path | None = None
    plot: bool = False
    per_object: bool = True
    """One FITS per object (astropy writes ~50/s); False with `table` for survey-scale runs."""
    batch_size: int | None = None
    n_samples: int | None = None
    sigma_method: str | None = None
    seed: int | None = None
    catalogue: Path | None = None
    """CSV with objid and any of z, <band>KronMag: z places the lines, the magnitude gives 1e-17 units."""
    mags: Path | None = None
    """Deprecated name of `catalogue`."""
    dpi: int = 110
    fetch_params: Params | None = None
    """Params for fetching cutouts of ra/dec tables (sdss.http, data.bands)."""
    n_writers: int = 1
    """Processes writing the per-object FITS/PNG files (astropy and matplotlib are the slow part);
    1 = write in this process. A pool is only started for more than WRITER_POOL_MIN inputs."""

    def __post_init__(self) -> None:
        # accept str paths from the Python API
        self.out_dir = Path(self.out_dir)
        self.table = Path(self.table) if self.table is not None else None
        if self.catalogue is None and self.mags is not None:
            self.catalogue = self.mags
        self.catalogue = Path(self.catalogue) if self.catalogue is not None else None


@dataclass
class Summary:
    n_inputs: int = 0
    n_predicted: int = 0
    n_scaled: int = 0
    """Predictions put in 1e-17 erg/s/cm^2/A with a user magnitude (others stay normalised)."""
    skipped: list[Skip] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    table: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        return {
            "n_inputs": self.n_inputs, "n_predicted": self.n_predicted, "n_skipped": len(self.skipped),
            "n_flux_calibrated": self.n_scaled,
            "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped": [s.as_dict() for s in self.skipped], "table": self.table,
            "seconds": round(self.seconds, 3),
            "objects_per_s": round(self.n_predicted / self.seconds, 2) if self.seconds > 0 else None,
        }


def _load_meta(predictor: Predictor, opts: RunOptions) -> ObjectMeta:
    if opts.catalogue is None:
        return ObjectMeta()
    return read_object_meta(opts.catalogue, predictor.manifest["normalisation"]["band"])


def _remove_stale(opts: RunOptions) -> int:
    """Temporaries that killed runs left in the output places (their writer pid is gone)."""
    dirs = {opts.out_dir, opts.out_dir / "cutouts"}
    if opts.table is not None:
        dirs.add(opts.table.parent)
    return sum(len(remove_stale_temps(d)) for d in dirs)


def run_predict(predictor: Predictor, inputs: Iterable[str | Path], opts: RunOptions) -> Summary:
    """Predict every cutout in `inputs` (files, directories, ra/dec CSV tables) into `opts.out_dir`."""
    t0 = time.perf_counter()
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not opts.per_object and opts.table is None and not opts.plot:
        raise ValueError("nothing to write: --no-per-object needs --table (or --plot)")
    n_stale = _remove_stale(opts)
    # Overrides become the predictor's defaults, so the FITS headers state what was used.
    predictor = predictor.with_options(sigma_method=opts.sigma_method, n_samples=opts.n_samples)
    files, tables, skipped = expand_inputs(inputs)
    # single-band files (PS1 cutout service) become one input per object
    files, band_skips = group_single_band(files, tuple(predictor.manifest["input"]["bands"]))
    summary = Summary(skipped=[*skipped, *band_skips])
    meta = _load_meta(predictor, opts)
    for table in tables:
        if opts.fetch_params is None:
            summary.skipped.append(Skip(str(table), "table_without_params",
                                        "ra/dec table given but no params to fetch cutouts with"))
            continue
        h, w, _ = predictor.input_shape
        try:
            fetched, tmeta, tskips = fetch_table_cutouts(
                table, out_dir / "cutouts", opts.fetch_params, h,
                float(predictor.manifest["input"]["pixel_scale_arcsec"]),
                predictor.manifest["normalisation"]["band"],
            )
        except (ValueError, RuntimeError, OSError) as exc:
            summary.skipped.append(Skip(str(table), "table_unusable", f"ra/dec table unusable: {exc}"))
            continue
        files.extend(fetched)
        summary.skipped.extend(tskips)
        tmeta.update(meta)  # an explicit --catalogue wins over the ra/dec table's columns
        meta = tmeta
    summary.n_inputs = len(files) + len(summary.skipped)

    batch_size = opts.batch_size or predictor.batch_size
    writer = TableWriter(opts.table, predictor) if opts.table else None
    seen: set[str] = set()
    batch: list[tuple[ObjectInfo, np.ndarray]] = []
    pool = _writer_pool(opts, len(files))
    # The bar counts objects done (written or skipped), so it covers prediction and writing.
    bar = progress(total=len(files), desc="predict", unit="obj")
    writes = _Writes(bar)
    try:
        for path in files:
            item = _load_one(predictor, path, meta, seen, summary)
            if item is None:
                bar.update(1)
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                _flush(predictor, batch, opts, summary, writer, pool, writes)
                batch = []
        if batch:
            _flush(predictor, batch, opts, summary, writer, pool, writes)
        writes.wait()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if writer is not None:
        done = writer.close()
        summary.table = str(done) if done else None
    summary.seconds = time.perf_counter() - t0
    report = summary.as_dict()
    report["stale_temporaries_removed"] = n_stale
    report["model"] = {"name": predictor.name, "version": predictor.version,
                       "bundle_hash": predictor.bundle_hash, **predictor.provenance}
    write_json(out_dir / SUMMARY_FILE, report)
    for s in summary.skipped:
        log.warning("skipped %s: %s%s", s.file, s.reason, f" ({s.detail})" if s.detail else "")
    log.info(
        "predicted %d of %d inputs (%d skipped) in %.1f s -> %s",
        summary.n_predicted, summary.n_inputs, len(summary.skipped), summary.seconds, out_dir,
    )
    return summary


def _load_one(
    predictor: Predictor, path: Path, meta: ObjectMeta, seen: set[str], summary: Summary
) -> tuple[ObjectInfo, np.ndarray] | None:
    """Read, check and preprocess one cutout; None (and a recorded skip) if it is unusable."""
    def skip(code: str, detail: str) -> None:
        summary.skipped.append(Skip(str(path), code, detail.replace(f"{path}: ", "")))

    try:
        bands = tuple(predictor.manifest["input"]["bands"])
        # the fast plain-FITS reader; astropy for anything else (and its errors)
        cutout = (read_band_group(path) if isinstance(path, BandGroup)
                  else fast_read_cutout(path, bands) or read_cutout(path, bands))
        reason = predictor.check_cutout(cutout)
        if reason is not None:
            skip(check_code(reason), f"rejected by image checks: {reason}")
            return None
        image = predictor.preprocess_cutout(cutout)
    except CutoutFormatError as exc:
        skip(getattr(exc, "reason", None) or "unreadable_cutout", str(exc))
        return None
    except InputError as exc:
        skip("preprocessing_failed", str(exc))
        return None
    except (ValueError, OSError, KeyError) as exc:  # anything else a malformed file can raise
        skip("unreadable_cutout", f"unusable cutout: {exc}")
        return None
    objid = str(cutout.objid)
    if objid in seen:
        skip("duplicate_objid", f"duplicate object id {objid} (already predicted)")
        return None
    if objid in meta.bad:
        skip(*meta.bad[objid])
        return None
    seen.add(objid)
    z = meta.z.get(objid)
    info = ObjectInfo(objid=objid, source=str(path), ra=cutout.ra, dec=cutout.dec, z=z, mag=meta.mag.get(objid),
                      photometry=meta.photometry.get(objid),
                      z_source=Z_FROM_CATALOGUE if z is not None else Z_UNKNOWN)
    return info, image


def _writer_pool(opts: RunOptions, n_inputs: int) -> ProcessPoolExecutor | None:
    if opts.n_writers <= 1 or n_inputs <= WRITER_POOL_MIN or not (opts.per_object or opts.plot):
        return None
    # spawn, not fork: forking a process that runs TensorFlow threads can deadlock.
    # Writers die with this process: a kill -9 of predict leaves no orphan.
    initializer, initargs = guarded_initializer()
    return ProcessPoolExecutor(max_workers=opts.n_writers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs)


class _Writes:
    """The batch of writes in flight (at most one: bounded memory) and the progress it makes."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.futures: list[Future] = []
        self.n_objects = 0

    def wait(self) -> None:
        for fut in self.futures:
            fut.result()  # re-raises a failed write (disk full, permissions): fatal, not a skip
        self.bar.update(self.n_objects)
        self.futures, self.n_objects = [], 0

    def started(self, futures: list, n_objects: int) -> None:
        self.futures = [f for f in futures if isinstance(f, Future)]
        self.n_objects = n_objects


def _flush(
    predictor: Predictor, batch: list[tuple[ObjectInfo, np.ndarray]], opts: RunOptions,
    summary: Summary, writer: TableWriter | None, pool: ProcessPoolExecutor | None, writes: _Writes,
) -> None:
    """Predict one batch and write it; with a pool, writes run while the next batch is predicted."""
    run = (lambda fn, *a, **k: pool.submit(fn, *a, **k)) if pool is not None else (lambda fn, *a, **k: fn(*a, **k))
    images = np.stack([img for _, img in batch])
    user_z = np.array([np.nan if info.z is None else info.z for info, _ in batch], np.float64)
    phot = stack_photometry([info.photometry for info, _ in batch], predictor.photometry_bands)  # hybrid bundles
    pred = predictor.predict_batch(images, batch_size=opts.batch_size, seed=opts.seed, z=user_z, photometry=phot,
                                   object_ids=[info.objid for info, _ in batch])
    target, predictions = scaled_predictions(predictor, [info for info, _ in batch], pred, user_z)
    writes.wait()  # the previous batch's files are done before this one's start
    futures: list = []
    infos, scaled, outs = [], [], []
    for k, ((info, image), sp) in enumerate(zip(batch, predictions)):
        photoz = target.z_source[k] == Z_PREDICTED  # no user z: the photo-z places the lines
        z_err = None if pred.z is None else float(pred.z_err[k])
        stem = output_stem(info.objid)
        fits_path = opts.out_dir / f"{stem}.fits"
        if opts.per_object:
            futures.append(run(write_prediction, *prediction_record(fits_path, predictor, info, sp)))
        if opts.plot:
            label = "flux [1e-17 erg/s/cm²/Å]" if sp.norm is not None else "normalised flux"
            futures.append(run(
                plot_prediction,
                opts.out_dir / f"{stem}.png", image, predictor.wave, sp.flux, sp.sigma,
                title=f"{_short(info.objid)}  predicted by {predictor.name} {predictor.version}",
                z=float(target.z[k]) if np.isfinite(target.z[k]) else None, frame=predictor.frame,
                flux_label=label, dpi=opts.dpi,
                z_err=z_err if photoz else None, photoz=photoz,
            ))
        summary.n_predicted += 1
        summary.n_scaled += int(sp.norm is not None)
        if opts.per_object:
            summary.outputs.append(str(fits_path))
        infos.append(info)
        scaled.append(sp)
        outs.append(fits_path.name if opts.per_object else "")
    if writer is not None:
        writer.add(infos, scaled, outs)
    writes.started(futures, len(batch))


def scaled_predictions(predictor: Predictor, infos: list[ObjectInfo], pred: BatchResult,
                       user_z: np.ndarray) -> tuple[MeasureTarget, list[ScaledPrediction]]:
    """Each object of a predicted batch as `img2spec predict` writes it (FITS cards, table columns):
    its lines, Dn4000, Hdelta_A and classes with the bundle's measure params on what was decoded
    (the rest-frame spectrum at its decode z, else the observed one at the given, else predicted,
    z), the photo-z, the rest-frame spectrum, the flux scaled by `info.mag` where given. Sets
    `info.z_source` to photo-z where the photo-z placed the lines. Also what `img2spec decode` writes."""
    target = measurement_target(pred, predictor.wave, predictor.frame, user_z, [i.z_source for i in infos])
    measured = target_columns(target, predictor.measure_params, predictor.class_draws(pred), predictor.class_priors)
    out = []
    for k, info in enumerate(infos):
        if target.z_source[k] == Z_PREDICTED:
            info.z_source = Z_FROM_PHOTOZ
        rest = None if not pred.has_rest else RestSpectrum(
            pred.rest_wave, pred.rest_flux[k], pred.rest_sigma[k], float(target.z[k]), info.z_source)
        sp = scale(predictor, info, pred.flux[k], pred.sigma[k], rest)
        z_pred, z_err = (None, None) if pred.z is None else (float(pred.z[k]), float(pred.z_err[k]))
        sp.columns.update(redshift_columns(z_pred, z_err))
        sp.columns.update(measured[k])
        out.append(sp)
    return target, out


def _short(objid: str, n: int = TITLE_ID_CHARS) -> str:
    return objid if len(objid) <= n else objid[:n - 1] + "…"
