"""Read and write spectra in the SDSS DR16 `spec-PLATE-MJD-FIBER.fits` layout.

HDU1 `COADD`: flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model
(flux in 1e-17 erg/s/cm^2/A). HDU2 `SPECOBJ`: one row with Z, CLASS, PLATE, MJD,
FIBERID, PLUG_RA, PLUG_DEC and friends. The mock survey writes, and every stage
reads, through this module, so mock and real files cannot differ in format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.io import fits

from .atomic import atomic_path
from .errors import FileFormatError, fits_truncated, reader_message

FLUX_UNIT = "1e-17 erg/s/cm^2/Angstrom"
COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask")
SPECOBJ_COLUMNS = ("Z", "CLASS", "PLATE", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC")


CORRUPT_SPECTRUM = "corrupt_spectrum"
"""Reason code: the bytes are not a readable FITS file (truncated, garbage)."""
SPECTRUM_WRONG_LAYOUT = "spectrum_wrong_layout"
"""Reason code: FITS, but not SDSS's HDUs (no COADD/SPECOBJ tables, image HDUs, empty or ragged tables)."""
SPECTRUM_MISSING_COLUMNS = "spectrum_missing_columns"
"""Reason code: COADD or SPECOBJ lacks a required column (e.g. another survey's column names)."""


class SpectrumFormatError(FileFormatError):
    """A file is not an SDSS spectrum in the expected layout; the message names the file."""

    default_reason = SPECTRUM_WRONG_LAYOUT


