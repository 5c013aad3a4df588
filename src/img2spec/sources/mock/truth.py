"""The mock survey's noiseless truth in `data/raw/truth/` (never enters training).

- `params.parquet`: one row per galaxy (objid + every drawn and derived parameter,
  `galaxy_type`, per-component band fluxes in maggies, sizes, fibre fractions).
- `fibre_spectra.npy`: (N, P) float32 noiseless fibre spectra on `loglam.npy`
  (the SDSS coadd grid), 1e-17 erg/s/cm^2/A, rows in params.parquet order.
- `loglam.npy`, `meta.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...io.atomic import atomic_path, remove_stale_temps, temp_path, write_json, write_parquet

PARAMS_FILE = "params.parquet"
SPECTRA_FILE = "fibre_spectra.npy"
LOGLAM_FILE = "loglam.npy"
META_FILE = "meta.json"


class TruthWriter:
    """Streams fibre spectra into a pre-sized .npy memmap; renames everything into place at the end."""

    def __init__(self, truth_dir: Path, n: int, loglam: np.ndarray):
        self.dir = Path(truth_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.loglam = loglam
        remove_stale_temps(self.dir)  # a killed select's ~150 MB memmap and half-written tables
        self._tmp = temp_path(self.dir / SPECTRA_FILE)
        self.spectra = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32, shape=(n, len(loglam)))

    def write_rows(self, rows: range, spectra: np.ndarray) -> None:
        self.spectra[rows.start: rows.stop] = spectra

    def close(self, params: pd.DataFrame, meta: dict) -> None:
        self.spectra.flush()
        del self.spectra
        with atomic_path(self.dir / LOGLAM_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.loglam, allow_pickle=False)  # a file object: np.save would append ".npy" to a name
        write_parquet(self.dir / PARAMS_FILE, params)
        os.replace(self._tmp, self.dir / SPECTRA_FILE)
        write_json(self.dir / META_FILE, meta)

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)


def read_params(truth_dir: Path) -> pd.DataFrame:
    path = Path(truth_dir) / PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the select stage (mock source) first")
    return pd.read_parquet(path)


def open_spectra(truth_dir: Path) -> np.ndarray:
    """Memory-mapped (N, P) noiseless fibre spectra."""
    path = Path(truth_dir) / SPECTRA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the select stage (mock source) first")
    return np.load(path, mmap_mode="r")


def read_loglam(truth_dir: Path) -> np.ndarray:
    return np.load(Path(truth_dir) / LOGLAM_FILE)


def read_meta(truth_dir: Path) -> dict:
    return json.loads((Path(truth_dir) / META_FILE).read_text())
