"""The four source stages of the mock survey: `(params, paths) -> report dict`.

`select` runs the expensive physics once (SPS, sizes, fibre aperture) and writes
candidates.csv plus the truth directory; the fetch stages only add noise/render
from the truth, each with its own per-galaxy random stream.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...config import Params
from ...config.mock import MockParams
from ...io.atomic import remove_stale_temps, write_csv
from ...io.ps1_cutout import write_cutout
from ...io.sdss_spectrum import SDSSSpectrum, write_spectrum
from ...paths import Paths, spec_filename
from . import truth
from .images import make_renderer, render_cutout
from .noise import observe
from .photometry import PHOTOMETRY_COLUMNS, photometry_row
from .population import GALAXY_TYPES, STAGE_IMAGES, STAGE_PHOTOMETRY, STAGE_SPECTRA, galaxy_rng
from .survey import candidates_frame, position
from .parallel import run_chunks
from .sps import sdss_slice, model_loglam

log = logging.getLogger(__name__)
MODEL_SMOOTH_PIX = 25
"""The spec file's `model` column: a running median of the observed flux (a stand-in for
the SDSS pipeline's template fit; the noiseless truth stays in data/raw/truth)."""


# ---------------------------------------------------------------- select
def _select_init(mp: MockParams):
    from .synth import GalaxySynth

    return GalaxySynth(mp)


def _select_chunk(synth, chunk: Sequence[int]) -> tuple[list[dict], np.ndarray]:
    rows, spectra = [], []
    for i in chunk:
        g, fibre = synth.galaxy(i)
        rows.append({**position(synth.mp, i), **g})
        spectra.append(fibre)
    return rows, np.stack(spectra)


def select(params: Params, paths: Paths) -> dict:
    """Draw the population, synthesise it once, write candidates.csv and the truth directory."""
    mp = params.mock
    t0 = time.perf_counter()
    loglam = model_loglam(mp)[sdss_slice(mp)]
    writer = truth.TruthWriter(paths.truth_dir, mp.n_galaxies, loglam)
    rows: list[dict] = []
    try:
        for part, (chunk_rows, spectra) in run_chunks(
                _select_chunk, mp.n_galaxies, mp.chunk_size, mp.n_workers, _select_init, (mp,), "mock select"):
            writer.write_rows(part, spectra)
            rows.extend(chunk_rows)
        frame = pd.DataFrame(rows)
        writer.close(frame, {"n_galaxies": mp.n_galaxies, "seed": mp.seed, "flux_unit": "1e-17 erg/s/cm^2/A",
                             "spectra": "noiseless fibre spectra on loglam.npy, rows in params.parquet order"})
    except BaseException:
        writer.abort()
        raise
    write_csv(paths.candidates, candidates_frame(rows))
    counts = frame["galaxy_type"].value_counts().to_dict()
    elapsed = time.perf_counter() - t0
    return {
        "n_candidates": int(len(frame)),
        "galaxy_types": {t: int(counts.get(t, 0)) for t in GALAXY_TYPES},
        "z_median": float(frame["z"].median()),
        "g_mag_median": float(frame["total_mag_g"].median()),
        "fraction_g_below_18": float((frame["total_mag_g"] < 18.0).mean()),
        "seconds": round(elapsed, 2),
        "galaxies_per_s": round(len(frame) / elapsed, 2),
    }


# ---------------------------------------------------------------- shared functions
def _truth_records(paths: Paths) -> list[dict]:
    frame = truth.read_params(paths.truth_dir)
    cand = pd.read_csv(paths.candidates)
    if len(cand) != len(frame) or not np.array_equal(cand["objid"].to_numpy(), frame["objid"].to_numpy()):
        raise ValueError(f"{paths.candidates} does not match {paths.truth_dir / truth.PARAMS_FILE}; rerun select")
    return frame.to_dict("records")


class _State:
    """Per-process state of a fetch stage (records are inherited through fork)."""

    def __init__(self, mp: MockParams, paths: Paths, records: list[dict], data_params=None):
        self.mp, self.paths, self.records, self.data = mp, paths, records, data_params


def _remove_stale(directory: Path, pattern: str, keep: set[str]) -> int:
    """Delete files from an earlier, larger run so reruns leave exactly the current survey."""
    stale = [p for p in directory.glob(pattern) if p.name not in keep]
    for p in stale:
        p.unlink()
    return len(stale)


