"""Single-band cutout files, as the Pan-STARRS1 cutout service returns them, grouped into objects.

`fitscut.cgi` answers one FITS file per band: a 2-D image (linear counts, EXPTIME in
the header, zero point 25 + 2.5 log10 EXPTIME, the band in `FPA.FILTER` = 'g.00000'),
usually with the TAN WCS of its stack skycell. A user who downloaded them has five
files per object named however their script named them. Here:

- `scan_file` reads a file's headers only and says what it is: a 5-band cutout in the
  project's layout (`io.ps1_cutout`), or one band of an object (`BandFile`: band from
  the header, else from a name token such as `.g.` or `_g.`; sky position from the WCS
  at the image centre, else RA/DEC cards; object id from OBJID, else the file name
  with the band token removed).
- `group_band_files` puts the bands of one object together: same id or name stem,
  and image centres within `radius_arcsec` (so skycell-named downloads of neighbouring
  objects stay apart). A group lacking a band, with a band twice or with bands of
  different shapes is reported with its files and a reason, never half-packed.
- `read_band_group` reads a group's pixels into a `Cutout`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .fastfits import fast_read_headers, fast_read_image
from .errors import reader_message
from .ps1_cutout import CORRUPT_IMAGE, Cutout, CutoutFormatError, band_header_values, parse_objid

ASINH_ALPHA = 2.5 / math.log(10.0)
"""alpha = 2.5 log10(e) = 1.0857 of the PS1 asinh compression."""
FILTER_KEYS = ("FPA.FILTER", "FILTER", "FILTERID", "BAND")
"""Header cards naming the band; PS1 writes 'g.00000' (the first letter is the band)."""
RA_KEYS = (("RA", "DEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJRA", "OBJDEC"))
_SUFFIX = re.compile(r"\.(fits|fit)(\.gz)?$", re.IGNORECASE)
_WCS_KEY = re.compile(r"^(NAXIS\d?|WCSAXES|CTYPE\d|CRVAL\d|CRPIX\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+"
                      r"|EQUINOX|RADESYS|RADECSYS|LONPOLE|LATPOLE|MJD-OBS|DATE-OBS)$")


def linearise(pixels: np.ndarray, header: Mapping[str, Any]) -> np.ndarray:
    """Undo PS1 stack asinh compression if the header says it was applied.

    PS1 IPP asinh compression (STScI "PS1 Image Cutout Service" notes): C = alpha
    asinh((L - BOFFSET) / (2 BSOFTEN)), alpha = 2.5 log10(e), hence
    L = BOFFSET + 2 BSOFTEN sinh(C / alpha). Only whole skycell stack files carry the
    keywords; fitscut cutouts are already linear, so without them pixels pass unchanged.
    """
    if "BSOFTEN" not in header or "BOFFSET" not in header:
        return pixels
    c = np.asarray(pixels, np.float64) / ASINH_ALPHA
    return (float(header["BOFFSET"]) + 2.0 * float(header["BSOFTEN"]) * np.sinh(c)).astype(np.float32)


@dataclass(frozen=True)
class CutoutFile:
    """A multi-band cutout file in the project's layout (headers only)."""

    path: Path
    objid: int | str
    ra: float
    dec: float


@dataclass(frozen=True)
class BandFile:
    """One single-band cutout file (headers only)."""

    path: Path
    band: str
    objid: str | None
    """OBJID card, when the file has one."""
    stem: str
    """File name without suffix and band token: the object key when there is no OBJID."""
    ra: float | None
    dec: float | None
    shape: tuple[int, int]


def _name_band(name: str, bands: Sequence[str]) -> tuple[str | None, str]:
    """(band from a name token, the name without suffix and that token); the last band token wins.

    'rings.v3.skycell.1234.056.stk.g.unconv.fits' -> ('g', 'rings.v3.skycell.1234.056.stk.unconv');
    '1237648720693755918_r.fits' -> ('r', '1237648720693755918').
    """
    stem = _SUFFIX.sub("", name)
    token = re.compile(r"(?:^|[._\-])(" + "|".join(map(re.escape, bands)) + r")(?=[._\-]|$)")
    matches = list(token.finditer(stem))
    if not matches:
        return None, stem
    m = matches[-1]
    return m.group(1), (stem[:m.start()] + stem[m.end():]).strip("._-")


