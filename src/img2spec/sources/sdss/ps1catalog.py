"""PS1 DR2 Kron photometry per candidate from the MAST catalogs REST API (cone search).

`{mast}/panstarrs/{dr2}/{mean|stack}.csv?ra=&dec=&radius=<deg>&columns=[...]`
(catalogs.mast.stsci.edu/docs/panstarrs.html). The REST API rather than
astroquery.mast `Catalogs`: the same documented service, but every request then goes
through our fetcher (bounded pool, rate limit, Retry-After, back-off), and the base
URL is a plain parameter a mirror or a test server can replace.
The nearest PS1 object within `match_radius_arcsec` is kept; none is a counted skip.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from ... import BANDS
from ...config.sdss import SDSSParams
from .http import BadContent, Fetcher

PHOTOMETRY_COLUMNS = ("objid", "ps1_objid", "ra", "dec", "ps1_ra", "ps1_dec", "sep_arcsec") + tuple(
    c for b in BANDS for c in (f"{b}KronMag", f"{b}KronMagErr")
)


def table_columns(table: str) -> tuple[str, str, dict[str, str]]:
    """(ra column, dec column, {service column: output column}) for the mean or stack view."""
    if table == "mean":
        ra, dec, fmt = "raMean", "decMean", "{b}MeanKronMag"
    else:
        ra, dec, fmt = "raStack", "decStack", "{b}KronMag"
    mags = {}
    for b in BANDS:
        mags[fmt.format(b=b)] = f"{b}KronMag"
        mags[fmt.format(b=b) + "Err"] = f"{b}KronMagErr"
    return ra, dec, mags


def cone_query(p: SDSSParams, ra: float, dec: float) -> tuple[str, dict[str, str]]:
    ra_col, dec_col, mags = table_columns(p.photometry_table)
    params = {
        "ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "radius": f"{p.match_radius_arcsec / 3600.0:.8f}",
        "columns": "[" + ",".join(["objID", ra_col, dec_col, *mags]) + "]",
    }
    if p.photometry_table == "stack":
        params["primaryDetection"] = "1"  # one row per object, from its best skycell
    url = f"{p.mast_url.rstrip('/')}/panstarrs/{p.ps1_data_release}/{p.photometry_table}.csv"
    return url, params


def parse_cone(body: bytes, p: SDSSParams) -> pd.DataFrame:
    """The CSV rows of one cone search; BadContent if the answer is not that CSV."""
    ra_col, dec_col, mags = table_columns(p.photometry_table)
    text = body.decode("utf-8", "replace").strip()
    if not text:
        raise BadContent("empty answer from the MAST catalogs API (expected at least a CSV header)")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"objID": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise BadContent(f"MAST answer is not CSV ({exc})") from None
    missing = [c for c in ("objID", ra_col, dec_col, *mags) if c not in frame.columns]
    if missing:
        raise BadContent(f"MAST CSV lacks columns {missing}")
    return frame


def nearest(frame: pd.DataFrame, p: SDSSParams, objid: int, ra: float, dec: float) -> dict | None:
    """The nearest row within the match radius as one photometry record, or None."""
    if frame.empty:
        return None
    ra_col, dec_col, mags = table_columns(p.photometry_table)
    r1, d1 = np.radians(frame[ra_col].to_numpy(float)), np.radians(frame[dec_col].to_numpy(float))
    r0, d0 = math.radians(ra), math.radians(dec)
    # haversine separation: exact at arcsecond scales
    hav = np.sin((d1 - d0) / 2) ** 2 + np.cos(d0) * np.cos(d1) * np.sin((r1 - r0) / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))) * 3600.0
    i = int(np.argmin(sep))
    if not sep[i] <= p.match_radius_arcsec:
        return None
    row = frame.iloc[i]
    rec = {"objid": int(objid), "ps1_objid": int(row["objID"]), "ra": float(ra), "dec": float(dec),
           "ps1_ra": float(row[ra_col]), "ps1_dec": float(row[dec_col]), "sep_arcsec": float(sep[i])}
    for src, dst in mags.items():
        value = float(row[src])
        # PS1 marks a missing measurement with -999: store NaN, never a fake magnitude.
        rec[dst] = value if np.isfinite(value) and value > -900 else float("nan")
    return rec


def fetch_photometry_row(p: SDSSParams, fetcher: Fetcher, objid: int, ra: float, dec: float) -> dict | None:
    url, params = cone_query(p, ra, dec)
    frame = fetcher.get(url, params=params, check=lambda body: parse_cone(body, p))
    return nearest(frame, p, objid, ra, dec)
