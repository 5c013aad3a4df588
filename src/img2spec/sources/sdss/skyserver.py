"""Candidate selection through SkyServer SQL (astroquery.sdss), keyset-paged on specobjid.

astroquery builds the request (URL for the data release, `cmd`, `format=csv`,
`searchtool=SQL`); its base URL is `astroquery.sdss.conf.skyserver_baseurl`, set
temporarily from `sdss.skyserver_url` so a mirror or a local test server works.
We take the raw response from `SDSS.query_sql_async` rather than `query_sql` so that
HTTP status, Retry-After and truncated bodies go through our retry policy (astroquery
neither retries nor checks the status of SQL queries).
"""

from __future__ import annotations

import io
import logging
import time

import pandas as pd
import requests

from ...config.sdss import SDSSParams
from .http import BadContent, FetchError, Fetcher, RETRY_STATUS, parse_retry_after

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


def _query_page(sql: str, p: SDSSParams, fetcher: Fetcher) -> pd.DataFrame:
    """One SQL query through astroquery, retried under the stage's HTTP policy."""
    from astroquery.sdss import SDSS, conf

    pol = p.http
    last = "no attempt"
    status = 0
    url = ""
    for attempt in range(pol.max_tries):
        wait = None
        fetcher.limiter.wait()
        fetcher.count("requests")
        try:
            with conf.set_temp("skyserver_baseurl", p.skyserver_url.rstrip("/")):
                resp = SDSS.query_sql_async(
                    sql, data_release=p.data_release, cache=False,
                    timeout=(pol.connect_timeout_s, pol.read_timeout_s),
                )
            url = resp.url
            status = resp.status_code
            if status == 200:
                expected = resp.headers.get("Content-Length")
                if expected and expected.isdigit() and "Content-Encoding" not in resp.headers \
                        and int(expected) != len(resp.content):
                    raise BadContent(f"truncated body ({len(resp.content)} of {expected} bytes)")
                return parse_skyserver_csv(resp.text)
            if status not in RETRY_STATUS:
                raise FetchError(url, status, f"HTTP {status} {resp.reason}")
            last = f"HTTP {status}"
            if status in (429, 503):
                wait = parse_retry_after(resp.headers.get("Retry-After"))
        except requests.RequestException as exc:
            status, last = 0, f"{type(exc).__name__}: {exc}"
        except BadContent as exc:
            last = f"bad content: {exc}"
        if attempt + 1 < pol.max_tries:
            fetcher.count("retries")
            time.sleep(min(wait, pol.max_retry_after_s) if wait is not None else fetcher.backoff(attempt))
    raise FetchError(url or p.skyserver_url, status, f"SQL query gave up after {pol.max_tries} tries: {last}")


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
