"""What `img2spec predict` reads: cutout files, directories of them, RA/Dec tables, magnitudes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .. import BANDS
from ..config import Params
from ..prep.normalise import MAG_MISSING, magnitude_problem

log = logging.getLogger(__name__)

CUTOUT_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
TABLE_SUFFIXES = (".csv",)


@dataclass
class Skip:
    """One input that produced no prediction: a stable reason code (counted in summary.json) and the detail."""

    file: str
    reason: str
    """Stable code, e.g. 'not_found', 'unreadable_cutout', 'off_centre', 'duplicate_objid'."""
    detail: str = ""
    """The specific message (names the band, the shape, the exception text...)."""

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason, "detail": self.detail}


@dataclass
class ObjectMeta:
    """Per-object extras from a catalogue: redshift, normalisation magnitude and photometry."""

    z: dict[str, float] = field(default_factory=dict)
    mag: dict[str, float] = field(default_factory=dict)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)
    """objid -> (reason code, detail) for catalogue rows that make the object a skip (impossible magnitude)."""
    photometry: dict[str, np.ndarray] = field(default_factory=dict)
    """objid -> (len(BANDS),) PS1 Kron magnitudes in `BANDS` order (NaN: not in the catalogue), for a
    hybrid bundle; only objects with at least one band column."""

    def update(self, other: "ObjectMeta") -> None:
        self.z.update(other.z)
        self.mag.update(other.mag)
        self.photometry.update(other.photometry)
        self.bad.update(other.bad)
        for objid in other.mag:  # a good value from `other` wins over a bad one from self
            if objid not in other.bad:
                self.bad.pop(objid, None)


def _is_cutout(path: Path) -> bool:
    return path.name.lower().endswith(CUTOUT_SUFFIXES)


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[Skip]]:
    """Split the command-line inputs into (cutout files, RA/Dec tables, skipped inputs)."""
    cutouts: list[Path] = []
    tables: list[Path] = []
    skipped: list[Skip] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_cutout(p))
            if not found:
                skipped.append(Skip(str(path), "empty_directory", "directory holds no cutout FITS files"))
            cutouts.extend(found)
        elif not path.exists():
            skipped.append(Skip(str(path), "not_found", "no such file or directory"))
        elif path.suffix.lower() in TABLE_SUFFIXES:
            tables.append(path)
        elif _is_cutout(path):
            cutouts.append(path)
        else:
            skipped.append(Skip(str(path), "not_a_cutout", "not a cutout FITS file or a .csv table of ra/dec"))
    return cutouts, tables, skipped


def _mag_column(frame: pd.DataFrame, band: str) -> str | None:
    for name in (f"{band}KronMag", f"mag_{band}", f"{band}_mag", "mag"):
        if name in frame.columns:
            return name
    return None


def _band_columns(frame: pd.DataFrame) -> dict[str, str]:
    """band -> its magnitude column (`<band>KronMag`, `mag_<band>` or `<band>_mag`) for the bands present."""
    out = {}
    for band in BANDS:
        col = next((c for c in (f"{band}KronMag", f"mag_{band}", f"{band}_mag") if c in frame.columns), None)
        if col is not None:
            out[band] = col
    return out


def _read_photometry(frame: pd.DataFrame, ids: pd.Series, meta: ObjectMeta, name: str) -> None:
    """Fill `meta.photometry` from every band column: missing values (NaN, -999) stay NaN (the
    hybrid CNN then predicts from images alone); impossible ones make the object a skip."""
    cols = _band_columns(frame)
    if not cols:
        return
    mags = np.full((len(frame), len(BANDS)), np.nan)
    for k, band in enumerate(BANDS):
        if band not in cols:
            continue
        values = pd.to_numeric(frame[cols[band]], errors="coerce").to_numpy(np.float64)
        for i, (objid, mag) in enumerate(zip(ids, values)):
            problem = magnitude_problem(mag)
            if problem is None:
                mags[i, k] = mag
            elif problem != MAG_MISSING and objid not in meta.bad:
                meta.bad[objid] = (problem, f"{cols[band]} = {mag:g} in {name}")
    meta.photometry.update(zip(ids, mags))


def stack_photometry(rows: list[np.ndarray | None], bands: tuple[str, ...] | None) -> np.ndarray | None:
    """(N, len(bands)) magnitudes from per-object `ObjectMeta.photometry` rows (None: not in the
    catalogue -> NaN, predicted from images alone); None for an images-only bundle or no rows at all."""
    if bands is None or all(r is None for r in rows):
        return None
    order = [BANDS.index(b) for b in bands]
    nan = np.full(len(bands), np.nan)
    return np.array([nan if r is None else np.asarray(r, np.float64)[order] for r in rows]).reshape(-1, len(bands))


def read_object_meta(path: str | Path, norm_band: str, *, require_mag: bool = False) -> ObjectMeta:
    """A catalogue CSV: `objid` plus any of `z` and the norm band's Kron magnitude (`rKronMag` or `mag_r`).

    Missing magnitudes (empty, NaN, PS1's -999) leave the object's flux normalised;
    physically impossible or implausible ones (`prep.normalise.magnitude_problem`:
    nonpositive_magnitude, implausible_magnitude) make the object a skip with that code. `require_mag`: the
    table must have a magnitude column. Every band's Kron magnitude found (`<band>KronMag`, `mag_<band>`,
    `<band>_mag`) goes to `photometry`, the inputs of a hybrid bundle.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from None
    if "objid" not in frame.columns:
        raise ValueError(f"{path}: needs an 'objid' column (got {list(frame.columns)})")
    ids = frame["objid"].astype(str).str.strip()
    meta = ObjectMeta()
    col = _mag_column(frame, norm_band)
    if col is None and (require_mag or "z" not in frame.columns):
        raise ValueError(
            f"{path}: needs a 'z' column or a magnitude column for the norm band {norm_band!r} "
            f"({norm_band}KronMag or mag_{norm_band}); got {list(frame.columns)}"
        )
    if col is not None:
        mags = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        for objid, mag in zip(ids, mags):
            problem = magnitude_problem(mag)  # the prepare stage's check and reason codes
            if problem is None:
                meta.mag[objid] = float(mag)
            elif problem != MAG_MISSING:
                meta.bad[objid] = (problem, f"{col} = {mag:g} in {path.name}")
    _read_photometry(frame, ids, meta, path.name)
    if "z" in frame.columns:
        zs = pd.to_numeric(frame["z"], errors="coerce").to_numpy(np.float64)
        meta.z = {i: float(z) for i, z in zip(ids, zs) if np.isfinite(z)}
    return meta


