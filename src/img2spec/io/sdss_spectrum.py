"""Read and write spectra in the SDSS DR16 `spec-PLATE-MJD-FIBER.fits` layout.

HDU1 `COADD`: flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model
(flux in 1e-17 erg/s/cm^2/A). HDU2 `SPECOBJ`: one row with Z, CLASS, PLATE, MJD,
FIBERID, PLUG_RA, PLUG_DEC and friends. The mock survey writes, and every stage
reads, through this module, so mock and real files cannot differ in format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from .atomic import atomic_path

FLUX_UNIT = "1e-17 erg/s/cm^2/Angstrom"
COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask")
SPECOBJ_COLUMNS = ("Z", "CLASS", "PLATE", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC")


class SpectrumFormatError(ValueError):
    """A file is not an SDSS spectrum in the expected layout; the message names the file."""


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

    @property
    def wavelength(self) -> np.ndarray:
        return 10.0 ** self.loglam.astype(np.float64)

    @property
    def good(self) -> np.ndarray:
        """Pixels the metric counts: ivar > 0, and_mask == 0, finite flux."""
        return (self.ivar > 0) & (self.and_mask == 0) & np.isfinite(self.flux) & np.isfinite(self.ivar)


def write_spectrum(
    path: str | Path, spec: SDSSSpectrum, header: dict[str, Any] | None = None, flux_unit: str = FLUX_UNIT
) -> Path:
    """Write `spec` atomically as spec-PLATE-MJD-FIBER.fits (`flux_unit`: TUNIT of flux, e.g. for normalised predictions)."""
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
    coadd = fits.BinTableHDU.from_columns(cols, name="COADD")
    row: dict[str, Any] = {
        "PLATE": spec.plate, "MJD": spec.mjd, "FIBERID": spec.fiberid,
        "PLUG_RA": spec.ra, "PLUG_DEC": spec.dec, "CLASS": spec.cls, "Z": spec.z,
    }
    row.update(spec.extra)
    specobj = fits.BinTableHDU.from_columns([_column(k, v) for k, v in row.items()], name="SPECOBJ")
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["TELESCOP"] = "SDSS 2.5-M"
    hdr["PLATEID"] = (spec.plate, "Plate Id")
    hdr["MJD"] = (spec.mjd, "MJD of observation")
    hdr["FIBERID"] = (spec.fiberid, "Fiber Id")
    hdr["PLUG_RA"] = (spec.ra, "RA of object [deg]")
    hdr["PLUG_DEC"] = (spec.dec, "Dec of object [deg]")
    hdr["BUNIT"] = FLUX_UNIT
    for key, value in (header or {}).items():
        hdr[key] = value
    with atomic_path(path) as tmp:
        fits.HDUList([primary, coadd, specobj]).writeto(tmp, overwrite=True)
    return Path(path)


def _column(name: str, value: Any) -> fits.Column:
    if isinstance(value, str):
        return fits.Column(name, f"{max(len(value), 1)}A", array=np.array([value]))
    if isinstance(value, (bool, np.bool_)):
        return fits.Column(name, "L", array=np.array([value]))
    if isinstance(value, (int, np.integer)):
        return fits.Column(name, "K", array=np.array([value], np.int64))
    return fits.Column(name, "D", array=np.array([value], np.float64))


def read_spectrum(path: str | Path) -> SDSSSpectrum:
    """Read an SDSS spec file (DR8-DR18 layout). Raises SpectrumFormatError naming the file."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            try:
                coadd = hdul["COADD"].data
                specobj = hdul["SPECOBJ"].data
            except KeyError:
                # Older files have unnamed extensions in the same order.
                if len(hdul) < 3:
                    raise SpectrumFormatError(f"{path}: no COADD/SPECOBJ extensions") from None
                coadd, specobj = hdul[1].data, hdul[2].data
            if coadd is None or specobj is None or len(specobj) < 1:
                raise SpectrumFormatError(f"{path}: empty COADD or SPECOBJ table")
            names = {n.lower() for n in coadd.columns.names}
            missing = [c for c in COADD_COLUMNS if c not in names]
            if missing:
                raise SpectrumFormatError(f"{path}: COADD lacks columns {missing}")
            snames = {n.upper() for n in specobj.columns.names}
            smissing = [c for c in SPECOBJ_COLUMNS if c not in snames]
            if smissing:
                raise SpectrumFormatError(f"{path}: SPECOBJ lacks columns {smissing}")
            row = specobj[0]
            return SDSSSpectrum(
                loglam=np.asarray(coadd["loglam"], np.float64),
                flux=np.asarray(coadd["flux"], np.float32),
                ivar=np.asarray(coadd["ivar"], np.float32),
                and_mask=np.asarray(coadd["and_mask"], np.int32),
                model=np.asarray(coadd["model"], np.float32) if "model" in names else None,
                z=float(row["Z"]),
                plate=int(row["PLATE"]),
                mjd=int(row["MJD"]),
                fiberid=int(row["FIBERID"]),
                ra=float(row["PLUG_RA"]),
                dec=float(row["PLUG_DEC"]),
                cls=str(row["CLASS"]).strip(),
            )
    except SpectrumFormatError:
        raise
    except (OSError, TypeError, ValueError, IndexError) as exc:
        raise SpectrumFormatError(f"{path}: not a readable SDSS spectrum ({exc})") from exc


def sdss_loglam_grid(wave_min: float = 3800.0, wave_max: float = 9200.0, step: float = 1e-4) -> np.ndarray:
    """The SDSS coadd grid: log10(lambda) on multiples of `step` covering [wave_min, wave_max]."""
    lo = np.ceil(np.log10(wave_min) / step)
    hi = np.floor(np.log10(wave_max) / step)
    return np.arange(lo, hi + 1) * step
