"""`sdss`: the real SDSS DR16 / Pan-STARRS1 sources (owned by sources/sdss)."""

from pydantic import Field

from .base import Section


class SDSSParams(Section):
    data_release: int = Field(16, ge=8)
    g_mag_limit: float = 18.0
    max_rows: int = Field(40_000, ge=1)
