"""Write predictions: one SDSS-layout FITS per object, and an optional table for many.

One place builds what is written about an object: `object_cards` (FITS header cards of
the per-object file) and `object_row` (the scalar table columns). A new per-object
quantity (a predicted redshift, a line flux) goes into `ScaledPrediction.columns` and
appears in both, under the same name.

Units are valid FITS units that astropy parses (`Unit(s, format="fits")`): normalised
output is dimensionless (BUNIT/TUNIT ''), with the normalisation in its own keywords
(FLUXNORM, NORMBAND, NORMWAVE); flux-calibrated output is 1e-17 erg/s/cm^2/Angstrom,
written `10**-17 erg Angstrom-1 s-1 cm-2`. A prediction carries no telescope, plate,
MJD or fibre: nobody observed it.

A rest-frame bundle also predicts the rest-frame spectrum on the decoder's own log grid.
The per-object file carries it in the binary table extension `REST` (after COADD and
SPECOBJ): `WAVE` (rest-frame vacuum Angstrom), `FLUX` and `SIGMA` (the file's flux unit,
BUNIT) and `IVAR`, with `Z` / `ZSRC` cards naming the redshift the COADD spectrum was
decoded at. specutils reads it with
`Spectrum.read(path, format="tabular-fits", hdu="REST")` when the flux is calibrated, and
with `column_mapping=REST_COLUMN_MAPPING` when it is normalised (dimensionless: no flux
unit to recognise a flux column by). The table output gets `REST_FLUX` / `REST_IVAR` array
columns (normalised) and the grid in its `REST_WAVE` extension; a CSV table gets
`rest_flux_<A>` / `rest_sigma_<A>` columns.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.io import fits

from ..config.constants import SDSS_FLUX
from ..io.atomic import atomic_path
from ..io.sdss_spectrum import SDSSSpectrum, write_spectrum

CALIBRATED = SDSS_FLUX  # 1e-17 erg/s/cm^2/A
"""The SDSS flux unit, 1e-17 erg/s/cm^2/Angstrom."""
CALIBRATED_UNIT = CALIBRATED.to_string("fits")
"""As a FITS unit string (`10**-17 erg Angstrom-1 s-1 cm-2`): the FITS standard allows no `1e-17`."""
NORMALISED_UNIT = ""
"""Dimensionless: normalised flux (flux / PS1 Kron f_lambda; see FLUXNORM, NORMBAND, NORMWAVE)."""
WAVE_UNIT = u.AA.to_string("fits")
FILE_PREFIX = "spec-pred-"
MAX_ID_CHARS = 100
"""Longest object-id part of an output file name. File systems allow 255 bytes per name and the
atomic writer's temporary adds ~40 characters; longer ids are cut and get a hash suffix."""
ID_HASH_CHARS = 12
"""Hex digits of sha256(objid) appended to a cut or sanitised id: unique file names."""
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")

REST_EXTNAME = "REST"
"""Extension of the per-object file holding the rest-frame prediction (rest-frame bundles)."""
REST_WAVE_EXTNAME = "REST_WAVE"
"""Extension of the table output holding the rest-frame grid of its REST_FLUX / REST_IVAR columns."""
REST_COLUMN_MAPPING = {"WAVE": ("spectral_axis", "Angstrom"), "FLUX": ("flux", ""), "SIGMA": ("uncertainty", "")}
"""specutils `column_mapping` for the `REST` extension of a normalised (dimensionless) prediction."""

Z_FROM_CATALOGUE = "catalogue"
Z_FROM_PHOTOZ = "photo-z"
Z_UNKNOWN = "none"
"""`ZSOURCE` / `z_source` values: which redshift placed the lines (the user's, else the CNN's photo-z)."""


def redshift_columns(z_pred: float | None, z_err: float | None) -> dict[str, tuple[Any, str]]:
    """`ScaledPrediction.columns` of the CNN's photo-z: FITS cards Z_PRED / Z_ERR and table
    columns z_pred / z_err; none for a bundle whose CNN has no redshift head."""
    if z_pred is None:
        return {}
    return {"Z_PRED": (float(z_pred), "photo-z predicted by the CNN from the images"),
            "Z_ERR": (_finite_or_nan(z_err), "1-sigma of Z_PRED (CNN)")}


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
    z_source: str = Z_UNKNOWN
    """Where `z` came from (`Z_FROM_CATALOGUE`, ...); `Z_UNKNOWN` when there is none."""
    photometry: np.ndarray | None = None
    """PS1 Kron magnitudes in `img2spec.BANDS` order from the catalogue (a hybrid bundle's input), if given."""


