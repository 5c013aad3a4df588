"""The measurements of `measure_spectra` as fixed linear weights on one wavelength grid.

On one grid at one redshift (a rest-frame grid: z = 0) every band covers the same pixels for
every spectrum, so the building blocks of a measurement are fixed linear maps of the flux:

    side-band mean   m = sum_k a_k f_k             (a: `Band.mean_coefficients`)
    continuum        c_j = (1 - t_j) m_blue + t_j m_red   (t: `lines.red_share`)
    EW               = sum_j w_j (f_j / c_j - 1)   (w: covered rest-frame width of line pixel j)
    line flux        = s sum_j w_j (f_j - c_j)     (s: (1 + z), 1 on a rest-frame grid)
    Dn4000           = m_red / m_blue               (a with the F_nu weight `lines.fnu_weight`)

`measurement_weights` returns those weights, built by the very band code `measure_spectra` uses
(the same windows, `table.grid_windows`), so a differentiable measurement of model output (the
image network's measurement loss) is the same measurement as the catalogue's. Spectra without
masked pixels only: a mask changes a band's weights per spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.measure import MeasureParams
from .bands import Band, Spectra
from .lines import Windows, fnu_weight, red_share
from .table import grid_windows


@dataclass(frozen=True)
class BandWeights:
    """A linear map of a spectrum's pixels: value = sum_k weight_k flux[index_k]."""

    index: np.ndarray   # (K,) int64 grid pixels
    weight: np.ndarray  # (K,) float64


@dataclass(frozen=True)
class LineWeights:
    """A flux-summing line (or Lick index) on one grid: see the module doc for the formulas."""

    line: BandWeights   # weight: w_j, the covered rest-frame width (A) of each line pixel
    blue: BandWeights   # weight: a_k, the blue side band's mean coefficients (sum 1)
    red: BandWeights    # weight: the red side band's mean coefficients (sum 1)
    red_share: np.ndarray  # (K,) t_j at each line pixel (same order as line.index)
    flux_scale: float   # s: observed-frame line flux = s x the rest-frame sum


@dataclass(frozen=True)
class BreakWeights:
    """A break index: ratio of the red to the blue band's F_nu mean."""

    blue: BandWeights
    red: BandWeights


@dataclass(frozen=True)
class MeasurementWeights:
    lines: dict[str, LineWeights]  # by `measure.lines` name
    dn4000: BreakWeights
    hdelta_a: LineWeights          # Lick convention: Hdelta_A = -EW of these weights


def _compact(band: Band, weight: np.ndarray) -> BandWeights:
    """The band's pixels with non-zero coverage, row 0 (one grid, one redshift)."""
    keep = band.width[0] > 0
    return BandWeights(np.asarray(band.index[0][keep], np.int64), np.asarray(weight[0][keep], np.float64))


def _check(band: Band, what: str) -> None:
    if bool(band.off_grid[0]):
        raise ValueError(f"measure: the {what} band lies (partly) off the wavelength grid; "
                         "its linear weights are undefined")


def _line(sp: Spectra, win: Windows, name: str) -> LineWeights:
    blue, red, line = sp.band(*win.blue), sp.band(*win.red), sp.band(*win.line)
    for band, part in ((blue, "blue"), (red, "red"), (line, "line")):
        _check(band, f"{name} {part}")
    keep = line.width[0] > 0
    return LineWeights(line=_compact(line, line.width), blue=_compact(blue, blue.mean_coefficients()),
                       red=_compact(red, red.mean_coefficients()),
                       red_share=np.asarray(red_share(win, line.wave)[0][keep], np.float64),
                       flux_scale=float(sp.flux_scale[0]))


def measurement_weights(wave: np.ndarray, mp: MeasureParams, z: float = 0.0,
                        frame: str = "rest") -> MeasurementWeights:
    """Linear weights of every line, Dn4000 and Hdelta_A of `mp` on the grid `wave` (pixel centres,
    A) at redshift `z` (ignored for frame='rest'), for spectra without masked pixels.
    ValueError when a band is not entirely on the grid."""
    sp = Spectra(np.zeros((1, len(wave))), wave, z, frame=frame)
    lines, (dn_blue, dn_red), hdelta = grid_windows(mp)
    blue, red = sp.band(*dn_blue), sp.band(*dn_red)
    _check(blue, "dn4000 blue")
    _check(red, "dn4000 red")
    dn = BreakWeights(_compact(blue, blue.mean_coefficients(fnu_weight(blue))),
                      _compact(red, red.mean_coefficients(fnu_weight(red))))
    return MeasurementWeights(lines={name: _line(sp, win, name) for name, win in lines.items()}, dn4000=dn,
                              hdelta_a=_line(sp, hdelta, "hdelta_a"))