def _header_band(header: Mapping[str, Any], bands: Sequence[str]) -> str | None:
    for key in FILTER_KEYS:
        if key in header:
            text = str(header[key]).strip()
            if text[:1] in bands and (len(text) == 1 or not text[1].isalpha()):
                return text[:1]
    return None


def _centre(header: Mapping[str, Any], shape: tuple[int, int]) -> tuple[float, float] | tuple[None, None]:
    """(ra, dec) of the image centre from a celestial WCS, else RA/DEC-like cards, else (None, None)."""
    if str(header.get("CTYPE1", "")).startswith("RA--") and str(header.get("CTYPE2", "")).startswith("DEC-"):
        import warnings

        from astropy.io import fits
        from astropy.wcs import WCS

        hdr = fits.Header()
        for key in list(header.keys()):
            value = header[key]  # parsed on lookup (the fast reader's headers)
            if _WCS_KEY.match(key) and isinstance(value, (str, int, float, bool)):
                hdr[key] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PS1 headers carry non-standard cards astropy warns about
            w = WCS(hdr, naxis=2)
            ra, dec = w.all_pix2world([[(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0]], 0)[0]
        return float(ra), float(dec)
    for ra_key, dec_key in RA_KEYS:
        if ra_key in header and dec_key in header:
            try:
                return float(header[ra_key]), float(header[dec_key])
            except (TypeError, ValueError):
                continue
    return None, None


def _headers(path: Path) -> list[dict[str, Any]]:
    found = fast_read_headers(path)
    if found is not None:
        return found
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            return [dict(h.header) for h in hdul]
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise CutoutFormatError(f"{path}: not a readable FITS file ({reader_message(exc)})", CORRUPT_IMAGE, path) from exc


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class _Merged(Mapping):
    """An image HDU's header with the primary header's cards underneath (lookups only, values parsed)."""

    def __init__(self, top: Mapping[str, Any], below: Mapping[str, Any]) -> None:
        self.top, self.below = top, below

    def __getitem__(self, key: str) -> Any:
        return self.top[key] if key in self.top else self.below[key]

    def __contains__(self, key: object) -> bool:
        return key in self.top or key in self.below

    def __iter__(self):
        return iter(dict.fromkeys([*self.top.keys(), *self.below.keys()]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self.top.keys(), *self.below.keys()]))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def scan_file(path: str | Path, bands: Sequence[str]) -> CutoutFile | BandFile:
    """What a cutout file is, from its headers: a multi-band `CutoutFile` or one `BandFile`.

    CutoutFormatError when it is neither (unreadable, no 2-D image, band unknown).
    """
    path = Path(path)
    headers = _headers(path)
    names = {str(h.get("EXTNAME", "")).strip().upper() for h in headers[1:]}
    if names & {b.upper() for b in bands}:
        head = headers[0]
        return CutoutFile(path, parse_objid(head.get("OBJID", path.stem)),
                          _float(head.get("RA", "nan")), _float(head.get("DEC", "nan")))
    image = next((h for h in headers if int(h.get("NAXIS", 0) or 0) == 2), None)
    if image is None:
        raise CutoutFormatError(f"{path}: no 2-D image HDU and no band extensions: not a cutout")
    header = _Merged(image, headers[0])
    name_band, stem = _name_band(path.name, bands)
    band = _header_band(header, bands) or name_band
    if band is None:
        raise CutoutFormatError(f"{path}: band unknown (no {'/'.join(FILTER_KEYS)} card and no band token in the name)")
    shape = (int(image["NAXIS2"]), int(image["NAXIS1"]))
    ra, dec = _centre(header, shape)
    objid = header.get("OBJID")
    return BandFile(path, band, None if objid is None else str(objid).strip(), stem, ra, dec, shape)


@dataclass
class BandGroup:
    """The single-band files of one object (one per band)."""

    object_id: str
    ra: float | None
    dec: float | None
    files: dict[str, Path]

    def __str__(self) -> str:
        """The group's files, comma-separated (how skips and tables name it)."""
        return ",".join(str(p) for p in self.files.values())


@dataclass
class GroupSkip:
    """Files that make no object: a stable code and the detail."""

    files: list[str]
    code: str
    detail: str


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)


