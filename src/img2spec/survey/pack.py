"""`img2spec pack`: cutout files -> HDF5 shards partitioned by HEALPix pixel, and `pack.json`.

Two passes, so memory holds one part of images at a time whatever the input size:
1. index: every file's headers (object id, sky position, band for single-band files);
   single-band files are grouped into objects (`io.ps1_single`); each object gets its
   nested HEALPix pixel at `survey.healpix_order`.
2. write: per pixel, objects sorted by id are cut into parts of at most
   `survey.objects_per_part` and written with `io.shards.write_cutout_shard` as
   `healpix=<N>/part-<tag>-<k>.hdf5` (objects whose images have another shape than the part's
   first go to `part-<tag>-<k>-<H>x<W>.hdf5`, so nothing is dropped for its size).

`<tag>` names the input set (`inputs_tag`): the parts of one set of inputs are that run's own.
A pack removes only its own parts that it did not write again (an earlier pack of the same
inputs with another HEALPix order or part size) and temporaries of writers that are gone, so
packs of other inputs into the same directory, finished or running, keep their parts.

Every input file is counted; a file that cannot be packed is a skip with a reason in
`pack.json`. The same inputs give byte-identical shard contents (same content hashes),
so a survey rerun after a repack skips what it already predicted.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..config import Params
from ..io.atomic import remove_stale_temps, write_json
from ..io.fastfits import fast_read_cutout
from ..io.ps1_cutout import Cutout, CutoutFormatError, read_cutout
from ..io.ps1_single import BandFile, BandGroup, CutoutFile, group_band_files, read_band_group, scan_file
from ..io.shards import PARTITION_PREFIX, SHARD_SUFFIX, CutoutShard, part_path, write_cutout_shard
from ..logs import progress
from ..predict.inputs import ObjectMeta, Skip, expand_inputs, read_object_meta, stack_photometry
from .healpix import healpix_pixels

log = logging.getLogger(__name__)
PACK_REPORT = "pack.json"
PART_PREFIX = "part-"
_UNTAGGED_PART = re.compile(rf"^{PART_PREFIX}\d+(-\d+x\d+)?{re.escape(SHARD_SUFFIX)}$")
INPUTS_TAG_LENGTH = 10
"""Hex digits of the input-set tag in part names (40 bits: no collision among a directory's packs)."""


@dataclass
class ObjectSource:
    """One object to pack: a multi-band file or a group of single-band files."""

    object_id: str
    ra: float
    dec: float
    files: tuple[str, ...]
    group: BandGroup | None = None
    healpix: int = -1

    def read(self, bands: tuple[str, ...]) -> Cutout:
        if self.group is not None:
            return read_band_group(self.group)
        path = self.files[0]
        return fast_read_cutout(path, bands) or read_cutout(path, bands)


def reason_counts(skips: Iterable[Skip]) -> dict[str, int]:
    """Skips per stable reason code."""
    counts: dict[str, int] = {}
    for s in skips:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return dict(sorted(counts.items()))


def inputs_tag(inputs: Sequence[str | Path]) -> str:
    """The tag of an input set in part names: a digest of its resolved paths, order and repeats ignored."""
    names = sorted({str(Path(i).resolve()) for i in inputs})
    return hashlib.sha256("\0".join(names).encode()).hexdigest()[:INPUTS_TAG_LENGTH]


def own_stale_parts(out_dir: Path, tag: str, written: set[str]) -> list[Path]:
    """Parts of the input set `tag` under `out_dir` that this pack did not write (paths relative
    to `out_dir` in `written`), and untagged parts (`part-<k>[-<H>x<W>]`, written when a pack
    owned its whole directory); parts of other input sets are not this pack's to remove."""
    own = f"{PART_PREFIX}{tag}-"
    return [p for p in sorted(out_dir.glob(f"{PARTITION_PREFIX}*/{PART_PREFIX}*{SHARD_SUFFIX}"))
            if (p.name.startswith(own) or _UNTAGGED_PART.match(p.name))
            and p.relative_to(out_dir).as_posix() not in written]


def _catalogue(path: Path | None, norm_band: str) -> tuple[ObjectMeta, dict[str, tuple[float, float]]]:
    """(z, <norm band>KronMag and every band's Kron magnitude by object id; (ra, dec) by object id)
    from `--catalogue` (CSV with an objid column)."""
    if path is None:
        return ObjectMeta(), {}
    meta = read_object_meta(path, norm_band, require_mag=False)
    frame = pd.read_csv(path)
    pos: dict[str, tuple[float, float]] = {}
    if {"ra", "dec"} <= set(frame.columns):
        ids = frame["objid"].astype(str).str.strip()
        ra = pd.to_numeric(frame["ra"], errors="coerce").to_numpy(np.float64)
        dec = pd.to_numeric(frame["dec"], errors="coerce").to_numpy(np.float64)
        pos = {i: (a, d) for i, a, d in zip(ids, ra, dec) if np.isfinite(a) and np.isfinite(d)}
    return meta, pos


def index_inputs(
    inputs: Sequence[str | Path], bands: tuple[str, ...], radius_arcsec: float,
    positions: dict[str, tuple[float, float]], skips: list[Skip],
) -> tuple[list[ObjectSource], int]:
    """(objects with a sky position, number of input files); problems are appended to `skips`."""
    files, tables, bad = expand_inputs(inputs)
    skips.extend(bad)
    skips.extend(Skip(str(t), "not_a_cutout", "a table: give it with --catalogue") for t in tables)
    n_files = len(files) + len(tables) + sum(1 for s in bad if not Path(s.file).is_dir())
    objects: list[ObjectSource] = []
    singles: list[BandFile] = []
    for path in progress(files, desc="pack: index", unit="file"):
        try:
            found = scan_file(path, bands)
        except CutoutFormatError as exc:
            skips.append(Skip(str(path), exc.reason, str(exc).replace(f"{path}: ", "")))  # the readers' codes, as predict
            continue
        if isinstance(found, CutoutFile):
            objects.append(ObjectSource(str(found.objid), found.ra, found.dec, (str(path),)))
        else:
            singles.append(found)
    groups, gskips = group_band_files(singles, bands, radius_arcsec)
    skips.extend(Skip(",".join(g.files), g.code, g.detail) for g in gskips)
    for g in groups:
        ra, dec = (math.nan, math.nan) if g.ra is None else (g.ra, g.dec)
        objects.append(ObjectSource(g.object_id, ra, dec, tuple(str(p) for p in g.files.values()), g))
    kept: list[ObjectSource] = []
    seen: set[str] = set()
    for obj in sorted(objects, key=lambda o: (o.object_id, o.files)):
        if not (np.isfinite(obj.ra) and np.isfinite(obj.dec)) and obj.object_id in positions:
            obj.ra, obj.dec = positions[obj.object_id]
        if not (np.isfinite(obj.ra) and np.isfinite(obj.dec)):
            skips.append(Skip(",".join(obj.files), "no_sky_position", f"object {obj.object_id} has no RA/DEC or "
                              "celestial WCS (give --catalogue with objid, ra, dec)"))
        elif obj.object_id in seen:
            skips.append(Skip(",".join(obj.files), "duplicate_objid", f"object {obj.object_id} already packed"))
        else:
            seen.add(obj.object_id)
            kept.append(obj)
    return kept, n_files


def _write_part(
    out_dir: Path, healpix: int, part: str, members: list[tuple[ObjectSource, Cutout]], bands: tuple[str, ...],
    meta: ObjectMeta, order: int,
) -> dict:
    ids = [o.object_id for o, _ in members]
    z, mag = meta.z, meta.mag
    shard = CutoutShard(
        object_id=np.asarray(ids, dtype=object),
        ra=np.array([o.ra for o, _ in members]), dec=np.array([o.dec for o, _ in members]),
        image_flux=np.stack([np.stack([c.data[b] for b in bands]) for _, c in members]).astype(np.float32),
        magzp=np.array([[c.magzp[b] for b in bands] for _, c in members], np.float32),
        bands=bands, pixel_scale=np.array([c.pixel_scale for _, c in members], np.float32),
        z=np.array([z.get(i, np.nan) for i in ids]) if z else None,
        rKronMag=np.array([mag.get(i, np.nan) for i in ids], np.float32) if mag else None,
        # every band's magnitude (a hybrid bundle's input) in the shard's band order
        mag=(stack_photometry([meta.photometry.get(i) for i in ids], bands).astype(np.float32)
             if meta.photometry else None),
    )
    path = part_path(out_dir, healpix, part)
    digest = write_cutout_shard(path, shard, {"healpix": healpix, "healpix_order": order})
    return {"path": path.relative_to(out_dir).as_posix(), "healpix": healpix, "n_objects": len(ids),
            "content_hash": digest}


def pack(
    inputs: Sequence[str | Path], out_dir: str | Path, params: Params, catalogue: str | Path | None = None,
) -> dict:
    """Pack cutout files into HEALPix shards under `out_dir`; returns (and writes) the pack report."""
    t0 = time.perf_counter()
    sp = params.survey
    bands = tuple(params.data.bands)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for pdir in out_dir.glob(f"{PARTITION_PREFIX}*"):
        remove_stale_temps(pdir)
    # the Kron band the pipeline normalises by (packed as `<band>KronMag`, Multimodal Universe's field name)
    meta, positions = _catalogue(Path(catalogue) if catalogue else None, params.prepare.norm_band)
    skips: list[Skip] = []
    objects, n_files = index_inputs(inputs, bands, sp.group_radius_arcsec, positions, skips)
    pixels = healpix_pixels(np.array([o.ra for o in objects]), np.array([o.dec for o in objects]), sp.healpix_order)
    by_pixel: dict[int, list[ObjectSource]] = {}
    for obj, pix in zip(objects, pixels):
        obj.healpix = int(pix)
        by_pixel.setdefault(int(pix), []).append(obj)
    tag = inputs_tag(inputs)
    parts: list[dict] = []
    n_packed = 0
    bar = progress(total=len(objects), desc="pack: write", unit="obj")
    try:
        for pix in sorted(by_pixel):
            members = by_pixel[pix]  # sorted by object id (index_inputs)
            for k in range(0, len(members), sp.objects_per_part):
                loaded: list[tuple[ObjectSource, Cutout]] = []
                for obj in members[k:k + sp.objects_per_part]:
                    bar.update(1)
                    try:
                        loaded.append((obj, obj.read(bands)))
                    except (CutoutFormatError, ValueError, OSError, KeyError) as exc:
                        skips.append(Skip(",".join(obj.files), getattr(exc, "reason", None) or "unreadable_cutout", str(exc)))
                by_shape: dict[tuple, list[tuple[ObjectSource, Cutout]]] = {}
                for item in loaded:
                    shape = tuple(np.shape(item[1].data[bands[0]]))
                    shapes = {tuple(np.shape(item[1].data[b])) for b in bands}
                    if len(shapes) > 1:
                        skips.append(Skip(",".join(item[0].files), "wrong_shape", f"band shapes differ: {sorted(shapes)}"))
                        continue
                    by_shape.setdefault(shape, []).append(item)
                name = f"{PART_PREFIX}{tag}-{k // sp.objects_per_part:05d}"
                for j, (shape, group) in enumerate(by_shape.items()):
                    part = name if j == 0 else f"{name}-{shape[0]}x{shape[1]}"
                    parts.append(_write_part(out_dir, pix, part, group, bands, meta, sp.healpix_order))
                    n_packed += len(group)
    finally:
        bar.close()
    for path in own_stale_parts(out_dir, tag, {p["path"] for p in parts}):
        path.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    report = {
        "n_inputs": n_files, "n_objects_packed": n_packed, "n_parts": len(parts), "n_pixels": len(by_pixel),
        "n_skipped": len(skips), "skipped_by_reason": reason_counts(skips),
        "skipped": [s.as_dict() for s in skips],
        "healpix_order": sp.healpix_order, "objects_per_part": sp.objects_per_part, "bands": list(bands),
        "catalogue": str(catalogue) if catalogue else None, "inputs_tag": tag,
        "seconds": round(seconds, 3), "cutouts_per_s": round(n_packed / seconds, 1) if seconds > 0 else None,
        "parts": parts,
    }
    write_json(out_dir / PACK_REPORT, report)
    for s in skips:
        log.warning("pack skipped %s: %s", s.file, s.reason)
    log.info("packed %d objects from %d files into %d parts (%d pixels, %d skipped) in %.1f s -> %s",
             n_packed, n_files, len(parts), len(by_pixel), len(skips), seconds, out_dir)
    return report
