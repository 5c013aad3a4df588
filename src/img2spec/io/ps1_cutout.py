"""Read and write 5-band Pan-STARRS1 cutouts: one FITS file per object.

Layout: an empty primary HDU with OBJID/RA/DEC, then one image HDU per band with
EXTNAME = the band letter upper-cased ('G', 'R', 'I', 'Z', 'Y') in g, r, i, z, y
order. Pixels are *linear* fluxes in counts; each band header carries EXPTIME and
MAGZP = 25 + 2.5 log10(EXPTIME) so that AB mag = -2.5 log10(counts) + MAGZP, a
TAN WCS at 0.25 arcsec/pixel centred on the object, FILTER and SEEING (arcsec).
Band HDUs are looked up by name, never by position (the original study's code
silently stored them in y, z, i, r, g order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from astropy.io import fits

from .. import BANDS
from .atomic import atomic_path
from .errors import FileFormatError, fits_truncated, reader_message

if TYPE_CHECKING:
    from astropy.wcs import WCS

PS1_ZP_BASE = 25.0
"""PS1 stack zero point in counts per second: ZP = 25 + 2.5 log10(EXPTIME)."""


CORRUPT_IMAGE = "corrupt_image"
"""Reason code: the bytes are not a readable FITS file (truncated, garbage)."""
MISSING_BAND = "missing_band"
"""Reason code: no image HDU named after a requested band."""
IMAGE_WRONG_LAYOUT = "image_wrong_layout"
"""Reason code: a band HDU is not a 2-D image (a table, a cube, no data)."""
BAD_IMAGE_HEADER = "bad_image_header"
"""Reason code: EXPTIME or MAGZP missing their meaning (non-numeric, EXPTIME <= 0, non-finite)."""


class CutoutFormatError(FileFormatError):
    """A cutout file is unreadable or lacks a band; the message names the file and band."""

    default_reason = IMAGE_WRONG_LAYOUT


@dataclass
class Cutout:
    """A 5-band cutout: `data[band]` is a 2-D linear-flux image in counts."""

    objid: int
    ra: float
    dec: float
    data: dict[str, np.ndarray]
    magzp: dict[str, float]
    exptime: dict[str, float] = field(default_factory=dict)
    seeing: dict[str, float] = field(default_factory=dict)
    pixel_scale: float = 0.25

    def stack(self, bands: tuple[str, ...] = BANDS) -> np.ndarray:
        """(H, W, n_bands) float32 array, channels in `bands` order."""
        return np.stack([np.asarray(self.data[b], np.float32) for b in bands], axis=-1)

    def to_maggies(self, band: str) -> np.ndarray:
        """Pixels in AB maggies (1 maggie = the AB zero point, about 3631 Jy)."""
        return np.asarray(self.data[band], np.float64) * 10 ** (-0.4 * self.magzp[band])


def magzp_for_exptime(exptime: float) -> float:
    return PS1_ZP_BASE + 2.5 * float(np.log10(exptime))


def band_header_values(h: Mapping[str, Any]) -> tuple[float, float, float | None, float | None]:
    """(EXPTIME, MAGZP, SEEING or None, pixel scale in arcsec or None) from one band header.

    Shared by `read_cutout` and the fast plain-FITS reader in prep, so both interpret
    headers the same way (MAGZP defaults to 25 + 2.5 log10 EXPTIME, PS1's convention).
    """
    try:
        exptime = float(h.get("EXPTIME", 1.0))
        magzp = float(h["MAGZP"]) if "MAGZP" in h else None
        seeing = float(h["SEEING"]) if "SEEING" in h else None
        scale = abs(float(h["CDELT2"])) * 3600.0 if "CDELT2" in h else None
    except (TypeError, ValueError) as exc:
        raise CutoutFormatError(f"non-numeric header value ({exc})", BAD_IMAGE_HEADER) from None
    if not (np.isfinite(exptime) and exptime > 0):
        # log10 of it would give an infinite zero point and an all-zero or infinite image
        raise CutoutFormatError(f"EXPTIME={h.get('EXPTIME')!r} is not a positive exposure time", BAD_IMAGE_HEADER)
    magzp = magzp_for_exptime(exptime) if magzp is None else magzp
    if not np.isfinite(magzp):
        raise CutoutFormatError(f"MAGZP={h.get('MAGZP')!r} is not finite", BAD_IMAGE_HEADER)
    return exptime, magzp, seeing, scale


def parse_objid(raw: Any) -> int | str:
    """OBJID header value as an int when it is a decimal number, else as given."""
    text = str(raw)
    return int(text) if text.lstrip("-").isdigit() else raw


def cutout_wcs(ra: float, dec: float, shape: tuple[int, int], pixel_scale: float) -> WCS:
    # imported here: astropy.wcs pulls in astropy.coordinates and astropy.table (~1 s), which
    # readers of cutouts (every survey worker) never need
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    return w


def write_cutout(path: str | Path, cutout: Cutout, header: Mapping[str, Any] | None = None) -> Path:
    """Write a 5-band cutout atomically."""
    primary = fits.PrimaryHDU()
    primary.header["OBJID"] = (str(cutout.objid), "object id (SDSS photometric objid)")
    primary.header["RA"] = (cutout.ra, "[deg] cutout centre")
    primary.header["DEC"] = (cutout.dec, "[deg] cutout centre")
    primary.header["BANDS"] = ",".join(b for b in BANDS if b in cutout.data)
    primary.header["ORIGIN"] = "img2spec"
    for key, value in (header or {}).items():
        primary.header[key] = value
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for band in BANDS:
        if band not in cutout.data:
            continue
        img = np.asarray(cutout.data[band], np.float32)
        hdr = cutout_wcs(cutout.ra, cutout.dec, img.shape, cutout.pixel_scale).to_header()
        hdr["FILTER"] = (f"{band}.00000", "PS1 filter")
        exptime = cutout.exptime.get(band, 10 ** ((cutout.magzp[band] - PS1_ZP_BASE) / 2.5))
        hdr["EXPTIME"] = (float(exptime), "[s] stack exposure time")
        hdr["MAGZP"] = (float(cutout.magzp[band]), "AB zero point: m = -2.5 log10(counts) + MAGZP")
        hdr["BUNIT"] = "count"
        if band in cutout.seeing:
            hdr["SEEING"] = (float(cutout.seeing[band]), "[arcsec] PSF FWHM")
        hdus.append(fits.ImageHDU(img, header=hdr, name=band.upper()))
    with atomic_path(path) as tmp:
        fits.HDUList([primary, *hdus]).writeto(tmp, overwrite=True)
    return Path(path)


def read_cutout(path: str | Path, bands: tuple[str, ...] = BANDS) -> Cutout:
    """Read a 5-band cutout; a missing band raises CutoutFormatError naming it."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            head = hdul[0].header
            data: dict[str, np.ndarray] = {}
            magzp: dict[str, float] = {}
            exptime: dict[str, float] = {}
            seeing: dict[str, float] = {}
            scale = 0.25
            for band in bands:
                try:
                    hdu = hdul[band.upper()]
                except KeyError:
                    if fits_truncated(hdul, path):  # the band was cut off, not left out
                        raise CutoutFormatError(f"{path}: truncated FITS file (band {band} missing)",
                                                CORRUPT_IMAGE, path) from None
                    raise CutoutFormatError(f"{path}: band {band} missing", MISSING_BAND, path) from None
                if not isinstance(hdu, (fits.ImageHDU, fits.PrimaryHDU, fits.CompImageHDU)) \
                        or hdu.data is None or hdu.data.ndim != 2:
                    raise CutoutFormatError(f"{path}: band {band} is not a 2-D image ({type(hdu).__name__})",
                                            IMAGE_WRONG_LAYOUT, path)
                data[band] = np.asarray(hdu.data, np.float32)
                try:
                    exptime[band], magzp[band], band_seeing, band_scale = band_header_values(hdu.header)
                except CutoutFormatError as exc:
                    raise CutoutFormatError(f"{path}: band {band}: {exc}", exc.reason, path) from None
                if band_seeing is not None:
                    seeing[band] = band_seeing
                if band_scale is not None:
                    scale = band_scale
            return Cutout(
                objid=parse_objid(head.get("OBJID", path.stem)),
                ra=float(head.get("RA", np.nan)),
                dec=float(head.get("DEC", np.nan)),
                data=data, magzp=magzp, exptime=exptime, seeing=seeing, pixel_scale=scale,
            )
    except CutoutFormatError:
        raise
    except (OSError, EOFError) as exc:
        raise CutoutFormatError(f"{path}: not a readable FITS file ({reader_message(exc)})", CORRUPT_IMAGE, path) from exc
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        # astropy raises these for damaged headers and for values of the wrong kind
        raise CutoutFormatError(f"{path}: not a readable cutout ({type(exc).__name__}: {reader_message(exc)})",
                                CORRUPT_IMAGE, path) from exc
