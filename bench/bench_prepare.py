"""Benchmark the match + prepare stages: objects (spectra + cutouts) per second and peak memory.

Synthesises N raw objects in a temporary directory: a few hundred template objects
written with the io writers, then one distinct spectrum file per object (template
bytes with its SPECOBJ row patched: position, plate/mjd/fiber, Z) and a hard link
to a template cutout. Every object's bytes are read and processed as in a real
run. Then `match` and `prepare` run with the default params.

Peak memory is sampled every 0.2 s as the sum over the main process and its
workers of PSS (proportional set size: shared copy-on-write pages are split
between processes rather than counted once per worker), with RSS beside it.

    .venv/bin/python bench/bench_prepare.py --n 36000        # targets: >= 500/s, < 4 GiB
    .venv/bin/python bench/bench_prepare.py --n 2000 --keep WORKDIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from img2spec.config import Params
from img2spec.io.ps1_cutout import write_cutout
from img2spec.io.sdss_spectrum import write_spectrum
from img2spec.paths import Paths
from img2spec.prep.match import match
from img2spec.prep.prepare import prepare
from img2spec.prep.synthetic import make_cutout, make_spectrum, synthetic_objects, write_tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TreeSampler  # noqa: E402

GIB = 1024**3


def peak_memory() -> TreeSampler:
    """PSS and RSS peaks of this process and its children (`common.TreeSampler`), as a context manager."""
    return TreeSampler(os.getpid())


def _spectrum_templates(paths: Paths, objects, n_templates: int) -> list[tuple[bytes, int, np.dtype]]:
    """Write `n_templates` real spec files; return (bytes, SPECOBJ data offset, row dtype) of each."""
    from astropy.io import fits

    rng = np.random.default_rng(0)
    out = []
    for obj in objects[:n_templates]:
        path = write_spectrum(paths.spectrum_file(obj.plate, obj.mjd, obj.fiberid), make_spectrum(obj, rng))
        with fits.open(path) as hdul:
            hdu = hdul["SPECOBJ"]
            dtype = hdu.data.dtype  # big-endian record layout with field offsets
            offset = hdu._data_offset
        out.append((path.read_bytes(), offset, dtype))
    return out


def _write_part(root: str, start: int, stop: int, templates, n_templates: int, size: int, n: int) -> None:
    """Spectra: template bytes with the SPECOBJ row (position, ids, Z) patched per object, so
    every file is distinct and valid (astropy writes would take ~30 min for 36,000 on a busy
    2-core machine). Cutouts: hard links to the template objects' files."""
    paths = Paths(Path(root))
    objects = synthetic_objects(n)
    for k in range(start, stop):
        obj = objects[k]
        data, offset, dtype = templates[k % n_templates]
        buf = bytearray(data)
        row = np.frombuffer(buf, dtype=dtype, count=1, offset=offset)
        row["PLUG_RA"], row["PLUG_DEC"], row["Z"] = obj.ra, obj.dec, obj.z
        row["PLATE"], row["MJD"], row["FIBERID"] = obj.plate, obj.mjd, obj.fiberid
        paths.spectrum_file(obj.plate, obj.mjd, obj.fiberid).write_bytes(bytes(buf))
        img = paths.image_file(obj.objid)
        img.unlink(missing_ok=True)
        os.link(paths.image_file(objects[k % n_templates].objid), img)


def synthesise(root: Path, n: int, n_templates: int, size: int, workers: int) -> float:
    """Write N raw objects; returns seconds."""
    t0 = time.perf_counter()
    paths = Paths(root)
    for d in (paths.spectra_dir, paths.images_dir):
        d.mkdir(parents=True, exist_ok=True)
    objects = synthetic_objects(n)
    n_templates = min(n, n_templates)
    templates = _spectrum_templates(paths, objects, n_templates)
    rng = np.random.default_rng(1)
    for obj in objects[:n_templates]:
        write_cutout(paths.image_file(obj.objid), make_cutout(obj, size, rng))
    step = 2000
    with ProcessPoolExecutor(workers) as ex:
        futures = [ex.submit(_write_part, str(root), s, min(s + step, n), templates, n_templates, size, n)
                   for s in range(n_templates, n, step)]
        for f in futures:
            f.result()
    write_tables(paths, objects)
    return time.perf_counter() - t0


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the worker pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=36000, help="objects to synthesise")
    ap.add_argument("--workers", type=int, default=2, help="prepare.n_workers")
    ap.add_argument("--templates", type=int, default=500, help="distinct cutout files")
    ap.add_argument("--size", type=int, default=64, help="cutout side (data.cutout_size)")
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: temp, removed)")
    ap.add_argument("--synth-only", action="store_true", help="only write the raw files (use with --keep)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("IMG2SPEC_NO_PROGRESS", "1")

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        if not (Paths(root).candidates.exists() and len(list(Paths(root).spectra_dir.glob("*.fits"))) >= args.n):
            t_syn = synthesise(root, args.n, args.templates, args.size, args.workers)
            print(f"synthesised {args.n} objects in {t_syn:.1f} s under {root}")
        if args.synth_only:
            return
        params = Params().model_copy(update={
            "data": Params().data.model_copy(update={"cutout_size": args.size}),
            "prepare": Params().prepare.model_copy(update={"n_workers": args.workers}),
        })
        paths = Paths(root)
        with peak_memory() as mem_match:
            t0 = time.perf_counter()
            mrep = match(params, paths)
            t_match = time.perf_counter() - t0
        cpu0 = _cpu_seconds()
        with peak_memory() as mem:
            t0 = time.perf_counter()
            prep = prepare(params, paths)
            t_prep = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        out_bytes = sum(p.stat().st_size for p in paths.processed.iterdir())
        figures = {
            "n_objects": args.n,
            "workers": args.workers,
            "match_seconds": round(t_match, 2),
            "match_peak_pss_gib": round(mem_match.peak_pss / GIB, 3),
            "n_matched": mrep["n_matched"],
            "prepare_seconds": round(t_prep, 2),
            "prepare_objects_per_second": round(prep["n_in"] / t_prep, 1),
            "prepare_cpu_seconds": round(cpu, 2),
            "prepare_cpu_ms_per_object": round(1e3 * cpu / max(prep["n_in"], 1), 2),
            # What the wall rate would be on `workers` idle cores (the shared machine is often busy).
            "prepare_objects_per_second_cpu_bound": round(prep["n_in"] * args.workers / cpu, 1),
            "prepare_peak_pss_gib": round(mem.peak_pss / GIB, 3),
            "prepare_peak_rss_sum_gib": round(mem.peak_rss / GIB, 3),
            "n_out": prep["n_out"],
            "processed_size_gib": round(out_bytes / GIB, 3),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(figures, indent=2))
        print(f"targets: >= 500 objects/s -> wall {'OK' if figures['prepare_objects_per_second'] >= 500 else 'MISSED'}, "
              f"cpu-bound {'OK' if figures['prepare_objects_per_second_cpu_bound'] >= 500 else 'MISSED'}; "
              f"peak < 4 GiB -> {'OK' if figures['prepare_peak_pss_gib'] < 4 else 'MISSED'}")
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
