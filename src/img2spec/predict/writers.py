"""Write predictions: one SDSS-layout FITS per object, and an optional table for many."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from ..io.atomic import atomic_path
from ..io.sdss_spectrum import FLUX_UNIT, SDSSSpectrum, write_spectrum

NORMALISED_UNIT = "normalised: flux / PS1 Kron f_lambda (see FLUXNORM)"
FILE_PREFIX = "spec-pred-"
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class ObjectInfo:
    """What the runner knows about one input object."""

    objid: str
    source: str
    ra: float = float("nan")
    dec: float = float("nan")
    z: float | None = None
    mag: float | None = None
    """PS1 Kron AB magnitude in the bundle's normalisation band, if the user gave one."""


@dataclass
class ScaledPrediction:
    """One object's prediction in the units it is written in."""

    flux: np.ndarray
    sigma: np.ndarray
    norm: float | None
    """None: normalised output; else the factor applied (1e-17 erg/s/cm^2/A)."""

    @property
    def ivar(self) -> np.ndarray:
        sigma = np.asarray(self.sigma, np.float64)
        ivar = np.zeros_like(sigma)
        ok = np.isfinite(sigma) & (sigma > 0)
        ivar[ok] = 1.0 / sigma[ok] ** 2
        return ivar.astype(np.float32)


def output_stem(objid: str) -> str:
    """File stem of an object's outputs: `spec-pred-<objid>` (never clashes with input cutouts)."""
    return FILE_PREFIX + (_SAFE.sub("_", str(objid)) or "object")


def scale(predictor, info: ObjectInfo, flux: np.ndarray, sigma: np.ndarray) -> ScaledPrediction:
    """Apply the photometric norm if a finite magnitude is known; otherwise stay normalised."""
    if info.mag is not None and np.isfinite(info.mag):
        norm = float(predictor.norm_from_mag(info.mag))
        return ScaledPrediction(np.asarray(flux) * norm, np.asarray(sigma) * norm, norm)
    return ScaledPrediction(np.asarray(flux), np.asarray(sigma), None)


def _norm_cards(predictor, info: ObjectInfo, pred: ScaledPrediction) -> dict[str, Any]:
    norm = predictor.manifest["normalisation"]
    if pred.norm is None:
        return {
            "FLUXNORM": ("NORMALISED", "flux/sigma divided by the PS1 Kron f_lambda"),
            "NORMBAND": (norm["band"], "band whose Kron flux would scale to 1e-17 units"),
            "NORMWAVE": (float(norm["wavelength_A"]), "[A] where that Kron flux is evaluated"),
            "BUNIT": NORMALISED_UNIT,
        }
    return {
        "FLUXNORM": ("PS1_KRON", "flux scaled by the given PS1 Kron magnitude"),
        "NORMBAND": (norm["band"], "PS1 band of the normalisation magnitude"),
        "NORMMAG": (float(info.mag), "[AB mag] PS1 Kron magnitude used"),
        "NORMFAC": (pred.norm, "[1e-17 erg/s/cm^2/A] factor applied"),
        "NORMWAVE": (float(norm["wavelength_A"]), "[A] effective wavelength of the norm"),
        "BUNIT": FLUX_UNIT,
    }


def write_prediction_fits(path: Path, predictor, info: ObjectInfo, pred: ScaledPrediction) -> Path:
    """One object in the SDSS spec layout: loglam, flux, ivar = 1/sigma^2; header names the model."""
    return write_spectrum(*prediction_record(path, predictor, info, pred))


def prediction_record(path: Path, predictor, info: ObjectInfo, pred: ScaledPrediction) -> tuple:
    """The picklable arguments of `write_spectrum` for one prediction (so worker processes can write it)."""
    z = float(info.z) if info.z is not None and np.isfinite(info.z) else float("nan")
    spec = SDSSSpectrum(
        loglam=predictor.loglam,
        flux=np.asarray(pred.flux, np.float32),
        ivar=pred.ivar,
        and_mask=np.zeros(len(predictor.loglam), np.int32),
        z=z, plate=0, mjd=0, fiberid=0, ra=float(info.ra), dec=float(info.dec),
        model=np.asarray(pred.flux, np.float32),
        extra={"OBJID": str(info.objid), "PREDICTED": True},
    )
    header = dict(predictor.header())
    header.update(_norm_cards(predictor, info, pred))
    header["ZKNOWN"] = (bool(np.isfinite(z)), "redshift given by the user (else Z = NaN)")
    header["SRCFILE"] = (Path(info.source).name[:68], "input cutout")
    unit = FLUX_UNIT if pred.norm is not None else NORMALISED_UNIT
    return path, spec, header, unit


