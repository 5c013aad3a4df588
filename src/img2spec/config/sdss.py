"""`sdss`: the real SDSS DR16 / Pan-STARRS1 sources (owned by sources/sdss)."""

from typing import Literal

from pydantic import Field

from .base import Section

# Identifiers interpolated into SQL must be plain names (no injection through params).
_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class HTTPParams(Section):
    """How politely and persistently every source stage talks to a service."""

    connections: int = Field(8, ge=1, le=256)
    """Worker threads = concurrent connections (one requests.Session per thread)."""
    rate_per_s: float = Field(10.0, gt=0)
    """Maximum requests started per second, over all threads."""
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for the next bytes of an answer."""
    total_timeout_s: float = Field(300.0, gt=0)
    """Deadline of one try, connect to last byte: a server trickling bytes inside read_timeout_s
    cannot hold a fetch longer (checked between reads, so it may overrun by one read wait)."""
    max_tries: int = Field(5, ge=1)
    backoff_base_s: float = Field(1.0, ge=0)
    """Back-off before try k+1 is uniform in [0, min(backoff_max_s, base * 2**k)] (full jitter)."""
    backoff_max_s: float = Field(60.0, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0)
    """A server's Retry-After longer than this is capped (and the try counted)."""
    user_agent: str = "img2spec/0.1 (python-requests)"


class SDSSParams(Section):
    data_release: int = Field(16, ge=12)
    # --- select (SkyServer SQL through astroquery.sdss) ---
    skyserver_url: str = "https://skyserver.sdss.org"
    g_mag_limit: float = 18.0
    mag_column: str = Field("petroMag_g", pattern=_SQL_NAME)
    """PhotoObj column the g < g_mag_limit cut applies to."""
    z_min: float = Field(0.05, ge=0)
    z_max: float = Field(0.1, gt=0)
    ra_min: float = Field(0.0, ge=0, le=360)
    ra_max: float = Field(360.0, ge=0, le=360)
    dec_min: float = Field(-90.0, ge=-90, le=90)
    dec_max: float = Field(90.0, ge=-90, le=90)
    extra_where: str = ""
    """Further SQL conditions ANDed to the selection (e.g. "s.sn_median_all > 5")."""
    max_rows: int = Field(40_000, ge=1)
    """Stop after this many candidates (reported as truncated if more exist)."""
    page_size: int = Field(10_000, ge=1, le=500_000)
    """Rows per SQL query (SkyServer caps rows per query); keyset-paged on specobjid."""
    # --- fetch_spectra (SAS) ---
    sas_url: str = "https://data.sdss.org/sas"
    legacy_run2d: tuple[str, ...] = ("26", "103", "104")
    """run2d values served under dr16/sdss/...; all others under dr16/eboss/..."""
    # --- fetch_images (PS1 image cutout service) ---
    ps1_filenames_url: str = "https://ps1images.stsci.edu/cgi-bin/ps1filenames.py"
    ps1_fitscut_url: str = "https://ps1images.stsci.edu/cgi-bin/fitscut.cgi"
    # --- fetch_photometry (MAST catalogs REST API) ---
    mast_url: str = "https://catalogs.mast.stsci.edu/api/v0.1"
    ps1_data_release: str = Field("dr2", pattern=r"^dr[12]$")
    photometry_table: Literal["mean", "stack"] = "stack"
    match_radius_arcsec: float = Field(1.5, gt=0)
    # --- robustness ---
    http: HTTPParams = HTTPParams()
    max_failure_fraction: float = Field(0.02, ge=0, le=1)
    """A fetch stage fails if more than this fraction of its objects fail permanently."""
