"""`measure_spectra`: every line, index and class of many spectra in one call."""

from __future__ import annotations

import numpy as np

from ..config.measure import Band, MeasureParams
from .bands import Spectra, air_to_vacuum
from .classify import BPT_LINES, classify
from .lines import Windows, measure_break, measure_line

LINE_COLUMNS = ("flux", "flux_err", "ew", "ew_err", "flag")


def _grid_bands(bands: dict[str, tuple[float, float]], air: bool, grid: str) -> dict[str, tuple[float, float]]:
    """Bands converted to the grid's wavelength convention (published air -> vacuum grid)."""
    if air and grid == "vacuum":
        return {k: tuple(float(x) for x in air_to_vacuum(np.asarray(v))) for k, v in bands.items()}
    if not air and grid == "air":
        raise ValueError("measure: vacuum window definitions on an air grid are not supported")
    return dict(bands)


def grid_windows(mp: MeasureParams) -> tuple[dict[str, Windows], tuple[Band, Band], Windows]:
    """(line windows by name, Dn4000 (blue, red) bands, Hdelta_A windows) in the grid's wavelength
    convention: what `measure_spectra` measures with, for anything that measures the same way."""
    lines = {}
    for name, win in mp.lines.items():
        lines[name] = Windows(**_grid_bands({"line": win.line, "blue": win.blue, "red": win.red}, win.air,
                                            mp.wavelengths))
    b = _grid_bands({"blue": mp.dn4000.blue, "red": mp.dn4000.red}, mp.dn4000.air, mp.wavelengths)
    h = mp.hdelta_a
    hdelta = Windows(**_grid_bands({"line": h.line, "blue": h.blue, "red": h.red}, h.air, mp.wavelengths))
    return lines, (b["blue"], b["red"]), hdelta


def _class_windows(mp: MeasureParams) -> tuple[dict[str, Windows], tuple[Band, Band] | None]:
    """The windows the classes read: the BPT lines (Halpha's EW is the star-forming cut) and
    Dn4000 where `measure.classes.sf_criterion` is dn4000 (else None)."""
    lines, dn4000, _ = grid_windows(mp)
    missing = [name for name in BPT_LINES if name not in lines]
    if missing:
        raise ValueError(f"measure.lines: the classes need {', '.join(missing)}")
    return {name: lines[name] for name in BPT_LINES}, dn4000 if mp.classes.sf_criterion == "dn4000" else None


def rest_pixels(wave: np.ndarray, mp: MeasureParams, *, classes_only: bool = False) -> np.ndarray:
    """Sorted pixels of the rest-frame grid `wave` that `measure_spectra(..., frame='rest')` reads
    (every band's gathered pixels, `bands.Spectra.band`): the rest of the grid can be NaN without
    changing a measurement, so a prediction measured on these pixels alone need not draw the others.
    `classes_only`: the pixels `measure_classes` reads."""
    sp = Spectra(np.zeros((1, len(wave)), np.float32), wave, frame="rest")
    if classes_only:
        lines, dn = _class_windows(mp)
        windows, breaks = list(lines.values()), list(dn or ())
    else:
        lines, dn4000, hdelta = grid_windows(mp)
        windows, breaks = [*lines.values(), hdelta], list(dn4000)
    bands = [b for win in windows for b in (win.line, win.blue, win.red)] + breaks
    return np.unique(np.concatenate([sp.band(*b).index.ravel() for b in bands]))


def column_names(mp: MeasureParams) -> list[str]:
    """Output columns of `measure_spectra`, in order (flags are int16, classes int8)."""
    cols = [f"{name}_{c}" for name in mp.lines for c in LINE_COLUMNS]
    cols += ["dn4000", "dn4000_err", "dn4000_flag", "hdelta_a", "hdelta_a_err", "hdelta_a_flag"]
    return cols + ["log_nii_halpha", "log_oiii_hbeta", "bpt_class", "agn_class", "sf_class"]


def _measure_lines(sp: Spectra, lines: dict[str, Windows], mp: MeasureParams,
                   columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`<line>_<column>` of every line in `lines`, `columns` among LINE_COLUMNS."""
    out = {}
    for name, win in lines.items():
        r = measure_line(sp, win, mp.max_masked_fraction_line, mp.max_masked_fraction_continuum)
        out.update({f"{name}_{c}": getattr(r, c) for c in columns})
    return out


def measure_spectra(flux: np.ndarray, wave: np.ndarray, z: np.ndarray | float | None, mp: MeasureParams, *,
                    sigma: np.ndarray | None = None, ivar: np.ndarray | None = None,
                    mask: np.ndarray | None = None, frame: str = "observed") -> dict[str, np.ndarray]:
    """Measure (N, P) spectra on the grid `wave` (P,) pixel centres in A.

    z: per-object redshift (N,) or a scalar, placing the rest-frame windows on an observed
    grid (ignored for frame='rest'). Errors from `sigma` or `ivar` (ivar 0 = masked), or NaN
    without either; `mask` True marks further bad pixels.

    Returns columns (see `column_names`), each (N,): per line `<line>_flux` (flux units of
    the input times A, observed-frame line flux), `_flux_err`, `_ew` (rest-frame A, emission
    positive), `_ew_err`, `_flag`; `dn4000` (+ `_err`, `_flag`), `hdelta_a` (rest-frame A,
    absorption positive, + `_err`, `_flag`); the BPT log ratios and the classes of
    `measure.classify`. A flag bit (measure.bands.FLAG_BITS) set other than BAD_CONTINUUM
    means the measurement is NaN; BAD_CONTINUUM leaves the line flux but not the EW.
    """
    sp = Spectra(flux, wave, z, sigma=sigma, ivar=ivar, mask=mask, frame=frame)
    ml, mc = mp.max_masked_fraction_line, mp.max_masked_fraction_continuum
    out: dict[str, np.ndarray] = {}
    lines, (dn_blue, dn_red), hdelta = grid_windows(mp)
    out.update(_measure_lines(sp, lines, mp, LINE_COLUMNS))
    out["dn4000"], out["dn4000_err"], out["dn4000_flag"] = measure_break(sp, dn_blue, dn_red, mc)
    r = measure_line(sp, hdelta, ml, mc)
    # Lick convention: absorption positive, i.e. minus the emission EW.
    out["hdelta_a"], out["hdelta_a_err"], out["hdelta_a_flag"] = -r.ew, r.ew_err, r.flag
    out.update(classify(out, mp.classes))
    return out


def measure_classes(flux: np.ndarray, wave: np.ndarray, z: np.ndarray | float | None, mp: MeasureParams, *,
                    sigma: np.ndarray | None = None, ivar: np.ndarray | None = None,
                    frame: str = "observed") -> dict[str, np.ndarray]:
    """The `measure.classify` columns of `measure_spectra` (same arguments, same values), measuring
    only what the classes read: the four BPT lines and, for the dn4000 criterion, Dn4000. For the
    many draws per galaxy of `models.class_draws`, which need nothing else."""
    sp = Spectra(flux, wave, z, sigma=sigma, ivar=ivar, frame=frame)
    lines, dn4000 = _class_windows(mp)
    out = _measure_lines(sp, lines, mp, ("flux", "flux_err", "ew"))
    if dn4000 is not None:
        out["dn4000"] = measure_break(sp, *dn4000, mp.max_masked_fraction_continuum)[0]
    return classify(out, mp.classes)
