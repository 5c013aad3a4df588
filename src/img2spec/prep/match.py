"""Stage `match`: join candidates (with their spectra) and PS1 photometry on RA/Dec.

- candidates whose spectrum file is absent are dropped ('missing_spectrum');
- several spectra of one object (same objid) -> the best median S/N is kept
  ('duplicate_object' for the others);
- each candidate is matched to its nearest PS1 row with astropy
  `SkyCoord.match_to_catalog_sky`; beyond `match_tolerance_arcsec` it is dropped
  ('no_photometry_match'); two candidates on one PS1 row -> best S/N kept
  ('duplicate_match');
- a matched object with an impossible or implausible Kron magnitude in any band
  (`normalise.check_magnitudes`: missing/-999, <= 0, outside prepare.mag_min..mag_max)
  is dropped with that reason code: every band feeds the normalisation or the
  colour baselines, and a garbage value there is worse than no object.
Output: `data/interim/matched.parquet` sorted by objid, plus `reports/match.json`.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import BANDS
from ..config import Params
from ..io.atomic import remove_stale_temps, write_parquet
from ..io.errors import FileFormatError
from ..io.fastfits import fast_read_spectrum
from ..io.sdss_spectrum import SpectrumFormatError, read_spectrum
from ..paths import Paths
from .normalise import check_magnitudes
from .report import DropLog
from .spectra import spectrum_snr

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("objid", "specobjid", "ra", "dec", "z", "plate", "mjd", "fiberid")
PHOTOMETRY_COLUMNS = ("objid", "ps1_objid", "ra", "dec") + tuple(
    f"{b}KronMag{s}" for b in BANDS for s in ("", "Err")
)


ID_COLUMNS = ("objid", "plate", "mjd", "fiberid")
"""Integer columns of candidates.csv, read as text first: a bad cell must not turn 19-digit ids into floats."""
_INTEGER = r"\s*-?\d+\s*"


class InputFormatError(FileFormatError):
    """A raw input table has an unexpected format; the message names the file."""

    default_reason = "bad_table"


def read_table(path: Path, required: tuple[str, ...], dtype: dict | None = None) -> pd.DataFrame:
    """Read a raw CSV and check its columns; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the source stages first")
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputFormatError(f"{path}: not a readable CSV ({exc})", path=path) from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputFormatError(f"{path}: missing columns {missing}", path=path)
    return frame


def _parse_candidates(cand: pd.DataFrame, file: str, drops: DropLog) -> pd.DataFrame:
    """Integer ids and float coordinates; a row whose ids are not integers is a counted drop.

    Text in ra/dec becomes NaN (then 'bad_coordinates'): one bad row never stops the stage.
    """
    text = cand[list(ID_COLUMNS)].astype(str)
    ok = text.apply(lambda col: col.str.fullmatch(_INTEGER)).all(axis=1).to_numpy()
    for i in np.flatnonzero(~ok):
        raw = text.iloc[i]
        objid = int(raw["objid"]) if re.fullmatch(_INTEGER, raw["objid"]) else -1
        drops.add(objid, file, "bad_candidate_row", ", ".join(f"{c}={raw[c]!r}" for c in ID_COLUMNS))
    cand = cand[ok].astype({c: "int64" for c in ID_COLUMNS})
    for col in ("ra", "dec"):
        cand[col] = pd.to_numeric(cand[col], errors="coerce")
    return cand


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _snr(path: Path) -> float:
    """Median S/N of a spectrum file; -inf when unreadable (so a readable twin wins)."""
    spec = fast_read_spectrum(path)
    if spec is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec = read_spectrum(path)
        except SpectrumFormatError:
            return float("-inf")
    return spectrum_snr(spec)


def _keep_best(frame: pd.DataFrame, key: str, snr: dict[int, float], drops: DropLog, reason: str) -> pd.DataFrame:
    """Among rows sharing `key`, keep the highest S/N (ties: lowest specobjid)."""
    dup = frame[key].duplicated(keep=False)
    if not dup.any():
        return frame
    groups = frame[dup]
    for idx in groups.index:
        if idx not in snr:
            snr[idx] = _snr(Path(groups.at[idx, "_specpath"]))
    ranked = groups.assign(_snr=[snr[i] for i in groups.index]).sort_values(
        ["_snr", "specobjid"], ascending=[False, True]
    )
    losers = ranked[ranked[key].duplicated(keep="first")]
    for idx, row in losers.iterrows():
        drops.add(row["objid"], row["specfile"], reason, f"{key}={row[key]} S/N={snr[idx]:.2f}")
    return frame.drop(index=losers.index)