class TableWriter:
    """Many predictions in one file: `.fits` (array columns) or `.csv` (one column per pixel).

    Rows are written batch by batch (CSV streams to disk; FITS keeps the batches and
    writes once at close). The file appears under its final name only on `close()`.
    """

    def __init__(self, path: str | Path, predictor) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".fits", ".csv"):
            raise ValueError(f"--table {self.path}: use a .fits or .csv file name")
        self.kind = suffix[1:]
        self.predictor = predictor
        self._rows: list[dict[str, Any]] = []
        self._flux: list[np.ndarray] = []
        self._ivar: list[np.ndarray] = []
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._csv_header = True
        wave = predictor.wave
        self._flux_cols = [f"flux_{w:.2f}" for w in wave]
        self._sigma_cols = [f"sigma_{w:.2f}" for w in wave]

    def add(self, infos: list[ObjectInfo], preds: list[ScaledPrediction], files: list[str]) -> None:
        rows = [
            {"objid": i.objid, "source": i.source, "output": f, "ra": i.ra, "dec": i.dec,
             "z": np.nan if i.z is None else i.z, "norm": np.nan if p.norm is None else p.norm}
            for i, p, f in zip(infos, preds, files)
        ]
        if self.kind == "csv":
            meta = pd.DataFrame(rows)
            flux = pd.DataFrame(np.stack([p.flux for p in preds]), columns=self._flux_cols)
            sigma = pd.DataFrame(np.stack([p.sigma for p in preds]), columns=self._sigma_cols)
            frame = pd.concat([meta, flux, sigma], axis=1)
            frame.to_csv(self._tmp, mode="w" if self._csv_header else "a", header=self._csv_header,
                         index=False, float_format="%.6g")
            self._csv_header = False
        else:
            self._rows.extend(rows)
            self._flux.extend(np.asarray(p.flux, np.float32) for p in preds)
            self._ivar.extend(p.ivar for p in preds)

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None (and no file) if nothing was predicted."""
        if self.kind == "fits" and self._rows:
            self._write_fits()
        empty = (self.kind == "csv" and self._csv_header) or (self.kind == "fits" and not self._rows)
        if empty:
            self._ctx.__exit__(RuntimeError, RuntimeError("no rows"), None)  # removes the temp file
            return None
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def _write_fits(self) -> None:
        meta = pd.DataFrame(self._rows)
        n_pix = len(self.predictor.wave)
        unitless = meta["norm"].isna().all()
        cols = [
            fits.Column("OBJID", f"{max(1, meta['objid'].str.len().max())}A", array=meta["objid"].to_numpy()),
            fits.Column("SOURCE", f"{max(1, meta['source'].str.len().max())}A", array=meta["source"].to_numpy()),
            fits.Column("RA", "D", array=meta["ra"].to_numpy(np.float64)),
            fits.Column("DEC", "D", array=meta["dec"].to_numpy(np.float64)),
            fits.Column("Z", "D", array=meta["z"].to_numpy(np.float64)),
            fits.Column("NORM", "D", array=meta["norm"].to_numpy(np.float64), unit=FLUX_UNIT),
            fits.Column("FLUX", f"{n_pix}E", array=np.stack(self._flux),
                        unit=NORMALISED_UNIT if unitless else "see NORM: NaN norm = normalised"),
            fits.Column("IVAR", f"{n_pix}E", array=np.stack(self._ivar)),
        ]
        primary = fits.PrimaryHDU()
        for key, value in self.predictor.header().items():
            primary.header[key] = value
        table = fits.BinTableHDU.from_columns(cols, name="PREDICTIONS")
        wave = fits.BinTableHDU.from_columns(
            [fits.Column("loglam", "D", array=self.predictor.loglam)], name="WAVE"
        )
        fits.HDUList([primary, table, wave]).writeto(self._tmp, overwrite=True)