def fetch_table_cutouts(
    table: Path, dest: Path, params: Params, size: int, pixel_scale: float, norm_band: str
) -> tuple[list[Path], ObjectMeta, list[Skip]]:
    """Fetch PS1 cutouts for every row of an ra/dec CSV through the SDSS/PS1 source.

    Columns: ra, dec (deg), optional objid (else the row number), z, <band>KronMag.
    Rows that fail (no PS1 coverage, service errors) are skipped and reported.
    """
    frame = pd.read_csv(table)
    missing = [c for c in ("ra", "dec") if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: ra/dec table lacks columns {missing}")
    try:
        from ..sources.sdss.http import Fetcher, FetchError
        from ..sources.sdss.ps1images import fetch_cutout
    except ImportError as exc:  # the SDSS source is optional in a stripped-down install
        raise RuntimeError(f"{table}: fetching cutouts needs img2spec.sources.sdss ({exc})") from None
    from ..io.ps1_cutout import CutoutFormatError
    from ..logs import progress

    if "objid" not in frame.columns:
        frame = frame.assign(objid=np.arange(1, len(frame) + 1))
    dest.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(params.sdss.http)
    files: list[Path] = []
    skipped: list[Skip] = []
    try:
        for row in progress(frame.itertuples(index=False), total=len(frame), desc="fetch cutouts", unit="obj"):
            label = f"{table}:objid={row.objid}"
            try:
                objid = int(row.objid)
                out = dest / f"{objid}.fits"
                fetch_cutout(params.sdss, fetcher, out, objid, float(row.ra), float(row.dec),
                             size, pixel_scale, tuple(params.data.bands))
                files.append(out)
            except (FetchError, CutoutFormatError, ValueError, OSError) as exc:
                skipped.append(Skip(label, "fetch_failed", f"cutout fetch failed: {exc}"))
    finally:
        fetcher.close()
    meta = ObjectMeta()
    if "z" in frame.columns or _mag_column(frame, norm_band) is not None:
        meta = read_object_meta(table, norm_band, require_mag=False)
    return files, meta, skipped


def group_single_band(
    files: list[Path], bands: tuple[str, ...], radius_arcsec: float | None = None,
) -> tuple[list, list[Skip]]:
    """Single-band cutout files (PS1 cutout service) grouped per object; 5-band files pass unchanged.

    Returns (inputs, skips): each input is a 5-band file `Path` or an `io.ps1_single.BandGroup`
    (read with `read_band_group`); files that make no object (a band missing or twice,
    unreadable) are skips with the same codes as `img2spec pack`.
    """
    from ..config.survey import SurveyParams
    from ..io.ps1_cutout import CutoutFormatError
    from ..io.ps1_single import CutoutFile, group_band_files, scan_file

    radius = SurveyParams().group_radius_arcsec if radius_arcsec is None else radius_arcsec
    out: list = []
    singles = []
    for path in files:
        try:
            found = scan_file(path, bands)
        except CutoutFormatError:
            out.append(path)  # the cutout reader reports why it is unusable
            continue
        if isinstance(found, CutoutFile):
            out.append(path)
        else:
            singles.append(found)
    if not singles:
        return out, []
    groups, gskips = group_band_files(singles, bands, radius)
    return out + groups, [Skip(",".join(g.files), g.code, g.detail) for g in gskips]
