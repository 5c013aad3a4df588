"""`measure`: emission lines, Dn4000, Hdelta_A and galaxy classes (owned by measure/).

Every window is in the rest frame, in Angstrom, exactly as published; `air: true` marks a
definition in air wavelengths, converted to vacuum when the spectra are on a vacuum grid
(SDSS and the mock survey are).
"""

from typing import Literal

from pydantic import Field, model_validator

from .base import Section

Band = tuple[float, float]


def _check_band(name: str, band: Band) -> None:
    if not band[0] < band[1]:
        raise ValueError(f"{name}: lower bound {band[0]} must be below upper bound {band[1]}")


class LineWindows(Section):
    """Flux-summing windows of one emission line: the line band and two side bands."""

    line: Band
    blue: Band
    red: Band
    air: bool = False
    """True: the bounds are air wavelengths (converted to vacuum on a vacuum grid)."""

    @model_validator(mode="after")
    def _check(self) -> "LineWindows":
        for name in ("line", "blue", "red"):
            _check_band(name, getattr(self, name))
        if self.blue[1] > self.line[0] or self.red[0] < self.line[1]:
            raise ValueError("the side bands must lie blue and red of the line band")
        return self


class BreakWindows(Section):
    """Two continuum bands whose mean F_nu ratio (red / blue) is the break strength."""

    blue: Band
    red: Band
    air: bool = True

    @model_validator(mode="after")
    def _check(self) -> "BreakWindows":
        _check_band("blue", self.blue)
        _check_band("red", self.red)
        if self.red[0] < self.blue[1]:
            raise ValueError("the red band must lie red of the blue band")
        return self


# Yan et al. 2006, ApJ 648, 281, Table 1 (flux-summing windows, vacuum, SDSS spectra);
# the side bands of Halpha and [NII] 6584 are shared. Not yet checked against the published
# table: check against Table 1 before quoting absolute line fluxes.
# Every comparison in evaluate measures truth and predictions with the same windows.
_YAN = {
    "oii_3727": LineWindows(line=(3716.3, 3738.3), blue=(3696.3, 3716.3), red=(3738.3, 3758.3)),
    "hbeta": LineWindows(line=(4857.45, 4867.05), blue=(4798.9, 4838.9), red=(4885.6, 4925.6)),
    "oiii_5007": LineWindows(line=(4998.2, 5018.2), blue=(4978.2, 4998.2), red=(5018.2, 5038.2)),
    "halpha": LineWindows(line=(6554.6, 6574.6), blue=(6483.0, 6513.0), red=(6623.0, 6653.0)),
    "nii_6584": LineWindows(line=(6575.3, 6595.3), blue=(6483.0, 6513.0), red=(6623.0, 6653.0)),
}


class ClassParams(Section):
    """Thresholds of the galaxy classes (measure.classify)."""

    sf_criterion: Literal["halpha_ew", "dn4000"] = "halpha_ew"
    """Star-forming vs quiescent by EW(Halpha) (emission, rest frame) or by Dn4000."""
    halpha_ew_min: float = 3.0
    """Star-forming when EW(Halpha) >= this (A): Cid Fernandes et al. 2011, MNRAS 413, 1687
    (WHAN: galaxies below 3 A are retired/passive)."""
    dn4000_max: float = 1.55
    """Star-forming when Dn4000 < this (Kauffmann et al. 2003, MNRAS 341, 33: the
    young/old divide of the Dn4000 distribution lies near 1.5-1.6)."""
    bpt_min_snr: float = Field(3.0, ge=0)
    """BPT needs all four lines at flux/error >= this (Brinchmann et al. 2004 used 3)."""


class MeasureParams(Section):
    wavelengths: Literal["vacuum", "air"] = "vacuum"
    """Convention of the spectra's wavelength grid (SDSS and the mock: vacuum)."""
    max_masked_fraction_line: float = Field(0.0, ge=0, le=1)
    """A line or index band with a larger masked share (by wavelength) is NaN + MASKED."""
    max_masked_fraction_continuum: float = Field(0.5, ge=0, lt=1)
    """A side / break band with a larger masked share is NaN + MASKED; below, its mean
    uses the good pixels only."""
    lines: dict[str, LineWindows] = _YAN
    dn4000: BreakWindows = BreakWindows(blue=(3850.0, 3950.0), red=(4000.0, 4100.0), air=True)
    """Balogh et al. 1999, ApJ 527, 54 (narrow 4000 A break)."""
    hdelta_a: LineWindows = LineWindows(line=(4083.5, 4122.25), blue=(4041.6, 4079.75),
                                        red=(4128.5, 4161.0), air=True)
    """Worthey & Ottaviani 1997, ApJS 111, 377 (Lick HdeltaA, air wavelengths)."""
    classes: ClassParams = ClassParams()

    @model_validator(mode="after")
    def _check(self) -> "MeasureParams":
        needed = {"hbeta", "oiii_5007", "halpha", "nii_6584"}
        if missing := needed - set(self.lines):
            raise ValueError(f"lines: the BPT diagram needs {sorted(missing)}")
        return self
