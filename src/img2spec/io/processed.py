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
- `meta.json`: grid and normalisation conventions, counts, bands

Arrays are plain `.npy` opened with `mmap_mode="r"`, so training streams them without
loading everything at survey scale.

Written by `img2spec.prep.prepare` into a temporary directory that then replaces
this one by rename; rows are sorted by objid. Conventions (all in meta.json): the
grid has pixels uniform in ln(lambda) (`wave.npy` = geometric centres); masked
pixels (ivar = 0) hold a flux interpolated from good neighbours, never NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


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
