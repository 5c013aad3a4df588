"""Where every pipeline file lives, relative to a project root (default: cwd).

dvc.yaml declares the same paths; the stage scripts take them from here so a
test can run a stage in a temporary root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    # raw (sources/): the same contract for mock and sdss
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def candidates(self) -> Path:
        return self.raw / "candidates.csv"

    @property
    def spectra_dir(self) -> Path:
        return self.raw / "spectra"

    @property
    def images_dir(self) -> Path:
        return self.raw / "images"

    @property
    def photometry(self) -> Path:
        return self.raw / "photometry.csv"

    @property
    def truth_dir(self) -> Path:
        """Mock survey only: noiseless truth; never enters training."""
        return self.raw / "truth"

    # interim / processed (prep/)
    @property
    def matched(self) -> Path:
        return self.root / "data" / "interim" / "matched.parquet"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def latents(self) -> Path:
        return self.root / "data" / "latents"

    # models/
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def vae_dir(self) -> Path:
        return self.models / "vae"

    @property
    def cnn_dir(self) -> Path:
        return self.models / "cnn"

    @property
    def bundle_dir(self) -> Path:
        return self.models / "img2spec"

    # reports / metrics
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    def spectrum_file(self, plate: int, mjd: int, fiberid: int) -> Path:
        return self.spectra_dir / spec_filename(plate, mjd, fiberid)

    def image_file(self, objid: int | str) -> Path:
        return self.images_dir / f"{objid}.fits"


def spec_filename(plate: int, mjd: int, fiberid: int) -> str:
    """SDSS naming: spec-PLATE-MJD-FIBER.fits with 4/5/4-digit zero padding."""
    return f"spec-{int(plate):04d}-{int(mjd):05d}-{int(fiberid):04d}.fits"
