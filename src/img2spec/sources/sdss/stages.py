"""The four source stages for real data: SkyServer, SAS, PS1 cutouts, MAST catalogue.

Each is `(params, paths) -> report dict` (see img2spec.sources). Fetch stages are
resumable: a verified file already on disk is kept, a corrupt one is fetched again,
leftover temporary files of a killed run are removed first. Permanent failures go to
`reports/<stage>_failures.csv`; the stage fails only above `sdss.max_failure_fraction`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ...config import Params
from ...io.atomic import remove_stale_temps, write_csv, write_text
from ...paths import Paths
from .http import Fetcher
from .ps1catalog import PHOTOMETRY_COLUMNS, fetch_photometry_row
from .ps1images import fetch_cutout
from .runner import check_failures, run_tasks, write_failures
from .skyserver import CANDIDATE_COLUMNS, select_candidates
from .spectra import fetch_spectrum

log = logging.getLogger(__name__)

TRUTH_README = (
    "Real SDSS/Pan-STARRS data (data.source = sdss) has no noiseless truth.\n"
    "This directory exists because the mock survey writes its truth here and DVC\n"
    "declares it as an output of the select stage.\n"
)
PHOTOMETRY_CHECKPOINT_S = 30.0
"""fetch_photometry rewrites photometry.csv (atomically) this often, so a killed run resumes."""


def _http_report(fetcher: Fetcher) -> dict:
    s = fetcher.stats
    return {"http_requests": s.requests, "http_retries": s.retries, "http_throttled": s.throttled}


def read_candidates(path: Path) -> pd.DataFrame:
    """candidates.csv with exact 64-bit ids and run2d as text."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: candidates file missing; run the select stage first")
    frame = pd.read_csv(path, dtype={"objid": "int64", "specobjid": "uint64", "run2d": str})
    missing = [c for c in ("objid", "ra", "dec", "plate", "mjd", "fiberid") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks columns {missing}")
    return frame


def _clean_temporaries(directory: Path) -> int:
    """Remove the temporaries a killed run left behind; a concurrent live run's are kept."""
    return len(remove_stale_temps(directory))


def _finish(stage: str, params: Params, paths: Paths, n: int, outcomes, failures, fetcher: Fetcher, t0: float) -> dict:
    table = paths.reports / f"{stage}_failures.csv"
    write_failures(table, failures)
    elapsed = time.monotonic() - t0
    report = {
        "n_candidates": n, **{k: int(v) for k, v in sorted(outcomes.items())},
        "failures_table": str(table), "elapsed_s": round(elapsed, 2),
        "objects_per_s": round(n / elapsed, 2) if elapsed > 0 else None,
        "connections": params.sdss.http.connections, **_http_report(fetcher),
    }
    check_failures(stage, n, failures, params.sdss.max_failure_fraction, table)
    return report


def select(params: Params, paths: Paths) -> dict:
    """Candidates from SkyServer SQL -> data/raw/candidates.csv (+ truth/README.txt)."""
    p = params.sdss
    fetcher = Fetcher(p.http)
    try:
        frame, info = select_candidates(p, fetcher)
    finally:
        fetcher.close()
    n_rows = len(frame)
    # sciencePrimary makes objids unique in DR16; a duplicate would still break the contract.
    frame = frame.drop_duplicates("objid", keep="first").sort_values("specobjid").reset_index(drop=True)
    write_csv(paths.candidates, frame[list(CANDIDATE_COLUMNS)])
    paths.truth_dir.mkdir(parents=True, exist_ok=True)
    write_text(paths.truth_dir / "README.txt", TRUTH_README)
    return {"n_candidates": len(frame), "duplicate_objids_dropped": n_rows - len(frame), **info,
            **_http_report(fetcher)}


def _fetch_files(stage: str, params: Params, paths: Paths, out_dir: Path, columns: list[str],
                 fetch_one: Callable[[Fetcher, Any], str]) -> dict:
    """Shared body of the per-object file fetchers: one task per candidate row, bounded pool,
    temporaries of a killed run removed first, failures table and report at the end."""
    t0 = time.monotonic()
    cands = read_candidates(paths.candidates)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = _clean_temporaries(out_dir)
    fetcher = Fetcher(params.sdss.http)
    rows = list(cands[columns].itertuples(index=False))
    try:
        outcomes, failures = run_tasks(rows, lambda r: fetch_one(fetcher, r), lambda r: int(r.objid),
                                       params.sdss.http.connections, stage)
    finally:
        fetcher.close()
    report = _finish(stage, params, paths, len(rows), outcomes, failures, fetcher, t0)
    return {**report, "stale_temporaries_removed": stale}


def fetch_spectra(params: Params, paths: Paths) -> dict:
    """Every candidate's spec-lite file from SAS -> data/raw/spectra/."""
    p = params.sdss

    def one(fetcher: Fetcher, r) -> str:
        return fetch_spectrum(p, fetcher, paths.spectrum_file(r.plate, r.mjd, r.fiberid),
                              r.plate, r.mjd, r.fiberid, r.run2d)

    return _fetch_files("fetch_spectra", params, paths, paths.spectra_dir,
                        ["objid", "plate", "mjd", "fiberid", "run2d"], one)


def fetch_images(params: Params, paths: Paths) -> dict:
    """5-band PS1 stack cutouts for every candidate -> data/raw/images/<objid>.fits."""
    p, d = params.sdss, params.data
    bands = tuple(d.bands)

    def one(fetcher: Fetcher, r) -> str:
        return fetch_cutout(p, fetcher, paths.image_file(int(r.objid)), int(r.objid), float(r.ra), float(r.dec),
                            d.cutout_size, d.pixel_scale_arcsec, bands)

    return _fetch_files("fetch_images", params, paths, paths.images_dir, ["objid", "ra", "dec"], one)


def fetch_photometry(params: Params, paths: Paths) -> dict:
    """PS1 DR2 Kron photometry (nearest match within the radius) -> data/raw/photometry.csv."""
    p, t0 = params.sdss, time.monotonic()
    cands = read_candidates(paths.candidates)
    done: dict[int, dict] = {}
    if paths.photometry.is_file():  # resume: keep rows of a previous (possibly killed) run
        old = pd.read_csv(paths.photometry, dtype={"objid": "int64", "ps1_objid": "int64"})
        if list(old.columns) == list(PHOTOMETRY_COLUMNS):
            wanted = set(cands["objid"].astype("int64"))
            done = {int(r["objid"]): r for r in old.to_dict("records") if int(r["objid"]) in wanted}
    lock = threading.Lock()
    last_save = [time.monotonic()]

    def save() -> None:
        frame = pd.DataFrame(list(done.values()), columns=list(PHOTOMETRY_COLUMNS))
        if len(frame):
            frame = frame.astype({"objid": "int64", "ps1_objid": "int64"}).sort_values("objid")
        write_csv(paths.photometry, frame)

    fetcher = Fetcher(p.http)
    rows = list(cands[["objid", "ra", "dec"]].itertuples(index=False))

    def task(r) -> str:
        if int(r.objid) in done:
            return "present"
        rec = fetch_photometry_row(p, fetcher, int(r.objid), float(r.ra), float(r.dec))
        if rec is None:
            return "no_match"
        with lock:
            done[int(r.objid)] = rec
            if time.monotonic() - last_save[0] > PHOTOMETRY_CHECKPOINT_S:
                save()
                last_save[0] = time.monotonic()
        return "fetched"

    try:
        outcomes, failures = run_tasks(rows, task, lambda r: int(r.objid), p.http.connections, "fetch_photometry")
    finally:
        fetcher.close()
    save()
    report = _finish("fetch_photometry", params, paths, len(rows), outcomes, failures, fetcher, t0)
    return {**report, "n_rows": len(done), "table": p.photometry_table, "match_radius_arcsec": p.match_radius_arcsec}
