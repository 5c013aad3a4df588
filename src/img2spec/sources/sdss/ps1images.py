"""Pan-STARRS1 stack cutouts from the PS1 image cutout service, one 5-band FITS per object.

Two documented calls per object: `ps1filenames.py?ra=&dec=&filters=grizy&type=stack`
(a whitespace table: projcell subcell ra dec filter mjd type filename shortname badflag),
then one `fitscut.cgi?red=<filename>&format=fits&x=<ra>&y=<dec>&size=<n>&output_size=<n>`
per band. Cutouts come back as linear fluxes with EXPTIME in the header (zero point
25 + 2.5 log10 EXPTIME); whole-skycell stack files instead carry an asinh scaling
(BSOFTEN/BOFFSET), undone by `linearise` when present.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from astropy.io import fits

from ... import BANDS
from ...config.sdss import SDSSParams
from ...io.ps1_cutout import Cutout, CutoutFormatError, magzp_for_exptime, read_cutout, write_cutout
from ...io.ps1_single import ASINH_ALPHA, linearise  # noqa: F401  (one asinh undo, shared with pack)
from .http import BadContent, FetchError, Fetcher

FILENAME_COLUMNS = ("projcell", "subcell", "ra", "dec", "filter", "mjd", "type", "filename", "shortname", "badflag")


def parse_filenames(text: str, bands: tuple[str, ...]) -> dict[str, str]:
    """{band: stack filename} from a ps1filenames.py table; BadContent if it is not one."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].split() != list(FILENAME_COLUMNS):
        raise BadContent(f"not a ps1filenames table (starts {' '.join(text[:120].split())!r})")
    col = {name: i for i, name in enumerate(FILENAME_COLUMNS)}
    out: dict[str, str] = {}
    for ln in lines[1:]:
        parts = ln.split()
        if len(parts) != len(FILENAME_COLUMNS):
            raise BadContent(f"ps1filenames row has {len(parts)} fields: {ln!r}")
        band = parts[col["filter"]]
        if band in bands and parts[col["type"]] == "stack":
            out.setdefault(band, parts[col["filename"]])
    return out


def parse_cutout(body: bytes, size: int) -> tuple[np.ndarray, float]:
    """(linear pixels, EXPTIME) from one fitscut FITS answer; BadContent if malformed."""
    try:
        with fits.open(io.BytesIO(body), memmap=False) as hdul:
            hdu = next((h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) == 2), None)
            if hdu is None:
                raise BadContent("FITS cutout has no 2-D image HDU")
            if hdu.data.shape != (size, size):
                raise BadContent(f"cutout shape {hdu.data.shape}, expected {(size, size)}")
            header = hdu.header
            if "EXPTIME" not in header or not float(header["EXPTIME"]) > 0:
                raise BadContent("cutout header lacks a positive EXPTIME (zero point unknown)")
            return linearise(np.asarray(hdu.data, np.float32), header), float(header["EXPTIME"])
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, BadContent):
            raise
        raise BadContent(f"not a readable FITS cutout ({exc})") from None


def verify_cutout(path: Path, objid: int, size: int, bands: tuple[str, ...] = BANDS) -> None:
    """Raise CutoutFormatError unless `path` is a complete cutout of `objid`."""
    cut = read_cutout(path, bands)
    if str(cut.objid) != str(objid):
        raise CutoutFormatError(f"{path}: holds object {cut.objid}, expected {objid}")
    for band in bands:
        if cut.data[band].shape != (size, size):
            raise CutoutFormatError(f"{path}: band {band} has shape {cut.data[band].shape}")


def fetch_cutout(
    p: SDSSParams, fetcher: Fetcher, dest: Path, objid: int, ra: float, dec: float,
    size: int, pixel_scale: float, bands: tuple[str, ...] = BANDS,
) -> str:
    """Make `dest` a verified 5-band cutout; returns 'present', 'refetched' or 'fetched'."""
    outcome = "fetched"
    if dest.exists():
        try:
            verify_cutout(dest, objid, size, bands)
            return "present"
        except CutoutFormatError:
            outcome = "refetched"
    names = fetcher.get(
        p.ps1_filenames_url, params={"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "filters": "".join(bands), "type": "stack"},
        check=lambda body: parse_filenames(body.decode("utf-8", "replace"), bands),
    )
    missing = [b for b in bands if b not in names]
    if missing:
        raise FetchError(p.ps1_filenames_url, 200, f"no PS1 stack image in bands {missing} at ra={ra:.6f} dec={dec:.6f}")
    data: dict[str, np.ndarray] = {}
    exptime: dict[str, float] = {}
    for band in bands:
        query = {"red": names[band], "format": "fits", "x": f"{ra:.7f}", "y": f"{dec:.7f}",
                 "size": size, "output_size": size}
        data[band], exptime[band] = fetcher.get(p.ps1_fitscut_url, params=query,
                                                check=lambda body: parse_cutout(body, size))
    cutout = Cutout(
        objid=int(objid), ra=float(ra), dec=float(dec), data=data,
        magzp={b: magzp_for_exptime(exptime[b]) for b in bands}, exptime=exptime, pixel_scale=pixel_scale,
    )
    write_cutout(dest, cutout, header={"SOURCE": ("PS1 fitscut", "Pan-STARRS1 image cutout service")})
    return outcome
