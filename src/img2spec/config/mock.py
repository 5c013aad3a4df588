"""`mock`: the simulated survey (owned by sources/mock)."""

from pydantic import Field

from .base import Section


class MockParams(Section):
    n_galaxies: int = Field(5000, ge=1, le=10_000_000)
    seed: int = Field(1, ge=0)
    n_workers: int = Field(2, ge=1)
    """Processes used for generation."""
