"""Emission-line fluxes and rest-frame equivalent widths by flux summing, and the
pseudo-continuum absorption index (Hdelta_A) that uses the same arithmetic.

The continuum under the line is the straight line through the mean flux of the blue and the
red side band, each placed at its band's centre (as for the Lick indices, Worthey et al.
1994). With the line band's pixels f_j, covered rest-frame widths w_j and continuum c_j:

    flux = (1+z) sum_j w_j (f_j - c_j)            (observed grid; 1 on a rest-frame grid)
    EW   = sum_j w_j (f_j / c_j - 1)              (rest-frame A, emission positive)

Uncertainties propagate the pixel variances linearly through both, side bands included.
No stellar-absorption correction: Balmer emission sitting in an absorption trough is
measured net of it (the same for every spectrum compared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bands import BAD_CONTINUUM, MASKED, NO_REDSHIFT, OFF_GRID, Band, Spectra


@dataclass(frozen=True)
class Windows:
    """Rest-frame (grid convention) bands of one line or index."""

    line: tuple[float, float]
    blue: tuple[float, float]
    red: tuple[float, float]


@dataclass
class LineResult:
    flux: np.ndarray
    flux_err: np.ndarray
    ew: np.ndarray
    ew_err: np.ndarray
    flag: np.ndarray


def red_share(win: Windows, wave: np.ndarray) -> np.ndarray:
    """Weight t of the red side band's mean in the continuum at rest wavelength `wave`:
    continuum = (1 - t) blue mean + t red mean (the straight line through the band centres)."""
    xb, xr = 0.5 * (win.blue[0] + win.blue[1]), 0.5 * (win.red[0] + win.red[1])
    return (wave - xb) / (xr - xb)


def fnu_weight(band: Band) -> np.ndarray:
    """Per-pixel weight that turns a band mean of F_lambda into one of F_nu (up to a constant):
    lambda^2 (c and (1+z)^2 cancel in a ratio of two such means)."""
    return band.wave ** 2


def measure_line(sp: Spectra, win: Windows, max_masked_line: float, max_masked_continuum: float) -> LineResult:
    """Flux, rest-frame EW (emission positive) and errors of one line for every spectrum."""
    blue, red, line = sp.band(*win.blue), sp.band(*win.red), sp.band(*win.line)
    mb, vb = blue.mean()
    mr, vr = red.mean()
    t = red_share(win, line.wave)                         # continuum weight of the red band
    cont = mb[:, None] * (1.0 - t) + mr[:, None] * t
    # A masked line pixel (only when max_masked_line > 0) contributes the continuum: nothing.
    f = np.where(line.bad, cont, line.flux)
    w = line.width
    rest_flux = (w * (f - cont)).sum(axis=1)
    var_rest = ((w ** 2) * line.var).sum(axis=1) + (w * (1 - t)).sum(axis=1) ** 2 * vb + (w * t).sum(axis=1) ** 2 * vr

    flag = np.zeros(len(sp), np.int16)
    flag |= np.where(blue.off_grid | red.off_grid | line.off_grid, OFF_GRID, 0).astype(np.int16)
    masked = ((line.masked_fraction > max_masked_line) | (blue.masked_fraction > max_masked_continuum)
              | (red.masked_fraction > max_masked_continuum))
    flag |= np.where(masked, MASKED, 0).astype(np.int16)
    flag |= np.where(sp.no_z, NO_REDSHIFT, 0).astype(np.int16)
    good = flag == 0
    bad_cont = ~((mb > 0) & (mr > 0))
    flag |= np.where(good & bad_cont, BAD_CONTINUUM, 0).astype(np.int16)

    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(cont > 0, cont, 1.0)
        ew = (w * (f / safe - 1.0)).sum(axis=1)
        d_mb = -(w * f * (1 - t) / safe ** 2).sum(axis=1)   # dEW / d(blue mean)
        d_mr = -(w * f * t / safe ** 2).sum(axis=1)
        var_ew = ((w / safe) ** 2 * line.var).sum(axis=1) + d_mb ** 2 * vb + d_mr ** 2 * vr
        ok_ew = good & ~bad_cont
        return LineResult(
            flux=np.where(good, rest_flux * sp.flux_scale, np.nan),
            flux_err=np.where(good, np.sqrt(var_rest) * sp.flux_scale, np.nan),
            ew=np.where(ok_ew, ew, np.nan),
            ew_err=np.where(ok_ew, np.sqrt(var_ew), np.nan),
            flag=flag,
        )


def measure_break(sp: Spectra, blue_band: tuple[float, float], red_band: tuple[float, float],
                  max_masked_continuum: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratio of the mean F_nu in the red band to that in the blue band (Dn4000 for the Balogh
    et al. 1999 bands), its error and flag. F_nu is proportional to lambda^2 F_lambda."""
    blue, red = sp.band(*blue_band), sp.band(*red_band)
    mb, vb = blue.mean(weight=fnu_weight(blue))
    mr, vr = red.mean(weight=fnu_weight(red))
    flag = np.zeros(len(sp), np.int16)
    flag |= np.where(blue.off_grid | red.off_grid, OFF_GRID, 0).astype(np.int16)
    masked = (blue.masked_fraction > max_masked_continuum) | (red.masked_fraction > max_masked_continuum)
    flag |= np.where(masked, MASKED, 0).astype(np.int16)
    flag |= np.where(sp.no_z, NO_REDSHIFT, 0).astype(np.int16)
    flag |= np.where((flag == 0) & ~((mb > 0) & (mr > 0)), BAD_CONTINUUM, 0).astype(np.int16)
    ok = flag == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = mr / mb
        err = np.abs(ratio) * np.sqrt(vr / mr ** 2 + vb / mb ** 2)
    return np.where(ok, ratio, np.nan), np.where(ok, err, np.nan), flag