def _clusters(members: list[BandFile], radius_arcsec: float) -> list[list[BandFile]]:
    """Split one id/stem group by sky position (friends of friends within the radius)."""
    placed = [m for m in members if m.ra is not None]
    if len(placed) < 2 or len(placed) != len(members):
        return [members]
    from scipy.spatial import cKDTree

    xyz = _unit(np.array([m.ra for m in placed]), np.array([m.dec for m in placed]))
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    parent = list(range(len(placed)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in cKDTree(xyz).query_pairs(chord):
        parent[root(i)] = root(j)
    groups: dict[int, list[BandFile]] = {}
    for k, m in enumerate(placed):
        groups.setdefault(root(k), []).append(m)
    return list(groups.values())


def _mean_position(members: list[BandFile]) -> tuple[float | None, float | None]:
    placed = [m for m in members if m.ra is not None]
    if not placed:
        return None, None
    v = _unit(np.array([m.ra for m in placed]), np.array([m.dec for m in placed])).mean(axis=0)
    ra = math.degrees(math.atan2(v[1], v[0])) % 360.0
    dec = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
    return ra, dec


def group_band_files(
    files: Sequence[BandFile], bands: Sequence[str], radius_arcsec: float
) -> tuple[list[BandGroup], list[GroupSkip]]:
    """Objects made of one file per band; every file lands in a group or in a skip."""
    by_key: dict[str, list[BandFile]] = {}
    for f in files:
        by_key.setdefault(f.objid or f.stem, []).append(f)
    groups: list[BandGroup] = []
    skips: list[GroupSkip] = []
    for key in sorted(by_key):
        clusters = _clusters(by_key[key], radius_arcsec)
        for members in clusters:
            names = sorted(str(m.path) for m in members)
            ra, dec = _mean_position(members)
            seen: dict[str, list[BandFile]] = {}
            for m in members:
                seen.setdefault(m.band, []).append(m)
            missing = [b for b in bands if b not in seen]
            twice = [b for b in bands if len(seen.get(b, [])) > 1]
            shapes = sorted({m.shape for m in members})
            if twice:
                skips.append(GroupSkip(names, "duplicate_band", f"{twice} given more than once for object {key}"))
            elif missing:
                skips.append(GroupSkip(names, "incomplete_band_set", f"object {key} lacks {missing}"))
            elif len(shapes) > 1:
                skips.append(GroupSkip(names, "wrong_shape", f"band shapes differ: object {key} has {shapes}"))
            else:
                oid = key if len(clusters) == 1 else f"{key}_{ra:.6f}{dec:+.6f}"
                groups.append(BandGroup(oid, ra, dec, {b: seen[b][0].path for b in bands}))
    return groups, skips


def _read_image(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    got = fast_read_image(path)
    if got is not None:
        return got
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) == 2), None)
            if hdu is None:
                raise CutoutFormatError(f"{path}: no 2-D image HDU")
            return {**dict(hdul[0].header), **dict(hdu.header)}, np.asarray(hdu.data, np.float32)
    except CutoutFormatError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise CutoutFormatError(f"{path}: not a readable FITS image ({reader_message(exc)})", CORRUPT_IMAGE, path) from exc


def read_band_group(group: BandGroup) -> Cutout:
    """The group's pixels as one `Cutout` (linear counts, MAGZP per band)."""
    data: dict[str, np.ndarray] = {}
    magzp: dict[str, float] = {}
    exptime: dict[str, float] = {}
    seeing: dict[str, float] = {}
    scale = 0.25
    for band, path in group.files.items():
        header, pixels = _read_image(path)
        if "EXPTIME" not in header and "MAGZP" not in header:
            raise CutoutFormatError(f"{path}: no EXPTIME or MAGZP card (zero point unknown)")
        data[band] = linearise(pixels, header)
        exptime[band], magzp[band], band_seeing, band_scale = band_header_values(header)
        if band_seeing is not None:
            seeing[band] = band_seeing
        if band_scale is not None:
            scale = band_scale
    return Cutout(
        objid=parse_objid(group.object_id), ra=float("nan") if group.ra is None else group.ra,
        dec=float("nan") if group.dec is None else group.dec,
        data=data, magzp=magzp, exptime=exptime, seeing=seeing, pixel_scale=scale,
    )