def match(params: Params, paths: Paths) -> dict:
    """Run the match stage; writes matched.parquet and reports/match.json, returns the report."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    root = Path(paths.root)
    # half-written outputs of a killed run (atomic temporaries carry the dead writer's pid)
    stale = remove_stale_temps(paths.matched.parent, f".{paths.matched.name}") + remove_stale_temps(paths.reports, ".match")
    cand = read_table(paths.candidates, CANDIDATE_COLUMNS, dtype={c: str for c in ID_COLUMNS})
    phot = read_table(paths.photometry, PHOTOMETRY_COLUMNS)
    drops = DropLog()
    n_candidates, n_photometry = len(cand), len(phot)

    cand = _parse_candidates(cand, _rel(paths.candidates, root), drops)
    numeric = ["ra", "dec"] + [c for c in PHOTOMETRY_COLUMNS if "KronMag" in c]
    phot[numeric] = phot[numeric].apply(pd.to_numeric, errors="coerce")  # text -> NaN -> counted below
    specpaths = [paths.spectrum_file(p, m, f) for p, m, f in zip(cand["plate"], cand["mjd"], cand["fiberid"])]
    cand["_specpath"] = [str(p) for p in specpaths]
    cand["specfile"] = [_rel(p, root) for p in specpaths]
    cand["imagefile"] = [_rel(paths.image_file(o), root) for o in cand["objid"]]

    bad_coord = ~(np.isfinite(cand["ra"]) & np.isfinite(cand["dec"]))
    for _, row in cand[bad_coord].iterrows():
        drops.add(row["objid"], row["specfile"], "bad_coordinates")
    cand = cand[~bad_coord]
    exists = np.array([Path(p).is_file() for p in cand["_specpath"]], dtype=bool)
    for _, row in cand[~exists].iterrows():
        drops.add(row["objid"], row["specfile"], "missing_spectrum")
    cand = cand[exists]

    snr: dict[int, float] = {}
    cand = _keep_best(cand, "objid", snr, drops, "duplicate_object")

    phot_ok = np.isfinite(phot["ra"]) & np.isfinite(phot["dec"])
    n_phot_bad = int((~phot_ok).sum())
    phot = phot[phot_ok].reset_index(drop=True)
    tol = params.prepare.match_tolerance_arcsec
    if len(cand) and len(phot):
        c1 = SkyCoord(cand["ra"].to_numpy() * u.deg, cand["dec"].to_numpy() * u.deg)
        c2 = SkyCoord(phot["ra"].to_numpy() * u.deg, phot["dec"].to_numpy() * u.deg)
        idx, sep2d, _ = c1.match_to_catalog_sky(c2)
        sep = sep2d.to_value(u.arcsec)
    else:
        idx = np.zeros(len(cand), int)
        sep = np.full(len(cand), np.inf)
    cand = cand.assign(_phot=idx, match_sep_arcsec=sep)
    far = cand["match_sep_arcsec"] > tol
    for _, row in cand[far].iterrows():
        sep_txt = "no photometry rows" if not np.isfinite(row["match_sep_arcsec"]) else f"nearest {row['match_sep_arcsec']:.2f} arcsec"
        drops.add(row["objid"], row["specfile"], "no_photometry_match", sep_txt)
    cand = cand[~far]
    cand = _keep_best(cand, "_phot", snr, drops, "duplicate_match")

    ph = phot.iloc[cand["_phot"].to_numpy()].reset_index(drop=True)
    out = cand.drop(columns=["_specpath", "_phot"]).reset_index(drop=True)
    out["ps1_objid"] = ph["ps1_objid"].to_numpy()
    agree = int((ph["objid"].to_numpy() == out["objid"].to_numpy()).sum())
    bad = np.zeros(len(out), bool)
    for b in BANDS:
        out[f"mag_{b}"] = ph[f"{b}KronMag"].to_numpy(np.float64)
        out[f"magerr_{b}"] = ph[f"{b}KronMagErr"].to_numpy(np.float64)
        problem = check_magnitudes(out[f"mag_{b}"].to_numpy(), params.prepare.mag_min, params.prepare.mag_max)
        for i in np.flatnonzero((problem != "") & ~bad):  # one drop per object: its first bad band
            drops.add(out.at[i, "objid"], out.at[i, "specfile"], problem[i], f"{b}KronMag={out.at[i, f'mag_{b}']}")
        bad |= problem != ""
    agree -= int((ph["objid"].to_numpy()[bad] == out["objid"].to_numpy()[bad]).sum())
    out = out[~bad]
    out = out.sort_values("objid", kind="stable").reset_index(drop=True)
    write_parquet(paths.matched, out)

    report = {
        "stage": "match",
        "n_candidates": n_candidates,
        "n_photometry": n_photometry,
        "n_photometry_bad_coordinates": n_phot_bad,
        "n_matched": len(out),
        "n_dropped": len(drops),
        "tolerance_arcsec": tol,
        "median_separation_arcsec": float(np.median(out["match_sep_arcsec"])) if len(out) else None,
        "n_photometry_objid_agrees": agree,
        "stale_temporaries_removed": len(stale),
    }
    report = drops.write(paths.reports / "match.json", paths.reports / "match_dropped.csv", report)
    log.info("match: %d candidates -> %d matched; dropped %s", n_candidates, len(out), report["dropped_by_reason"])
    return report
