"""Candidate selection through SkyServer SQL (astroquery.sdss), keyset-paged on specobjid.

astroquery builds the request (URL for the data release, `cmd`, `format=csv`,
`searchtool=SQL`); its base URL is `astroquery.sdss.conf.skyserver_baseurl`, set
temporarily from `sdss.skyserver_url` so a mirror or a local test server works.
We take only the request from astroquery (`get_query_payload=True`) and send it with
the stage's `Fetcher`, so HTTP status, Retry-After, truncated bodies and the total
deadline go through the same retry policy as every download (astroquery neither
retries nor checks the status of SQL queries, and a trickling server could hold it
for ever).
"""

from __future__ import annotations

import io
import logging

import pandas as pd

from ...config.sdss import SDSSParams
from .http import BadContent, FetchError, Fetcher

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("objid", "specobjid", "ra", "dec", "z", "plate", "mjd", "fiberid", "run2d", "mag_g", "zwarning")
INT_COLUMNS = ("objid", "specobjid", "plate", "mjd", "fiberid", "zwarning")


def build_sql(p: SDSSParams, after_specobjid: int, top: int) -> str:
    """One page of the selection: rows with specobjid > `after_specobjid`, in specobjid order."""
    where = [
        "s.class = 'GALAXY'",
        "s.zWarning = 0",
        "s.sciencePrimary = 1",  # one (the best) spectrum per object
        f"p.{p.mag_column} < {p.g_mag_limit!r}",
        f"s.z BETWEEN {p.z_min!r} AND {p.z_max!r}",
        f"s.ra BETWEEN {p.ra_min!r} AND {p.ra_max!r}",
        f"s.dec BETWEEN {p.dec_min!r} AND {p.dec_max!r}",
        f"s.specObjID > {int(after_specobjid)}",
    ]
    if p.extra_where.strip():
        where.append(f"({p.extra_where.strip()})")
    return (
        f"SELECT TOP {int(top)} p.objID AS objid, s.specObjID AS specobjid, s.ra AS ra, s.dec AS dec, "
        f"s.z AS z, s.plate AS plate, s.mjd AS mjd, s.fiberID AS fiberid, s.run2d AS run2d, "
        f"p.{p.mag_column} AS mag_g, s.zWarning AS zwarning "
        f"FROM SpecObj AS s JOIN PhotoObj AS p ON s.bestObjID = p.objID "
        f"WHERE {' AND '.join(where)} ORDER BY s.specObjID"
    )


def parse_skyserver_csv(text: str) -> pd.DataFrame:
    """SkyServer CSV: a '#Table1' line, a header line, rows. Error pages raise BadContent."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "#Table1":
        head = " ".join(text[:200].split())
        raise BadContent(f"not a SkyServer CSV result (starts {head!r})")
    body = "\n".join(lines[1:]).strip()
    if not body:
        return pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    # ids are 64-bit: read as strings first so no float rounding can creep in.
    frame = pd.read_csv(io.StringIO(body), dtype=str)
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in CANDIDATE_COLUMNS if c not in frame.columns]
    if missing:
        raise BadContent(f"SkyServer result lacks columns {missing}")
    for col in CANDIDATE_COLUMNS:
        if col in INT_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("int64") if col != "specobjid" \
                else frame[col].map(int).astype("uint64")
        elif col == "run2d":
            frame[col] = frame[col].str.strip()
        else:
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("float64")
    return frame[list(CANDIDATE_COLUMNS)]


def sql_request(sql: str, p: SDSSParams) -> tuple[str, dict]:
    """(URL, query parameters) of one SQL query, built by astroquery for `p.data_release`."""
    from astroquery.sdss import SDSS, conf

    with conf.set_temp("skyserver_baseurl", p.skyserver_url.rstrip("/")):
        payload = SDSS.query_sql_async(sql, data_release=p.data_release, get_query_payload=True)
        url = SDSS._get_query_url(p.data_release)  # astroquery's per-release endpoint (no public accessor)
    return url, payload


def _query_page(sql: str, p: SDSSParams, fetcher: Fetcher) -> pd.DataFrame:
    """One SQL query, through the stage's fetcher: its retries, back-off, Retry-After,
    truncation check and total deadline (`http.total_timeout_s`) apply as to any download."""
    url, payload = sql_request(sql, p)
    try:
        return fetcher.get(url, params=payload, check=lambda body: parse_skyserver_csv(body.decode("utf-8-sig")))
    except FetchError as exc:
        raise FetchError(exc.url, exc.status, f"SQL query: {exc.reason}") from None


def select_candidates(p: SDSSParams, fetcher: Fetcher) -> tuple[pd.DataFrame, dict]:
    """All candidates up to `max_rows`, page by page; report pages and whether max_rows cut it."""
    pages: list[pd.DataFrame] = []
    n, last_id, n_pages, truncated = 0, 0, 0, False
    while n < p.max_rows:
        top = min(p.page_size, p.max_rows - n)
        page = _query_page(build_sql(p, last_id, top), p, fetcher)
        n_pages += 1
        if len(page):
            pages.append(page)
            n += len(page)
            new_last = int(page["specobjid"].max())
            if new_last <= last_id:
                raise RuntimeError(f"SkyServer paging did not advance past specobjid {last_id}")
            last_id = new_last
        log.info("select: page %d: %d rows (total %d)", n_pages, len(page), n)
        if len(page) < top:
            break
    else:
        # Filled max_rows exactly: ask whether anything is left so a cut is never silent.
        truncated = len(_query_page(build_sql(p, last_id, 1), p, fetcher)) > 0
        n_pages += 1
    frame = pd.concat(pages, ignore_index=True) if pages else pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    if truncated:
        log.warning("select: stopped at sdss.max_rows = %d; more candidates exist", p.max_rows)
    return frame, {"pages": n_pages, "truncated_at_max_rows": truncated}
