"""Spectrum preparation: mask, resample onto one log grid (flux-conserving), normalise.

Resampling treats each input pixel as a top hat between the midpoints of its
neighbours' log-wavelengths. An output pixel's flux is the overlap-weighted mean
of the *good* input pixels it covers (weights w_i = overlap length in Angstrom),
so the integral of f_lambda over any range spanned by whole output pixels is
conserved. Its variance is sum(w_i^2 / ivar_i) / (sum w_i)^2 (covariance between
neighbouring output pixels, which share input pixels, is ignored as usual). An
output pixel whose good-input coverage is below `min_pixel_coverage` gets ivar 0
and a flux interpolated from its good neighbours, so masked input never leaks
into pixels the metric or the loss count, and the flux array stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.constants import C_KMS
from ..config.prepare import PrepareParams
from ..io.sdss_spectrum import SDSSSpectrum



@dataclass(frozen=True)
class LogGrid:
    """Output wavelength grid: pixel edges uniform in ln(lambda)."""

    edges: np.ndarray  # (P + 1,) Angstrom
    frame: str

    @property
    def centres(self) -> np.ndarray:
        """Geometric pixel centres (Angstrom)."""
        return np.sqrt(self.edges[:-1] * self.edges[1:])

    @property
    def n_pixels(self) -> int:
        return len(self.edges) - 1


def make_grid(params: PrepareParams) -> LogGrid:
    """Pixels of `velocity_step_kms` from `wave_min`, as many as fit below `wave_max`."""
    dln = params.velocity_step_kms / C_KMS
    n = int(np.floor(np.log(params.wave_max / params.wave_min) / dln + 1e-9))
    if n < 1:
        raise ValueError("prepare: wave_min..wave_max is narrower than one velocity_step_kms pixel")
    edges = params.wave_min * np.exp(dln * np.arange(n + 1))
    return LogGrid(edges=edges, frame=params.frame)


def loglam_edges(loglam: np.ndarray) -> np.ndarray:
    """Pixel edges (Angstrom) of a log10-wavelength grid of pixel centres."""
    loglam = np.asarray(loglam, np.float64)
    if loglam.size < 2 or not np.all(np.diff(loglam) > 0):
        raise ValueError("loglam must be strictly increasing with at least 2 pixels")
    mid = 0.5 * (loglam[1:] + loglam[:-1])
    first = loglam[0] - (mid[0] - loglam[0])
    last = loglam[-1] + (loglam[-1] - mid[-1])
    return 10.0 ** np.concatenate([[first], mid, [last]])


def resample(
    in_edges: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    good: np.ndarray,
    out_edges: np.ndarray,
    min_coverage: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-conserving resampling of good pixels; returns (flux, ivar, coverage) on the output grid.

    `coverage` is the fraction of each output pixel covered by good input pixels.
    """
    n_in = len(flux)
    good = np.asarray(good, bool)
    f = np.where(good, flux, 0.0).astype(np.float64)
    iv = np.where(good, ivar, 1.0).astype(np.float64)
    left, right = out_edges[:-1], out_edges[1:]
    lo = np.clip(np.searchsorted(in_edges, left, side="right") - 1, 0, n_in - 1)
    hi = np.clip(np.searchsorted(in_edges, right, side="left") - 1, 0, n_in - 1)
    span = int(np.max(hi - lo)) + 1 if len(lo) else 1
    wsum = np.zeros(len(left))
    fsum = np.zeros(len(left))
    vsum = np.zeros(len(left))
    for k in range(span):
        i = np.minimum(lo + k, n_in - 1)
        overlap = np.minimum(right, in_edges[i + 1]) - np.maximum(left, in_edges[i])
        w = np.where((lo + k <= hi) & good[i], np.clip(overlap, 0.0, None), 0.0)
        wsum += w
        fsum += w * f[i]
        vsum += w * w / iv[i]
    coverage = wsum / (right - left)
    ok = (coverage >= min_coverage) & (vsum > 0)
    out_flux = np.zeros(len(left))
    out_ivar = np.zeros(len(left))
    out_flux[ok] = fsum[ok] / wsum[ok]
    out_ivar[ok] = wsum[ok] ** 2 / vsum[ok]
    if ok.any() and not ok.all():
        centres = np.sqrt(left * right)
        out_flux[~ok] = np.interp(centres[~ok], centres[ok], out_flux[ok])
    return out_flux, out_ivar, coverage


def good_pixels(spec: SDSSSpectrum, params: PrepareParams) -> np.ndarray:
    """ivar > 0, and_mask == 0, finite, and outside the sky-line windows (observed frame)."""
    good = spec.good.copy()
    if params.sky_lines_angstrom and params.sky_line_halfwidth_angstrom > 0:
        wave = spec.wavelength
        for line in params.sky_lines_angstrom:
            good &= np.abs(wave - line) > params.sky_line_halfwidth_angstrom
    return good


@dataclass
class PreparedSpectrum:
    flux: np.ndarray  # (P,) float32, divided by norm
    ivar: np.ndarray  # (P,) float32, times norm**2; 0 where masked
    good_fraction: float  # fraction of output pixels with ivar > 0
    snr_median: float  # median S/N per output pixel over good pixels


def to_frame(wave_edges: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: float, frame: str):
    """Shift to the rest frame if asked: lambda / (1+z), f_lambda * (1+z), ivar / (1+z)^2."""
    if frame == "observed":
        return wave_edges, flux, ivar
    if not np.isfinite(z) or z <= -1:
        raise ValueError(f"rest frame needs a valid redshift (got z={z})")
    return wave_edges / (1 + z), flux * (1 + z), ivar / (1 + z) ** 2


def prepare_spectrum(spec: SDSSSpectrum, grid: LogGrid, params: PrepareParams, norm: float) -> PreparedSpectrum:
    """Mask, resample to `grid` and divide by `norm` (1e-17 erg/s/cm^2/A)."""
    good = good_pixels(spec, params)
    edges, flux, ivar = to_frame(loglam_edges(spec.loglam), spec.flux, spec.ivar, spec.z, grid.frame)
    out_flux, out_ivar, _ = resample(edges, flux, ivar, good, grid.edges, params.min_pixel_coverage)
    ok = out_ivar > 0
    snr = float(np.median(np.abs(out_flux[ok]) * np.sqrt(out_ivar[ok]))) if ok.any() else 0.0
    return PreparedSpectrum(
        flux=(out_flux / norm).astype(np.float32),
        ivar=(out_ivar * norm**2).astype(np.float32),
        good_fraction=float(ok.mean()),
        snr_median=snr,
    )


def prepare_truth(flux: np.ndarray, loglam: np.ndarray, z: float, grid: LogGrid, norm: float) -> np.ndarray:
    """A noiseless spectrum through the same resampling and normalisation (float32)."""
    flux = np.asarray(flux, np.float64)
    edges, flux, ivar = to_frame(loglam_edges(loglam), flux, np.ones_like(flux), z, grid.frame)
    good = np.isfinite(flux)
    # Coverage threshold 0: the truth has no mask; edge pixels are extrapolated like the data.
    out, _, _ = resample(edges, flux, ivar, good, grid.edges, min_coverage=1e-9)
    return (out / norm).astype(np.float32)


def spectrum_snr(spec: SDSSSpectrum) -> float:
    """Median S/N per pixel over good pixels (used to pick the best duplicate)."""
    good = spec.good
    if not good.any():
        return float("-inf")
    return float(np.median(spec.flux[good] * np.sqrt(spec.ivar[good])))
