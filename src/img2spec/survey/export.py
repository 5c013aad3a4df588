"""`img2spec decode`: the spectra of a survey selection written as the FITS files `img2spec predict`
writes (one `spec-pred-<objid>.fits` per object, SDSS layout, model in the header, a rest-frame
bundle's `REST` extension), through predict's own record builder and writer."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io.atomic import remove_stale_temps
from ..logs import progress
from ..predict.runner import scaled_predictions
from ..predict.writers import Z_FROM_CATALOGUE, Z_UNKNOWN, ObjectInfo, output_stem, prediction_record, write_prediction
from .read import Survey, SurveySpectra

log = logging.getLogger(__name__)


def object_infos(part: SurveySpectra) -> tuple[list[ObjectInfo], np.ndarray]:
    """What predict knows about an input object, from the survey catalogue: id, position, the
    shard's (catalogue) z, the normalisation magnitude; and the user z array (NaN: none)."""
    cat = part.catalogue
    z_in = cat["z_input"].to_numpy(np.float64) if "z_input" in cat else np.full(len(cat), np.nan)
    infos = []
    for k, row in enumerate(cat.itertuples(index=False)):
        z = float(z_in[k]) if np.isfinite(z_in[k]) else None
        mag = float(part.norm_mag[k]) if np.isfinite(part.norm_mag[k]) else None
        infos.append(ObjectInfo(objid=str(row.object_id), source=str(row.shard), ra=float(row.ra), dec=float(row.dec),
                                z=z, mag=mag, z_source=Z_FROM_CATALOGUE if z is not None else Z_UNKNOWN))
    return infos, z_in


def write_part(part: SurveySpectra, out_dir: Path) -> list[Path]:
    """One FITS file per object of a decoded part, as `img2spec predict` writes it."""
    infos, z_in = object_infos(part)
    _, predictions = scaled_predictions(part.predictor, infos, part.result, z_in)
    paths = []
    for info, sp in zip(infos, predictions):
        path = out_dir / f"{output_stem(info.objid)}.fits"
        write_prediction(*prediction_record(path, part.predictor, info, sp))
        paths.append(path)
    return paths


def decode_to_fits(survey: Survey, out_dir: str | Path, selection: str | Sequence[str] | None = None, *,
                   healpix: int | None = None) -> dict[str, Any]:
    """Decode a selection (`Survey.select`) and write its FITS files into `out_dir`; returns a report."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # temporaries of a killed earlier run
    rows = survey.select(selection, healpix=healpix)
    n_written = 0
    bar = progress(total=len(rows), desc="decode", unit="obj")
    try:
        for _, part in survey.decode_selected(rows):
            n_written += len(write_part(part, out_dir))
            bar.update(len(part))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    log.info("decode: %d spectra written in %.1f s -> %s", n_written, seconds, out_dir)
    return {"survey": str(survey.out_dir), "out": str(out_dir), "n_selected": len(rows), "n_written": n_written,
            "bundle_hash": survey.bundle_hash, "seconds": round(seconds, 3)}