@dataclass
class RestSpectrum:
    """One object's rest-frame prediction (rest-frame bundles)."""

    wave: np.ndarray
    """(R,) float64 rest-frame vacuum wavelength [Angstrom], the decoder's rest grid."""
    flux: np.ndarray
    """(R,) flux, in the unit of the prediction it belongs to."""
    sigma: np.ndarray
    """(R,) 1-sigma of `flux`."""
    z: float
    """The redshift the observed-frame spectrum was decoded at (the lines are measured at it)."""
    z_source: str
    """Where `z` came from: `Z_FROM_CATALOGUE` or `Z_FROM_PHOTOZ`."""

    def scaled(self, factor: float) -> "RestSpectrum":
        return RestSpectrum(self.wave, self.flux * factor, self.sigma * factor, self.z, self.z_source)


@dataclass
class ScaledPrediction:
    """One object's prediction in the units it is written in."""

    flux: np.ndarray
    sigma: np.ndarray
    norm: float | None
    """None: normalised output; else the factor applied (1e-17 erg/s/cm^2/A)."""
    normalised_flux: np.ndarray | None = None
    normalised_sigma: np.ndarray | None = None
    """The prediction before the factor (tables hold these, so one table has one unit)."""
    columns: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """Further per-object scalars, name -> (value, FITS comment): one header card and one table column each."""
    rest: RestSpectrum | None = None
    """The rest-frame prediction, normalised (x `norm` for the file's unit); None for an observed-frame bundle."""

    @property
    def unit(self) -> str:
        return CALIBRATED_UNIT if self.norm is not None else NORMALISED_UNIT

    @property
    def ivar(self) -> np.ndarray:
        return _ivar(self.sigma)


def _ivar(sigma: np.ndarray) -> np.ndarray:
    sigma = np.asarray(sigma, np.float64)
    ivar = np.zeros_like(sigma)
    ok = np.isfinite(sigma) & (sigma > 0)
    ivar[ok] = 1.0 / sigma[ok] ** 2
    return ivar.astype(np.float32)


def output_stem(objid: str) -> str:
    """File stem of an object's outputs: `spec-pred-<objid>` (never clashes with input cutouts).

    An id that is not a safe file name as it is (path characters, spaces, or longer than
    MAX_ID_CHARS) is cut and sanitised, and a short hash of the whole id is appended, so
    two ids never share a file and no id makes a name the file system refuses.
    """
    text = str(objid)
    safe = _SAFE.sub("_", text) or "object"
    if safe == text and len(text) <= MAX_ID_CHARS:
        return FILE_PREFIX + text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:ID_HASH_CHARS]
    return f"{FILE_PREFIX}{safe[:MAX_ID_CHARS]}-{digest}"


def scale(predictor, info: ObjectInfo, flux: np.ndarray, sigma: np.ndarray,
          rest: RestSpectrum | None = None) -> ScaledPrediction:
    """Apply the photometric norm if a finite magnitude is known; otherwise stay normalised.

    `rest` (normalised) is kept as it is: writers scale it with `norm` when they write it.
    """
    flux, sigma = np.asarray(flux), np.asarray(sigma)
    if info.mag is not None and np.isfinite(info.mag):
        norm = float(predictor.norm_from_mag(info.mag))
        return ScaledPrediction(flux * norm, sigma * norm, norm, flux, sigma, rest=rest)
    return ScaledPrediction(flux, sigma, None, flux, sigma, rest=rest)


def _finite_or_nan(x: float | None) -> float:
    return float(x) if x is not None and np.isfinite(x) else float("nan")


