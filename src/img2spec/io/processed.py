"""The prepared data set in `data/processed/` (written by prep/, read by models/ and evaluate/).

Files (row i of every array is row i of the catalogue):
- `wave.npy`        (P,) float64: wavelength grid in Angstrom (observed or rest frame: meta.json)
- `flux.npy`        (N, P) float32: flux divided by `norm` (dimensionless)
- `ivar.npy`        (N, P) float32: ivar times norm**2; 0 where masked (never NaN)
- `images.npy`      (N, H, W, n_bands) float32: stretched cutouts, channels g, r, i, z, y
- `truth_flux.npy`  (N, P) float32, mock survey only: the noiseless fibre spectrum, same
                    grid and normalisation (for the noise floor; never used in training)
- `catalog.parquet` N rows: objid (int64), split ('train' | 'val' | 'test'), z, ra, dec,
                    norm (1e-17 erg/s/cm^2/A: flux_sdss = flux * norm), mag_g..mag_y and
                    magerr_g..magerr_y (PS1 Kron AB), specfile, imagefile, and on the mock
                    survey galaxy_type ('red' | 'green' | 'blue'); also specobjid, plate, mjd,
                    fiberid, ps1_objid, match_sep_arcsec (arcsec to the PS1 row), spec_z (Z of
                    the spec file), good_fraction (pixels with ivar > 0), snr_median (per pixel)
- `image_scaling.json`: the image stretch and its per-band constants (train split only);
                    `img2spec.prep.images.preprocess_stack` applies it (also at inference)
- `meta.json`: grid and normalisation conventions, counts, bands. Readers use the
                    accessors below (`frame`, `norm_band`, `norm_wavelength_A`), never
                    their own key guesses; `write_processed_tables` refuses a meta.json
                    without them, so writer and readers cannot drift apart.

Arrays are plain `.npy` opened with `mmap_mode="r"`, so training streams them without
loading everything at survey scale.

Written by `img2spec.prep.prepare` into a temporary directory that then replaces
this one by rename; rows are sorted by objid. Conventions (all in meta.json): the
grid has pixels uniform in ln(lambda) (`wave.npy` = geometric centres); masked
pixels (ivar = 0) hold a flux interpolated from good neighbours, never NaN.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import write_json, write_parquet

SPLITS = ("train", "val", "test")
FRAMES = ("observed", "rest")
META_FRAME = ("wave", "frame")
"""meta.json path of the wavelength frame of `wave.npy` ('observed' | 'rest')."""
META_NORM_BAND = ("norm", "band")
"""meta.json path of the PS1 band whose Kron flux is `catalog.norm`."""
META_NORM_WAVELENGTH = ("norm", "effective_wavelength_angstrom")
"""meta.json path of the wavelength (Angstrom) at which that magnitude became f_lambda."""


def meta_value(meta: dict[str, Any], key: tuple[str, ...], where: str = "meta.json") -> Any:
    """One value of the meta.json contract; a clear error (not a silent default) when absent."""
    node: Any = meta
    for part in key:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{where}: no {'.'.join(key)} (written by the prepare stage; rerun it)")
        node = node[part]
    return node


def meta_frame(meta: dict[str, Any], where: str = "meta.json") -> str:
    frame = str(meta_value(meta, META_FRAME, where))
    if frame not in FRAMES:
        raise ValueError(f"{where}: wave.frame={frame!r}, expected one of {FRAMES}")
    return frame


def meta_norm_band(meta: dict[str, Any], where: str = "meta.json") -> str:
    return str(meta_value(meta, META_NORM_BAND, where))


def meta_norm_wavelength(meta: dict[str, Any], where: str = "meta.json") -> float:
    lam = float(meta_value(meta, META_NORM_WAVELENGTH, where))
    if not np.isfinite(lam) or lam <= 0:
        raise ValueError(f"{where}: norm.effective_wavelength_angstrom={lam} is not a positive wavelength")
    return lam


@dataclass
class ProcessedData:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> "ProcessedData":
        root = Path(root)
        for name in ("wave.npy", "flux.npy", "ivar.npy", "images.npy", "catalog.parquet", "meta.json"):
            if not (root / name).exists():
                raise FileNotFoundError(f"{root / name}: missing; run the prepare stage first")
        return cls(root)

    def _array(self, name: str) -> np.ndarray:
        return np.load(self.root / name, mmap_mode="r")

    @cached_property
    def wave(self) -> np.ndarray:
        return np.load(self.root / "wave.npy")

    @cached_property
    def flux(self) -> np.ndarray:
        return self._array("flux.npy")

    @cached_property
    def ivar(self) -> np.ndarray:
        return self._array("ivar.npy")

    @cached_property
    def images(self) -> np.ndarray:
        return self._array("images.npy")

    @cached_property
    def truth_flux(self) -> np.ndarray | None:
        path = self.root / "truth_flux.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None

    @cached_property
    def catalog(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "catalog.parquet")

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    @property
    def frame(self) -> str:
        """'observed' or 'rest': the frame of `wave` (rest: every object on one rest grid)."""
        return meta_frame(self.meta, str(self.root / "meta.json"))

    @property
    def norm_band(self) -> str:
        """The PS1 band of the photometric normalisation `catalog.norm`."""
        return meta_norm_band(self.meta, str(self.root / "meta.json"))

    @property
    def norm_wavelength_A(self) -> float:
        """Effective wavelength (Angstrom) of `norm_band`, where the magnitude became f_lambda."""
        return meta_norm_wavelength(self.meta, str(self.root / "meta.json"))

    def rest_wave(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), P) rest-frame wavelength of every pixel of the given catalogue rows."""
        z = self.catalog["z"].to_numpy(np.float64)[np.asarray(rows)]
        if self.frame == "rest":
            return np.broadcast_to(self.wave[None, :], (len(z), len(self.wave)))
        return self.wave[None, :] / (1.0 + z[:, None])

    @cached_property
    def image_scaling(self) -> dict:
        return json.loads((self.root / "image_scaling.json").read_text())

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in catalogue order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.catalog["split"].to_numpy() == split)

    def __len__(self) -> int:
        return len(self.catalog)


