"""`evaluate`: metric, baselines and figures (owned by evaluate/)."""

from pydantic import Field, field_validator

from .base import Section
from .publish import SigmaMethodParam


class EvaluateParams(Section):
    knn_neighbours: int = Field(10, ge=1)
    knn_use_magnitude: bool = True    # r magnitude as a fifth kNN feature besides the 4 colours
    n_example_plots: int = Field(3, ge=0)
    sigma_method: SigmaMethodParam = "linearised"  # predicted sigma (calibration), as publish
    n_samples: int = Field(32, ge=2)  # latent samples for sigma_method: sampled
    calibrate_sigma: bool = True  # fit a factor on sigma (val split): coverage at calibration_levels closest to a Gaussian's
    batch_size: int = Field(256, ge=1)
    ceiling_refine_steps: int = Field(300, ge=0)
    """The ceiling's latents: the encoder's, refined by this many Adam steps on each test spectrum's
    chi-square through the decoder (its best fit: what any prediction through it can reach). 0: the encoder's."""
    ceiling_refine_learning_rate: float = Field(0.01, gt=0)
    seed: int = 0
    hist_bins: int = Field(40, ge=2)
    calibration_levels: tuple[float, ...] = (1.0, 2.0)
    # Rest-frame wavelength regions (Angstrom) of the per-region metric.
    regions: dict[str, tuple[float, float]] = {
        "blue_continuum": (3500.0, 3850.0),
        "break_4000": (3850.0, 4150.0),
        "halpha": (6450.0, 6700.0),
    }

    @field_validator("regions")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"region {name}: lower bound {lo} must be below upper bound {hi}")
        return v