def _norm_cards(predictor, info: ObjectInfo, pred: ScaledPrediction) -> dict[str, Any]:
    norm = predictor.manifest["normalisation"]
    if pred.norm is None:
        return {
            "FLUXNORM": ("NORMALISED", "flux/sigma divided by the PS1 Kron f_lambda"),
            "NORMBAND": (norm["band"], "band whose Kron flux would scale to 1e-17 units"),
            "NORMWAVE": (float(norm["wavelength_A"]), "[Angstrom] where that Kron flux is evaluated"),
        }
    return {
        "FLUXNORM": ("PS1_KRON", "flux scaled by the given PS1 Kron magnitude"),
        "NORMBAND": (norm["band"], "PS1 band of the normalisation magnitude"),
        "NORMMAG": (float(info.mag), "[mag] PS1 Kron AB magnitude used"),
        "NORMFAC": (pred.norm, "factor applied, in the BUNIT unit"),
        "NORMWAVE": (float(norm["wavelength_A"]), "[Angstrom] effective wavelength of the norm"),
    }


def object_cards(predictor, info: ObjectInfo, pred: ScaledPrediction) -> dict[str, Any]:
    """Primary-header cards of one object's file: model, flux convention, id, redshift, extras."""
    cards = dict(predictor.header())
    cards["BUNIT"] = (pred.unit, "'' = dimensionless (see FLUXNORM)")
    cards.update(_norm_cards(predictor, info, pred))
    cards["OBJID"] = (str(info.objid), "object id, as in the input (whole)")
    cards["RA"] = (float(info.ra), "[deg] cutout centre")
    cards["DEC"] = (float(info.dec), "[deg] cutout centre")
    z = _finite_or_nan(info.z)
    cards["ZKNOWN"] = (bool(np.isfinite(z)), "a redshift is known (else Z = NaN)")
    cards["ZSOURCE"] = (info.z_source, "z placing the lines: catalogue, photo-z or none")
    cards["SRCFILE"] = (Path(info.source).name, "input cutout")
    for name, (value, comment) in pred.columns.items():
        if isinstance(value, float) and not np.isfinite(value):
            value = None  # FITS headers hold no NaN: an undefined value (the table keeps NaN)
        cards[name if len(name) <= 8 else f"HIERARCH {name}"] = (value, comment)
    return {key: (card[0], _fitting_comment(key, *card)) if isinstance(card, tuple) else card
            for key, card in cards.items()}


def _fitting_comment(key: str, value: Any, comment: str) -> str:
    """`comment` cut to what fits on the card (astropy would cut it with a warning per file)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = fits.Card(key, value, "#").image  # the value field, padded as astropy pads it
        room = fits.Card.length - image.rfind(" / #") % fits.Card.length - len(" / ")  # on its last card
    return comment if len(comment) <= room else comment[:max(0, room)]


def object_row(info: ObjectInfo, pred: ScaledPrediction, output: str) -> dict[str, Any]:
    """Scalar table columns of one object (the table's spectra are normalised: see `TableWriter`)."""
    row = {
        "objid": str(info.objid), "source": info.source, "output": output, "ra": float(info.ra),
        "dec": float(info.dec), "z": _finite_or_nan(info.z), "z_source": info.z_source,
        "norm": float("nan") if pred.norm is None else pred.norm,
    }
    row.update({name.lower(): value for name, (value, _) in pred.columns.items()})
    return row


def write_prediction_fits(path: Path, predictor, info: ObjectInfo, pred: ScaledPrediction) -> Path:
    """One object in the SDSS spec layout: loglam, flux, ivar = 1/sigma^2; header names the model;
    a rest-frame bundle's rest-frame spectrum in the `REST` extension."""
    return write_prediction(*prediction_record(path, predictor, info, pred))


def _ivar_unit(unit: str) -> str:
    """FITS unit of 1 / `unit`^2 ('' for a dimensionless flux)."""
    return (u.Unit(unit, format="fits") ** -2).to_string("fits") if unit else NORMALISED_UNIT


def rest_hdu(rest: RestSpectrum, unit: str) -> fits.BinTableHDU:
    """The `REST` extension: rest-frame WAVE [Angstrom, vacuum], FLUX, SIGMA [`unit`], IVAR [1/`unit`^2]."""
    sigma = np.asarray(rest.sigma, np.float32)
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("WAVE", "D", array=np.asarray(rest.wave, np.float64), unit=WAVE_UNIT),
        fits.Column("FLUX", "E", array=np.asarray(rest.flux, np.float32), unit=unit),
        fits.Column("SIGMA", "E", array=sigma, unit=unit),
        fits.Column("IVAR", "E", array=_ivar(sigma), unit=_ivar_unit(unit)),
    ], name=REST_EXTNAME)
    cards = {
        "FRAME": ("rest", "WAVE is rest-frame"),
        "AIRORVAC": ("vac", "WAVE in vacuum"),
        "BUNIT": (unit, "unit of FLUX and SIGMA ('' = normalised)"),
        "Z": (float(rest.z) if np.isfinite(rest.z) else None, "z of the COADD spectrum and lines"),
        # not ZSOURCE here: WCS readers (specutils) take that keyword for a redshift value
        "ZSRC": (rest.z_source, "Z from: catalogue or photo-z"),
    }
    for key, (value, comment) in cards.items():
        hdu.header[key] = (value, _fitting_comment(key, value, comment))
    return hdu