def write_processed_tables(root: str | Path, *, wave: np.ndarray, catalog: pd.DataFrame,
                           image_scaling: dict, meta: dict) -> None:
    """wave.npy, catalog.parquet, image_scaling.json and meta.json into `root` (the files
    besides the row arrays, which the prepare stage streams). Checks the meta contract first."""
    root = Path(root)
    where = str(root / "meta.json")
    meta_frame(meta, where), meta_norm_band(meta, where), meta_norm_wavelength(meta, where)
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1 or not np.all(np.diff(wave) > 0):
        raise ValueError(f"{root / 'wave.npy'}: the grid must be 1-d and strictly increasing")
    bad = [s for s in set(catalog["split"]) if s not in SPLITS]
    if bad:
        raise ValueError(f"{root / 'catalog.parquet'}: unknown split values {sorted(bad)}")
    np.save(root / "wave.npy", wave)
    write_parquet(root / "catalog.parquet", catalog)
    write_json(root / "image_scaling.json", image_scaling)
    write_json(root / "meta.json", meta)


def write_processed(root: str | Path, *, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                    images: np.ndarray, catalog: pd.DataFrame, image_scaling: dict, meta: dict,
                    truth_flux: np.ndarray | None = None) -> Path:
    """A whole in-memory data set as `root` (small sets: tests, benchmarks), written into a
    temporary sibling directory that then replaces `root` by rename; returns `root`."""
    root = Path(root)
    n, p = len(catalog), len(wave)
    arrays = {"flux": flux, "ivar": ivar, "images": images}
    if truth_flux is not None:
        arrays["truth_flux"] = truth_flux
    for name, arr in arrays.items():
        want = (n, p) if name != "images" else (n,)
        if tuple(np.shape(arr)[:len(want)]) != want:
            raise ValueError(f"{name}: shape {np.shape(arr)}, expected {want} + ... ({n} catalogue rows, {p} pixels)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.asarray(arr, np.float32))
        write_processed_tables(tmp, wave=wave, catalog=catalog, image_scaling=image_scaling, meta=meta)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
