"""`data`: where raw data comes from."""

from typing import Literal

from pydantic import Field

from .base import Section


class DataParams(Section):
    source: Literal["mock", "sdss"] = "mock"
    """`mock`: offline simulated survey; `sdss`: SDSS DR16 + Pan-STARRS1 services."""
    bands: tuple[str, ...] = ("g", "r", "i", "z", "y")
    cutout_size: int = Field(64, ge=16, le=512)
    """Image cutout side in pixels (0.25 arcsec/pixel)."""
    pixel_scale_arcsec: float = Field(0.25, gt=0)