def write_prediction(path: Path, spec: SDSSSpectrum, header: dict[str, Any], unit: str,
                     rest: RestSpectrum | None = None) -> Path:
    """`write_spectrum`, plus the `REST` extension when `rest` (already in `unit`) is given."""
    extra = () if rest is None else (rest_hdu(rest, unit),)
    return write_spectrum(path, spec, header, unit, extra_hdus=extra)


def prediction_record(path: Path, predictor, info: ObjectInfo, pred: ScaledPrediction) -> tuple:
    """The picklable arguments of `write_prediction` for one prediction (so worker processes can write it).

    Besides the SDSS COADD columns, `wave` (Angstrom) and `sigma` (flux unit) let generic
    table readers (specutils' default loader) find the spectral axis and uncertainty.
    """
    flux = np.asarray(pred.flux, np.float32)
    spec = SDSSSpectrum(
        loglam=predictor.loglam,
        flux=flux,
        ivar=pred.ivar,
        and_mask=np.zeros(len(predictor.loglam), np.int32),
        # PLATE/MJD/FIBERID stay 0 in SPECOBJ (SDSS numbers start at 1; the layout needs the columns)
        z=_finite_or_nan(info.z), plate=0, mjd=0, fiberid=0, ra=float(info.ra), dec=float(info.dec),
        model=flux,
        extra={"OBJID": str(info.objid), "PREDICTED": True},
        columns={"wave": (np.asarray(predictor.wave, np.float64), WAVE_UNIT),
                 "sigma": (np.asarray(pred.sigma, np.float32), pred.unit)},
        observed=False,
    )
    rest = None if pred.rest is None else pred.rest.scaled(1.0 if pred.norm is None else pred.norm)
    return path, spec, object_cards(predictor, info, pred), pred.unit, rest


