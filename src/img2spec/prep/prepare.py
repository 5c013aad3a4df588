"""Stage `prepare`: matched objects -> `data/processed/` (contract: `img2spec.io.processed`).

1. Objects from `matched.parquet` get a split (hash of objid) and a normalisation
   (PS1 Kron magnitude in `norm_band` as f_lambda); missing files or photometry
   are counted drops.
2. Chunks of objects go to `n_workers` processes (`worker.process_chunk`); results
   come back in order and are written row by row into `.npy` files created with
   `open_memmap` in a temporary directory, so memory stays at a few chunks.
3. Images are stored in nanomaggies first; the asinh softening and the per-band
   offset/scale are then fitted on the train rows only and applied in place, in
   chunks (the same `stretch_nanomaggies` that inference uses).
4. The catalogue, `meta.json`, `image_scaling.json` complete the directory, which
   then replaces `data/processed/` by rename; `reports/prepare.json` (+ CSV of
   every dropped object) says what went in, what came out and why.

Why `.npy`: training reads rows by index through `np.load(mmap_mode="r")` with no
extra dependency, page-cache speed and zero decode cost; the arrays are dense
float32 (no benefit from Zarr's compression of noisy data) and one process writes
them, so HDF5's locking and Zarr's chunk stores add nothing we need.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .. import BANDS
from ..config import Params
from ..io.atomic import remove_stale_temps, temp_path
from ..io.errors import RunInputError
from ..io.ordered import in_order
from ..io.processed import write_processed_tables
from ..io.processes import guarded_initializer
from ..io.sdss_spectrum import sdss_loglam_grid
from ..logs import progress
from ..paths import Paths
from .images import StretchStats, make_scaling, softening_from_sky, stretch_nanomaggies
from .normalise import check_magnitudes, effective_wavelength, mag_to_flambda
from .npy import create_npy, shrink_npy, write_rows
from .report import DropLog
from .spectra import make_grid
from .split import HASH_BYTES, assign_splits
from .worker import ChunkResult, ObjectTask, WorkerConfig, process_chunk

log = logging.getLogger(__name__)

IMAGE_PASS_ROWS = 512
"""Rows per read/write when fitting and applying the image stretch (~40 MiB at 64x64x5)."""
INFLIGHT_PER_WORKER = 2
"""Chunks queued per worker: keeps workers busy while bounding memory held in results."""
TRUTH_PARAMS = "params.parquet"
TRUTH_SPECTRA = "fibre_spectra.npy"


def load_truth(truth_dir: Path) -> tuple[pd.DataFrame, Path] | None:
    """(truth params table, fibre_spectra.npy path) on the mock survey, else None."""
    table, spectra = truth_dir / TRUTH_PARAMS, truth_dir / TRUTH_SPECTRA
    if not table.exists():
        return None
    if not spectra.exists():
        raise FileNotFoundError(f"{spectra}: missing although {table} exists")
    frame = pd.read_parquet(table)
    for col in ("objid", "galaxy_type"):
        if col not in frame.columns:
            raise ValueError(f"{table}: missing column {col!r}")
    arr = np.load(spectra, mmap_mode="r")
    n_wave = len(sdss_loglam_grid())
    if arr.ndim != 2 or arr.shape != (len(frame), n_wave):
        raise ValueError(f"{spectra}: shape {arr.shape}, expected ({len(frame)}, {n_wave}) = rows of {table} x sdss_loglam_grid()")
    return frame, spectra


def _ordered_results(cfg: WorkerConfig, chunks: list[list[ObjectTask]], n_workers: int) -> Iterator[ChunkResult]:
    """Chunk results in submission order with at most a few chunks in flight."""
    if n_workers == 1:
        for chunk in chunks:
            yield process_chunk(cfg, chunk)
        return
    # Workers die with this process: a kill -9 of the stage leaves no orphan blocked on its queue.
    initializer, initargs = guarded_initializer()
    ex = ProcessPoolExecutor(n_workers, mp_context=get_context("fork"), initializer=initializer, initargs=initargs)
    try:
        yield from in_order(lambda chunk: ex.submit(process_chunk, cfg, chunk), chunks, n_workers * INFLIGHT_PER_WORKER)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _fit_and_apply_stretch(images: Path, is_train: np.ndarray, sky: np.ndarray, factor: float, bands) -> dict:
    """Fit the asinh stretch on train rows and apply it in place to all rows.

    Pass 1 applies asinh(f / softening) in place (softening from the train sky) and
    accumulates the train statistics; pass 2 standardises in place. The float32
    operations are those of `stretch_nanomaggies`, so the result is bit-identical
    to `preprocess_stack` on the raw cutouts.
    """
    softening = softening_from_sky(sky[is_train], factor)
    partial = {"bands": list(bands), "softening": softening.tolist()}
    stats = StretchStats(len(bands))
    n = len(is_train)
    for start in range(0, n, IMAGE_PASS_ROWS):
        arr = np.load(images, mmap_mode="r+")
        block = arr[start:start + IMAGE_PASS_ROWS]
        block[...] = stretch_nanomaggies(np.asarray(block), partial)
        sel = is_train[start:start + IMAGE_PASS_ROWS]
        if sel.any():
            stats.add(block[sel])
        arr.flush()
        del arr, block
    mean, std = stats.result()
    scaling = make_scaling(bands, softening, mean, std, int(is_train.sum()))
    offset, scale = np.asarray(scaling["offset"], np.float32), np.asarray(scaling["scale"], np.float32)
    for start in range(0, n, IMAGE_PASS_ROWS):
        arr = np.load(images, mmap_mode="r+")
        block = arr[start:start + IMAGE_PASS_ROWS]
        block -= offset
        block /= scale
        arr.flush()
        del arr, block
    return scaling


def _swap_dir(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` with renames (a reader never sees a half-written directory)."""
    old = temp_path(final).with_name(f"{temp_path(final).name}-old")  # a kill -9 here: the next run sweeps it
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def prepare(params: Params, paths: Paths, track: bool = False) -> dict:
    """Run the prepare stage; returns the report (also written to reports/prepare.json)."""
    t0 = time.perf_counter()
    p = params.prepare
    bands = tuple(params.data.bands)
    if bands != BANDS:
        raise ValueError(f"data.bands={list(bands)}: prepare expects the PS1 bands {list(BANDS)} in this order")
    root = Path(paths.root)
    if not paths.matched.exists():
        raise FileNotFoundError(f"{paths.matched}: missing; run the match stage first")
    cat = pd.read_parquet(paths.matched).sort_values("objid", kind="stable").reset_index(drop=True)
    n_in = len(cat)
    drops = DropLog()
    grid = make_grid(p)

    cat["split"] = assign_splits(cat["objid"], p.train_fraction, p.val_fraction)
    cat["norm"] = mag_to_flambda(cat[f"mag_{p.norm_band}"].to_numpy(np.float64), p.norm_band)
    truth = load_truth(paths.truth_dir)
    truth_rows = np.full(n_in, -1, np.int64)
    if truth is not None:
        tframe, _ = truth
        lookup = pd.Series(np.arange(len(tframe)), index=tframe["objid"].astype("int64"))
        truth_rows = lookup.reindex(cat["objid"].astype("int64")).fillna(-1).to_numpy(np.int64)
        cat["galaxy_type"] = tframe["galaxy_type"].to_numpy()[np.maximum(truth_rows, 0)]

    keep = np.ones(n_in, bool)
    norm_mag = cat[f"mag_{p.norm_band}"].to_numpy(np.float64)
    mag_problem = check_magnitudes(norm_mag, p.mag_min, p.mag_max)
    for i, (objid, specfile, imagefile, norm) in enumerate(
        zip(cat["objid"], cat["specfile"], cat["imagefile"], cat["norm"])
    ):
        if not (root / specfile).is_file():
            drops.add(objid, specfile, "missing_spectrum")
        elif not (root / imagefile).is_file():
            drops.add(objid, imagefile, "missing_image")
        elif mag_problem[i] or not (np.isfinite(norm) and norm > 0):
            drops.add(objid, specfile, mag_problem[i] or "bad_photometry", f"mag_{p.norm_band}={norm_mag[i]}")
        else:
            continue
        keep[i] = False
    todo = cat[keep].reset_index(drop=True)
    todo_truth = truth_rows[keep]
    tasks = [
        ObjectTask(int(r.objid), str(root / r.specfile), str(root / r.imagefile), float(r.ra), float(r.dec),
                   float(r.norm), int(t))
        for r, t in zip(todo.itertuples(index=False), todo_truth)
    ]
    chunks = [tasks[i:i + p.chunk_size] for i in range(0, len(tasks), p.chunk_size)]
    cfg = WorkerConfig(
        prepare=p, grid=grid, bands=bands, cutout_size=params.data.cutout_size,
        truth_path=str(truth[1]) if truth else None,
        truth_loglam=sdss_loglam_grid() if truth else None,
    )

    final = paths.processed
    final.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of killed runs (staging directory, half-written reports) go first.
    stale = remove_stale_temps(final.parent, prefix=f".{final.name}") + remove_stale_temps(paths.reports, ".prepare")
    tmp = temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        n_max, size, P = len(tasks), params.data.cutout_size, grid.n_pixels
        files = {"flux": (n_max, P), "ivar": (n_max, P), "images": (n_max, size, size, len(bands))}
        if truth:
            files["truth_flux"] = (n_max, P)
        for name, shape in files.items():
            create_npy(tmp / f"{name}.npy", shape)
        kept: list[int] = []  # rows of `todo` that made it, in output order
        infos: list[dict] = []
        cursor = 0
        bar = progress(total=len(tasks), desc="prepare", unit="obj")
        for k, res in enumerate(_ordered_results(cfg, chunks, p.n_workers)):
            offset = k * p.chunk_size
            for pos, file, reason, detail in res.dropped:
                drops.add(tasks[offset + pos].objid, _rel(Path(file), root), reason, detail)
            if res.keep:
                arrays = {"flux": res.flux, "ivar": res.ivar, "images": res.images}
                if truth:
                    arrays["truth_flux"] = res.truth
                for name, parts in arrays.items():
                    write_rows(tmp / f"{name}.npy", cursor, np.stack(parts))
                kept.extend(offset + pos for pos in res.keep)
                infos.extend(res.info)
                cursor += len(res.keep)
            bar.update(len(chunks[k]))
        bar.close()
        n_out = cursor
        for name in files:
            shrink_npy(tmp / f"{name}.npy", n_out)

        out = todo.iloc[kept].reset_index(drop=True)
        out["good_fraction"] = [i["good_fraction"] for i in infos]
        out["snr_median"] = [i["snr_median"] for i in infos]
        out["spec_z"] = [i["spec_z"] for i in infos]
        report = _report_head(params, n_in, n_out, out, drops)
        if n_out == 0 or not (out["split"] == "train").any():
            drops.write(paths.reports / "prepare.json", paths.reports / "prepare_dropped.csv", report)
            raise RunInputError(f"prepare: {n_out} objects survived (none in the train split); see reports/prepare.json")
        sky = np.array([i["sky_sigma"] for i in infos], dtype=np.float64)
        scaling = _fit_and_apply_stretch(
            tmp / "images.npy", out["split"].to_numpy() == "train", sky, p.images.asinh_softening, bands
        )
        write_processed_tables(tmp, wave=grid.centres, catalog=out, image_scaling=scaling,
                               meta=processed_meta(params, grid, out, truth is not None))
        _swap_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    report["seconds"] = round(seconds, 2)
    report["stale_temporaries_removed"] = len(stale)
    report["objects_per_second"] = round(n_in / seconds, 1) if seconds > 0 else None
    report = drops.write(paths.reports / "prepare.json", paths.reports / "prepare_dropped.csv", report)
    log.info("prepare: %d in -> %d out in %.1f s; dropped %s", n_in, n_out, seconds, report["dropped_by_reason"])
    if track:
        _track(params, paths, report)
    return report


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def _report_head(params: Params, n_in: int, n_out: int, out: pd.DataFrame, drops: DropLog) -> dict:
    return {
        "stage": "prepare",
        "n_in": n_in,
        "n_out": n_out,
        "n_dropped": len(drops),
        "splits": {s: int((out["split"] == s).sum()) for s in ("train", "val", "test")},
        "frame": params.prepare.frame,
        "norm_band": params.prepare.norm_band,
    }


