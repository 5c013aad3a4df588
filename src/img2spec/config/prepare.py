"""`prepare`: match, clean, resample, normalise, split (owned by prep/)."""

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class ImageCheckParams(Section):
    """`prepare.images`: which cutouts are rejected, and how the stretch is set."""

    centre_box_pix: int = Field(8, ge=1)
    """Side of the central box (pixels) in which NaN and saturated pixels are counted."""
    max_nan_fraction_centre: float = Field(0.5, ge=0, le=1)
    """Reject when more than this fraction of the central box is non-finite in any band."""
    saturation_pixel_mag: float = 16.0
    """A pixel brighter than this AB magnitude (per pixel) counts as saturated (PS1 saturates
    at r ~ 13.5 for point sources, whose peak 0.25" pixel holds a few percent of the flux)."""
    max_saturated_pixels_centre: int = Field(0, ge=0)
    """Reject when the central box holds more saturated pixels than this in any band."""
    centre_search_radius_arcsec: float = Field(4.0, gt=0)
    """The light peak is searched within this radius of the cutout centre."""
    max_centre_offset_arcsec: float = Field(1.0, gt=0)
    """Reject when the (smoothed) light peak is further than this from the centre."""
    smoothing_pix: int = Field(5, ge=1)
    """Box size of the smoothing applied before locating the peak (beats pixel noise)."""
    asinh_softening: float = Field(1.0, gt=0)
    """asinh softening per band = this times the median train-split sky sigma (nanomaggies)."""


class PrepareParams(Section):
    match_tolerance_arcsec: float = Field(1.5, gt=0)
    frame: Literal["observed", "rest"] = "observed"
    wave_min: float = Field(3800.0, gt=0)
    wave_max: float = Field(9200.0, gt=0)
    velocity_step_kms: float = Field(150.0, gt=0)
    """Log-grid step; 150 km/s over 3800-9200 A gives 1,767 pixels."""
    norm_band: str = "r"
    mag_min: float = Field(10.0, gt=0)
    """Brightest plausible PS1 Kron AB magnitude: PS1 stacks saturate at 12-14 mag for point sources
    and a galaxy brighter than this spans arcminutes (shredded, far larger than any cutout)."""
    mag_max: float = Field(25.0, gt=0)
    """Faintest plausible magnitude: ~1.5 mag beyond the PS1 3pi stack 5-sigma depths (21.4-23.3,
    Chambers et al. 2016); fainter Kron values are noise, not galaxies with SDSS spectra."""
    train_fraction: float = Field(0.8, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    n_workers: int = Field(2, ge=1)
    chunk_size: int = Field(64, ge=1)
    """Objects per worker task (also the unit of the chunked .npy writes)."""
    min_pixel_coverage: float = Field(0.5, gt=0, le=1)
    """An output pixel whose good-input coverage is below this fraction gets ivar 0."""
    min_good_fraction: float = Field(0.5, ge=0, le=1)
    """Drop a spectrum when fewer than this fraction of its output pixels are good."""
    sky_lines_angstrom: tuple[float, ...] = (5578.9,)
    """Observed-frame (vacuum) sky lines masked before resampling: [O I] 5577 residuals."""
    sky_line_halfwidth_angstrom: float = Field(5.0, ge=0)
    images: ImageCheckParams = ImageCheckParams()

    @model_validator(mode="after")
    def _check(self) -> "PrepareParams":
        if self.wave_min >= self.wave_max:
            raise ValueError("wave_min must be below wave_max")
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError("train_fraction + val_fraction must leave a test split")
        if self.mag_min >= self.mag_max:
            raise ValueError("mag_min must be below mag_max")
        if self.norm_band not in ("g", "r", "i", "z", "y"):
            raise ValueError(f"norm_band must be one of g, r, i, z, y (got {self.norm_band!r})")
        return self