class TableWriter:
    """Many predictions in one file: `.fits` (array columns) or `.csv` (one column per pixel).

    Spectra are normalised in every row (one unit for the whole table); `norm` (1e-17
    erg/s/cm^2/A, NaN without a magnitude) turns a row into flux units: flux * norm.
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
        self._rest_flux: list[np.ndarray] = []
        self._rest_ivar: list[np.ndarray] = []
        self._rest_wave: np.ndarray | None = None
        self._comments: dict[str, str] = {}
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._csv_header = True
        wave = predictor.wave
        self._flux_cols = [f"flux_{w:.2f}" for w in wave]
        self._sigma_cols = [f"sigma_{w:.2f}" for w in wave]

    def add(self, infos: list[ObjectInfo], preds: list[ScaledPrediction], files: list[str]) -> None:
        rows = [object_row(i, p, f) for i, p, f in zip(infos, preds, files)]
        flux = [np.asarray(p.normalised_flux if p.normalised_flux is not None else p.flux, np.float32) for p in preds]
        sigma = [np.asarray(p.normalised_sigma if p.normalised_sigma is not None else p.sigma) for p in preds]
        for p in preds:
            self._comments.update({name.lower(): comment for name, (_, comment) in p.columns.items()})
        rest = self._rest(preds)
        if self.kind == "csv":
            meta = pd.DataFrame(rows)
            parts = [meta, pd.DataFrame(np.stack(flux), columns=self._flux_cols),
                     pd.DataFrame(np.stack(sigma), columns=self._sigma_cols)]
            if rest is not None:
                names = [f"{w:.2f}" for w in self._rest_wave]
                parts += [pd.DataFrame(rest[0], columns=[f"rest_flux_{n}" for n in names]),
                          pd.DataFrame(rest[1], columns=[f"rest_sigma_{n}" for n in names])]
            frame = pd.concat(parts, axis=1)
            frame.to_csv(self._tmp, mode="w" if self._csv_header else "a", header=self._csv_header,
                         index=False, float_format="%.6g")
            self._csv_header = False
        else:
            self._rows.extend(rows)
            self._flux.extend(flux)
            self._ivar.extend(_ivar(s) for s in sigma)
            if rest is not None:
                self._rest_flux.extend(rest[0])
                self._rest_ivar.extend(_ivar(s) for s in rest[1])

    def _rest(self, preds: list[ScaledPrediction]) -> tuple[np.ndarray, np.ndarray] | None:
        """(flux, sigma) (n, R) normalised rest-frame spectra of a batch, None for an observed-frame bundle."""
        rests = [p.rest for p in preds]
        if all(r is None for r in rests):
            return None
        if any(r is None for r in rests):
            raise ValueError("table: some predictions of a batch have a rest-frame spectrum, others not")
        if self._rest_wave is None:
            self._rest_wave = np.asarray(rests[0].wave, np.float64)
        return (np.stack([np.asarray(r.flux, np.float32) for r in rests]),
                np.stack([np.asarray(r.sigma, np.float32) for r in rests]))

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
        units = {"ra": "deg", "dec": "deg", "norm": CALIBRATED_UNIT}
        cols = []
        for name in meta.columns:
            values = meta[name]
            if not pd.api.types.is_numeric_dtype(values):  # strings, kept whole (as wide as the longest)
                text = values.astype(str).to_numpy(dtype=str)  # fixed-width: pandas 3 gives objects
                width = max(1, max(len(t.encode()) for t in text))
                cols.append(fits.Column(name.upper(), f"{width}A", array=text))
            else:
                cols.append(fits.Column(name.upper(), "D", array=values.to_numpy(np.float64), unit=units.get(name)))
        cols += [
            fits.Column("FLUX", f"{n_pix}E", array=np.stack(self._flux), unit=NORMALISED_UNIT),
            fits.Column("IVAR", f"{n_pix}E", array=np.stack(self._ivar), unit=NORMALISED_UNIT),
        ]
        if self._rest_flux:
            n_rest = len(self._rest_wave)
            cols += [fits.Column("REST_FLUX", f"{n_rest}E", array=np.stack(self._rest_flux), unit=NORMALISED_UNIT),
                     fits.Column("REST_IVAR", f"{n_rest}E", array=np.stack(self._rest_ivar), unit=NORMALISED_UNIT)]
        primary = fits.PrimaryHDU()
        for key, value in self.predictor.header().items():
            primary.header[key] = value
        primary.header["FLUXNORM"] = ("NORMALISED", "FLUX * NORM = flux in 1e-17 erg/s/cm2/A")
        table = fits.BinTableHDU.from_columns(cols, name="PREDICTIONS")
        for k, name in enumerate(meta.columns, start=1):
            if name in self._comments:
                table.header.comments[f"TTYPE{k}"] = self._comments[name]
        wave = fits.BinTableHDU.from_columns(
            [fits.Column("loglam", "D", array=self.predictor.loglam),
             fits.Column("wave", "D", array=np.asarray(self.predictor.wave, np.float64), unit=WAVE_UNIT)],
            name="WAVE",
        )
        hdus = [primary, table, wave]
        if self._rest_flux:  # the rest-frame grid of REST_FLUX / REST_IVAR (another length than WAVE)
            hdus.append(fits.BinTableHDU.from_columns(
                [fits.Column("wave", "D", array=self._rest_wave, unit=WAVE_UNIT)], name=REST_WAVE_EXTNAME))
            hdus[-1].header["FRAME"] = ("rest", "rest-frame vacuum wavelength")
        fits.HDUList(hdus).writeto(self._tmp, overwrite=True)
