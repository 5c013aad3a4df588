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


CONTINUUM_FLOOR = 0.01
"""Lowest continuum (and Dn4000 blue-band mean F_lambda) divided by, in normalised flux units: on
the default mock the VAE's train reconstructions have side-band means of median 0.13-0.29 and 0.1st
percentile 0.010-0.030 under the windows; a decoded spectrum with a continuum near or below 0
(early in training the latents wander) would otherwise give an EW without bound."""
LINE_FLUX_FLOOR = 1e-3
"""Lowest line flux (normalised flux x A) inside a BPT log ratio: a predicted line at or below it
counts as this weak (a finite log ratio, no gradient through the floored line)."""
BPT_RATIOS = {"log_oiii_hbeta": ("oiii_5007", "hbeta"), "log_nii_halpha": ("nii_6584", "halpha")}
"""measure_spectra's log-ratio columns -> (numerator, denominator) line (measure.classify)."""


def check_quantities(weights: MeasurementWeights, quantities: tuple[str, ...]) -> None:
    """ValueError naming any quantity without a linear-weights form (`LinearMeasures`, `measure_loss`)."""
    known = {"dn4000", "hdelta_a", *BPT_RATIOS, *(f"{name}_ew" for name in weights.lines)}
    bad = [q for q in quantities if q not in known]
    if bad:
        raise ValueError(f"measure: no differentiable form of {', '.join(map(repr, bad))} "
                         f"(known: {', '.join(sorted(known))})")


class LinearMeasures:
    """Values and flux gradients of `quantities` of unmasked spectra, from the weights alone.

    The numpy twin of `models.measure_loss.measure_tensor` (the same formulas and floors), on
    the pixels `columns` the quantities read: `evaluate(flux[:, columns])` gives (B, Q) values
    and their (B, Q, C) gradients, what a Gauss-Newton step on the latents needs
    (`models.fusion`).
    """

    def __init__(self, weights: MeasurementWeights, quantities: tuple[str, ...]) -> None:
        check_quantities(weights, quantities)
        self.weights, self.quantities = weights, tuple(quantities)
        bands = [b.index for lw in self._lines_used() for b in (lw.line, lw.blue, lw.red)]
        if "dn4000" in self.quantities:
            bands += [weights.dn4000.blue.index, weights.dn4000.red.index]
        self.columns = np.unique(np.concatenate(bands)).astype(np.int64)

    def _lines_used(self) -> list[LineWeights]:
        out = []
        for q in self.quantities:
            if q == "hdelta_a":
                out.append(self.weights.hdelta_a)
            elif q in BPT_RATIOS:
                out += [self.weights.lines[name] for name in BPT_RATIOS[q]]
            elif q.endswith("_ew"):
                out.append(self.weights.lines[q[:-3]])
        return out

    def _pos(self, band: BandWeights) -> np.ndarray:
        return np.searchsorted(self.columns, band.index)

    def _band(self, f: np.ndarray, band: BandWeights) -> np.ndarray:
        return f[:, self._pos(band)] @ band.weight

    def _line(self, f: np.ndarray, lw: LineWeights) -> tuple[np.ndarray, np.ndarray]:
        """(line pixels (B, K), continuum under them (B, K))."""
        t = lw.red_share
        cont = (1.0 - t) * self._band(f, lw.blue)[:, None] + t * self._band(f, lw.red)[:, None]
        return f[:, self._pos(lw.line)], cont

    def _spread(self, grad: np.ndarray, lw: LineWeights, d_pix: np.ndarray, d_cont: np.ndarray) -> None:
        """Add a line quantity's gradient (d/d line pixels, d/d continuum under them) onto `grad` (B, C)."""
        grad[:, self._pos(lw.line)] += d_pix
        grad[:, self._pos(lw.blue)] += (d_cont @ (1.0 - lw.red_share))[:, None] * lw.blue.weight
        grad[:, self._pos(lw.red)] += (d_cont @ lw.red_share)[:, None] * lw.red.weight

    def _ew(self, f: np.ndarray, lw: LineWeights, grad: np.ndarray, sign: float) -> np.ndarray:
        pix, cont = self._line(f, lw)
        c = np.maximum(cont, CONTINUUM_FLOOR)
        w = lw.line.weight
        self._spread(grad, lw, sign * w / c, sign * np.where(cont > CONTINUUM_FLOOR, -w * pix / c ** 2, 0.0))
        return sign * np.sum(w * (pix / c - 1.0), axis=1)

    def _line_flux(self, f: np.ndarray, lw: LineWeights) -> tuple[np.ndarray, np.ndarray]:
        pix, cont = self._line(f, lw)
        s, w = lw.flux_scale, lw.line.weight
        grad = np.zeros_like(f)
        self._spread(grad, lw, np.broadcast_to(s * w, pix.shape), np.broadcast_to(-s * w, pix.shape))
        return s * np.sum(w * (pix - cont), axis=1), grad

    def _log_ratio(self, f: np.ndarray, num: str, den: str, grad: np.ndarray) -> np.ndarray:
        out = np.zeros(len(f))
        for name, sign in ((num, 1.0), (den, -1.0)):
            flux, g = self._line_flux(f, self.weights.lines[name])
            live = flux > LINE_FLUX_FLOOR
            grad += sign * np.where(live, 1.0 / np.where(live, flux, 1.0), 0.0)[:, None] * g / np.log(10.0)
            out += sign * np.log10(np.maximum(flux, LINE_FLUX_FLOOR))
        return out

    def _break(self, f: np.ndarray, grad: np.ndarray) -> np.ndarray:
        blue_w, red_w = self.weights.dn4000.blue, self.weights.dn4000.red
        floor = CONTINUUM_FLOOR * float(blue_w.weight.sum())
        blue, red = self._band(f, blue_w), self._band(f, red_w)
        b = np.maximum(blue, floor)
        grad[:, self._pos(red_w)] += (1.0 / b)[:, None] * red_w.weight
        grad[:, self._pos(blue_w)] += np.where(blue > floor, -red / b ** 2, 0.0)[:, None] * blue_w.weight
        return red / b

    def evaluate(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, C) flux on `columns` -> ((B, Q) values, (B, Q, C) gradients), float64."""
        f = np.asarray(flux, np.float64)
        values = np.empty((len(f), len(self.quantities)))
        grads = np.zeros((len(f), len(self.quantities), f.shape[1]))
        for k, q in enumerate(self.quantities):
            if q == "dn4000":
                values[:, k] = self._break(f, grads[:, k])
            elif q == "hdelta_a":  # Lick convention: absorption positive
                values[:, k] = self._ew(f, self.weights.hdelta_a, grads[:, k], -1.0)
            elif q in BPT_RATIOS:
                values[:, k] = self._log_ratio(f, *BPT_RATIOS[q], grads[:, k])
            else:
                values[:, k] = self._ew(f, self.weights.lines[q[:-3]], grads[:, k], 1.0)
        return values, grads