@dataclass
class SDSSSpectrum:
    """One spectrum as stored in an SDSS spec file (observed frame)."""

    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    and_mask: np.ndarray
    z: float
    plate: int
    mjd: int
    fiberid: int
    ra: float
    dec: float
    cls: str = "GALAXY"
    model: np.ndarray | None = None
    sky: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further SPECOBJ columns to write (e.g. OBJID, SPECOBJID, ZWARNING, VDISP)."""
    columns: dict[str, tuple[np.ndarray, str | None]] = field(default_factory=dict)
    """Further COADD columns to write after the SDSS ones: name -> (values per pixel, unit or None)."""
    observed: bool = True
    """False for a spectrum nobody observed (a prediction): no telescope, plate, MJD or fibre cards."""

    @property
    def wavelength(self) -> np.ndarray:
        return 10.0 ** self.loglam.astype(np.float64)

    @property
    def good(self) -> np.ndarray:
        """Pixels the metric counts: ivar > 0, and_mask == 0, finite flux."""
        return (self.ivar > 0) & (self.and_mask == 0) & np.isfinite(self.flux) & np.isfinite(self.ivar)


def write_spectrum(
    path: str | Path, spec: SDSSSpectrum, header: dict[str, Any] | None = None, flux_unit: str = FLUX_UNIT,
    extra_hdus: Sequence[fits.BinTableHDU] = (),
) -> Path:
    """Write `spec` atomically as spec-PLATE-MJD-FIBER.fits (`flux_unit`: TUNIT of flux, e.g. for normalised
    predictions); `extra_hdus` follow COADD and SPECOBJ (SDSS readers look at those two only)."""
    n = len(spec.loglam)
    for name in ("flux", "ivar", "and_mask"):
        if len(getattr(spec, name)) != n:
            raise ValueError(f"{path}: column {name} has {len(getattr(spec, name))} pixels, loglam has {n}")
    zeros = np.zeros(n, np.float32)
    cols = [
        fits.Column("flux", "E", array=np.asarray(spec.flux, np.float32), unit=flux_unit),
        fits.Column("loglam", "E", array=np.asarray(spec.loglam, np.float32)),
        fits.Column("ivar", "E", array=np.asarray(spec.ivar, np.float32)),
        fits.Column("and_mask", "J", array=np.asarray(spec.and_mask, np.int32)),
        fits.Column("or_mask", "J", array=np.asarray(spec.and_mask, np.int32)),
        fits.Column("wdisp", "E", array=np.ones(n, np.float32)),
        fits.Column("sky", "E", array=zeros if spec.sky is None else np.asarray(spec.sky, np.float32)),
        fits.Column("model", "E", array=zeros if spec.model is None else np.asarray(spec.model, np.float32)),
    ]
    for name, (values, unit) in spec.columns.items():
        values = np.asarray(values)
        cols.append(fits.Column(name, "D" if values.dtype == np.float64 else "E", array=values, unit=unit))
    coadd = fits.BinTableHDU.from_columns(cols, name="COADD")
    row: dict[str, Any] = {
        "PLATE": spec.plate, "MJD": spec.mjd, "FIBERID": spec.fiberid,
        "PLUG_RA": spec.ra, "PLUG_DEC": spec.dec, "CLASS": spec.cls, "Z": spec.z,
    }
    row.update(spec.extra)
    specobj = fits.BinTableHDU.from_columns([_column(k, v) for k, v in row.items()], name="SPECOBJ")
    primary = fits.PrimaryHDU()
    hdr = primary.header
    if spec.observed:
        hdr["TELESCOP"] = "SDSS 2.5-M"
        hdr["PLATEID"] = (spec.plate, "Plate Id")
        hdr["MJD"] = (spec.mjd, "MJD of observation")
        hdr["FIBERID"] = (spec.fiberid, "Fiber Id")
        hdr["PLUG_RA"] = (spec.ra, "RA of object [deg]")
        hdr["PLUG_DEC"] = (spec.dec, "Dec of object [deg]")
    hdr["BUNIT"] = flux_unit
    for key, value in (header or {}).items():
        hdr[key] = value
    with atomic_path(path) as tmp:
        fits.HDUList([primary, coadd, specobj, *extra_hdus]).writeto(tmp, overwrite=True)
    return Path(path)


def _column(name: str, value: Any) -> fits.Column:
    if isinstance(value, str):
        return fits.Column(name, f"{max(len(value), 1)}A", array=np.array([value]))
    if isinstance(value, (bool, np.bool_)):
        return fits.Column(name, "L", array=np.array([value]))
    if isinstance(value, (int, np.integer)):
        return fits.Column(name, "K", array=np.array([value], np.int64))
    return fits.Column(name, "D", array=np.array([value], np.float64))


def _table(hdul: fits.HDUList, name: str, index: int, path: Path):
    """The data of table extension `name` (older files: unnamed, at `index`); errors name the file."""
    try:
        hdu = hdul[name]
    except KeyError:
        if len(hdul) <= index:
            raise SpectrumFormatError(f"{path}: no {name} extension (HDUs: {[h.name for h in hdul]})",
                                      SPECTRUM_WRONG_LAYOUT, path) from None
        hdu = hdul[index]
    if not isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
        raise SpectrumFormatError(f"{path}: HDU {hdu.name or index} is a {type(hdu).__name__}, not the {name} table",
                                  SPECTRUM_WRONG_LAYOUT, path)
    if hdu.data is None or len(hdu.data) < 1:
        raise SpectrumFormatError(f"{path}: empty {name} table", SPECTRUM_WRONG_LAYOUT, path)
    return hdu.data


def _pixels(coadd, name: str, dtype, n: int, path: Path) -> np.ndarray:
    values = np.asarray(coadd[name], dtype)
    if values.shape != (n,):
        raise SpectrumFormatError(f"{path}: COADD column {name} has shape {values.shape}, expected ({n},)",
                                  SPECTRUM_WRONG_LAYOUT, path)
    return values


def read_spectrum(path: str | Path) -> SDSSSpectrum:
    """Read an SDSS spec file (DR8-DR18 layout).

    Any problem raises SpectrumFormatError naming the file, with `reason` one of
    CORRUPT_SPECTRUM, SPECTRUM_WRONG_LAYOUT, SPECTRUM_MISSING_COLUMNS; never another type.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            try:
                coadd = _table(hdul, "COADD", 1, path)
                specobj = _table(hdul, "SPECOBJ", 2, path)
            except SpectrumFormatError as exc:
                if fits_truncated(hdul, path):  # the missing extension was cut off, not left out
                    detail = str(exc).removeprefix(f"{path}: ")
                    raise SpectrumFormatError(f"{path}: truncated FITS file ({detail})", CORRUPT_SPECTRUM, path) from None
                raise
            names = {n.lower() for n in coadd.columns.names}
            missing = [c for c in COADD_COLUMNS if c not in names]
            if missing:
                raise SpectrumFormatError(f"{path}: COADD lacks columns {missing}", SPECTRUM_MISSING_COLUMNS, path)
            snames = {n.upper() for n in specobj.columns.names}
            smissing = [c for c in SPECOBJ_COLUMNS if c not in snames]
            if smissing:
                raise SpectrumFormatError(f"{path}: SPECOBJ lacks columns {smissing}", SPECTRUM_MISSING_COLUMNS, path)
            n = len(coadd)
            pixels = {
                "loglam": _pixels(coadd, "loglam", np.float64, n, path),
                "flux": _pixels(coadd, "flux", np.float32, n, path),
                "ivar": _pixels(coadd, "ivar", np.float32, n, path),
                "and_mask": _pixels(coadd, "and_mask", np.int32, n, path),
                "model": _pixels(coadd, "model", np.float32, n, path) if "model" in names else None,
            }
            row = specobj[0]
            try:
                ids = {"z": float(row["Z"]), "plate": int(row["PLATE"]), "mjd": int(row["MJD"]),
                       "fiberid": int(row["FIBERID"]), "ra": float(row["PLUG_RA"]), "dec": float(row["PLUG_DEC"]),
                       "cls": str(row["CLASS"]).strip()}
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpectrumFormatError(f"{path}: SPECOBJ values of the wrong kind ({exc})",
                                          SPECTRUM_WRONG_LAYOUT, path) from None
            return SDSSSpectrum(**pixels, **ids)
    except SpectrumFormatError:
        raise
    except (OSError, EOFError) as exc:
        raise SpectrumFormatError(f"{path}: not a readable FITS file ({reader_message(exc)})", CORRUPT_SPECTRUM,
                                  path) from exc
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        # astropy raises these for damaged headers and for values of the wrong kind (e.g. Z as text)
        raise SpectrumFormatError(f"{path}: not a readable SDSS spectrum ({type(exc).__name__}: {reader_message(exc)})",
                                  CORRUPT_SPECTRUM, path) from exc


def sdss_loglam_grid(wave_min: float = 3800.0, wave_max: float = 9200.0, step: float = 1e-4) -> np.ndarray:
    """The SDSS coadd grid: log10(lambda) on multiples of `step` covering [wave_min, wave_max]."""
    lo = np.ceil(np.log10(wave_min) / step)
    hi = np.floor(np.log10(wave_max) / step)
    return np.arange(lo, hi + 1) * step