# ---------------------------------------------------------------- fetch_spectra
def _spectra_chunk(state: _State, chunk: Sequence[int]) -> dict[str, int]:
    from scipy.ndimage import median_filter

    mp, paths = state.mp, state.paths
    spectra = truth.open_spectra(paths.truth_dir)
    loglam = truth.read_loglam(paths.truth_dir)
    kinds: dict[str, int] = {}
    for i in chunk:
        g = state.records[i]
        rng = galaxy_rng(mp.seed, STAGE_SPECTRA, i)
        flux, ivar, and_mask, sky, kind = observe(np.asarray(spectra[i], np.float64), loglam, mp.spectra, rng)
        spec = SDSSSpectrum(
            loglam=loglam, flux=flux, ivar=ivar, and_mask=and_mask, z=float(g["z"]), plate=int(g["plate"]),
            mjd=int(g["mjd"]), fiberid=int(g["fiberid"]), ra=float(g["ra"]), dec=float(g["dec"]),
            model=median_filter(flux, MODEL_SMOOTH_PIX, mode="nearest"), sky=sky,
            extra={"OBJID": str(g["objid"]), "SPECOBJID": str(g["specobjid"]), "ZWARNING": 0,
                   "VDISP": float(g["veldisp_kms"]), "SUBCLASS": ""})
        write_spectrum(paths.spectrum_file(g["plate"], g["mjd"], g["fiberid"]), spec,
                       header={"ORIGIN": "img2spec mock survey"})
        kinds[kind or "normal"] = kinds.get(kind or "normal", 0) + 1
    return kinds


def fetch_spectra(params: Params, paths: Paths) -> dict:
    """Add SDSS-like noise and masks to the truth fibre spectra; write spec-PLATE-MJD-FIBER.fits."""
    mp = params.mock
    t0 = time.perf_counter()
    records = _truth_records(paths)
    paths.spectra_dir.mkdir(parents=True, exist_ok=True)
    swept = len(remove_stale_temps(paths.spectra_dir))  # files a killed run's workers were writing
    totals: dict[str, int] = {}
    for _, kinds in run_chunks(_spectra_chunk, len(records), mp.chunk_size, mp.n_workers,
                               _State, (mp, paths, records), "mock spectra"):
        for k, v in kinds.items():
            totals[k] = totals.get(k, 0) + v
    keep = {spec_filename(r["plate"], r["mjd"], r["fiberid"]) for r in records}
    removed = _remove_stale(paths.spectra_dir, "spec-*.fits", keep)
    elapsed = time.perf_counter() - t0
    return {"n_written": len(records), "n_failed": 0, "bad_spectra": {k: v for k, v in totals.items() if k != "normal"},
            "n_stale_removed": removed, "stale_temporaries_removed": swept, "seconds": round(elapsed, 2)}


# ---------------------------------------------------------------- fetch_images
def _images_chunk(state: _State, chunk: Sequence[int]) -> int:
    mp, paths, data = state.mp, state.paths, state.data
    renderer = make_renderer(mp.images, data.cutout_size, data.pixel_scale_arcsec)
    for i in chunk:
        g = state.records[i]
        rng = galaxy_rng(mp.seed, STAGE_IMAGES, i)
        cut = render_cutout(g, int(g["objid"]), float(g["ra"]), float(g["dec"]), renderer, mp.images, rng)
        write_cutout(paths.image_file(int(g["objid"])), cut, header={"SURVEY": "img2spec mock (PS1-like)"})
    return len(chunk)


def fetch_images(params: Params, paths: Paths) -> dict:
    """Render 5-band Sersic bulge+disk cutouts; write data/raw/images/<objid>.fits."""
    mp = params.mock
    t0 = time.perf_counter()
    records = _truth_records(paths)
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    swept = len(remove_stale_temps(paths.images_dir))
    n = sum(k for _, k in run_chunks(_images_chunk, len(records), mp.chunk_size, mp.n_workers,
                                     _State, (mp, paths, records, params.data), "mock images"))
    removed = _remove_stale(paths.images_dir, "*.fits", {f"{int(r['objid'])}.fits" for r in records})
    return {"n_written": n, "n_failed": 0, "n_stale_removed": removed, "stale_temporaries_removed": swept,
            "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------- fetch_photometry
def fetch_photometry(params: Params, paths: Paths) -> dict:
    """PS1 DR2-like Kron magnitudes with errors and astrometric scatter; write photometry.csv."""
    mp = params.mock
    t0 = time.perf_counter()
    records = _truth_records(paths)
    rows = [photometry_row(g, float(g["ra"]), float(g["dec"]), mp, galaxy_rng(mp.seed, STAGE_PHOTOMETRY, i),
                           params.data.pixel_scale_arcsec) for i, g in enumerate(records)]
    frame = pd.DataFrame(rows)[list(PHOTOMETRY_COLUMNS)]
    frame["objid"] = frame["objid"].astype(np.int64)
    frame["ps1_objid"] = frame["ps1_objid"].astype(np.int64)
    write_csv(paths.photometry, frame)
    return {"n_written": len(frame), "n_failed": 0, "r_mag_median": float(frame["rKronMag"].median()),
            "seconds": round(time.perf_counter() - t0, 2)}
