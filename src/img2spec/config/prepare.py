"""`prepare`: match, clean, resample, normalise, split (owned by prep/)."""

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class PrepareParams(Section):
    match_tolerance_arcsec: float = Field(1.5, gt=0)
    frame: Literal["observed", "rest"] = "observed"
    wave_min: float = Field(3800.0, gt=0)
    wave_max: float = Field(9200.0, gt=0)
    velocity_step_kms: float = Field(150.0, gt=0)
    """Log-grid step; 150 km/s over 3800-9200 A gives 1,767 pixels."""
    norm_band: str = "r"
    train_fraction: float = Field(0.8, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    n_workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "PrepareParams":
        if self.wave_min >= self.wave_max:
            raise ValueError("wave_min must be below wave_max")
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError("train_fraction + val_fraction must leave a test split")
        return self