def processed_meta(params: Params, grid, out: pd.DataFrame, has_truth: bool) -> dict:
    """meta.json of data/processed (the keys `io.processed` reads: wave.frame, norm.band,
    norm.effective_wavelength_angstrom); also used by the synthetic test data set."""
    p = params.prepare
    return {
        "n_objects": len(out),
        "splits": {s: int((out["split"] == s).sum()) for s in ("train", "val", "test")},
        "wave": {
            "frame": p.frame, "unit": "Angstrom", "n_pixels": grid.n_pixels,
            "wave_min": p.wave_min, "wave_max": float(grid.edges[-1]),
            "velocity_step_kms": p.velocity_step_kms, "spacing": "uniform in ln(lambda); wave.npy = geometric centres",
            "edges_first_last": [float(grid.edges[0]), float(grid.edges[-1])],
        },
        "flux": {
            "unit": "dimensionless: flux_sdss [1e-17 erg/s/cm^2/A] = flux * catalog.norm",
            "ivar": "ivar * norm**2; 0 where masked (ivar=0, and_mask, non-finite, sky lines, low coverage)",
            "min_pixel_coverage": p.min_pixel_coverage,
            "sky_lines_angstrom": list(p.sky_lines_angstrom),
        },
        "norm": {
            "band": p.norm_band, "source": "PS1 Kron AB magnitude",
            "effective_wavelength_angstrom": effective_wavelength(p.norm_band),
            "unit": "1e-17 erg/s/cm^2/A",
        },
        "images": {
            "bands": list(params.data.bands), "shape": [params.data.cutout_size, params.data.cutout_size, len(params.data.bands)],
            "pixel_scale_arcsec": params.data.pixel_scale_arcsec, "scaling": "image_scaling.json",
        },
        "split": {
            "method": f"blake2b({HASH_BYTES}-byte digest) of the decimal objid -> u in [0,1)",
            "train_fraction": p.train_fraction, "val_fraction": p.val_fraction,
        },
        "truth_flux": has_truth,
    }


def _track(params: Params, paths: Paths, report: dict) -> None:
    """Log the stage's counts to MLflow: the prepare run of the pipeline experiment (`tracking.start_run`)."""
    import mlflow

    from ..tracking import start_run

    with start_run("prepare", params, inputs=["data/interim/matched.parquet"], root=paths.root):
        mlflow.log_metrics({"n_in": report["n_in"], "n_out": report["n_out"], "n_dropped": report["n_dropped"],
                            "objects_per_second": report["objects_per_second"] or 0.0})
        mlflow.log_metrics({f"dropped_{k}": v for k, v in report["dropped_by_reason"].items()})
        mlflow.log_dict(report, "prepare_report.json")
