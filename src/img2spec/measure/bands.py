"""Wavelength bands on a spectral grid, vectorised over many spectra at different redshifts.

A band [lo, hi] in the rest frame covers, for each object, a different run of pixels of the
shared grid. `Spectra.band` gathers just that run (N, K) and the exact rest-frame wavelength
each pixel contributes to the band, so sums over a band are plain weighted sums and a pixel
half inside a band counts half. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Flag bits of every measurement (a set bit above NO_ERROR means the value is NaN).
OFF_GRID = 1
"""A band of the measurement extends beyond the wavelength grid."""
MASKED = 2
"""A band has a larger masked share than allowed (measure.max_masked_fraction_*)."""
BAD_CONTINUUM = 4
"""The continuum is not positive: an equivalent width or a break ratio is undefined."""
NO_REDSHIFT = 8
"""The object's redshift is missing or not physical (z <= -1)."""
FLAG_BITS = {"off_grid": OFF_GRID, "masked": MASKED, "bad_continuum": BAD_CONTINUUM, "no_redshift": NO_REDSHIFT}


def air_to_vacuum(wave_air: np.ndarray | float) -> np.ndarray:
    """Vacuum wavelength (A) of an air wavelength (A): the refractive index of standard air
    of Ciddor (1996) in the form of Morton (2000, ApJS 130, 403), inverted by iteration."""
    air = np.asarray(wave_air, np.float64)
    vac = air.copy()
    for _ in range(3):  # n depends on the vacuum wavenumber; 3 fixed-point steps reach 1e-8 A
        s2 = (1e4 / vac) ** 2
        n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
        vac = air * n
    return vac


def log_edges(wave: np.ndarray) -> np.ndarray:
    """(P+1,) ln-wavelength pixel edges of a grid of pixel centres (midpoints in ln lambda,
    which are the exact edges of a log grid whose centres are geometric)."""
    ln = np.log(np.asarray(wave, np.float64))
    if ln.ndim != 1 or ln.size < 2 or not np.all(np.diff(ln) > 0):
        raise ValueError("measure: the wavelength grid must be 1-D, increasing and at least 2 pixels long")
    mid = 0.5 * (ln[1:] + ln[:-1])
    return np.concatenate([[ln[0] - (mid[0] - ln[0])], mid, [ln[-1] + (ln[-1] - mid[-1])]])


@dataclass
class Band:
    """One band for N objects: K gathered pixels each."""

    flux: np.ndarray      # (N, K) flux (0 at bad pixels)
    var: np.ndarray       # (N, K) variance (0 at bad pixels; NaN when the input has no error)
    bad: np.ndarray       # (N, K) masked pixels
    width: np.ndarray     # (N, K) rest-frame Angstrom of the pixel inside the band (0 outside)
    wave: np.ndarray      # (N, K) rest-frame pixel centres
    off_grid: np.ndarray  # (N,) the band is not entirely on the grid
    index: np.ndarray     # (N, K) grid pixel of each gathered column (width 0 where it lies outside)

    @property
    def masked_fraction(self) -> np.ndarray:
        """Masked share of the band's covered wavelength (0 for a band wholly off the grid,
        which OFF_GRID reports)."""
        total = self.width.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (self.width * self.bad).sum(axis=1) / total, 0.0)

    def mean_coefficients(self, weight: np.ndarray | None = None) -> np.ndarray:
        """(N, K) coefficients a of the band mean, mean = sum_k a_k flux_k: covered wavelength of
        the good pixels x weight, over the good pixels' covered wavelength (NaN for none)."""
        w = self.width * ~self.bad
        s = w.sum(axis=1, keepdims=True)
        if weight is not None:
            w = w * weight
        with np.errstate(invalid="ignore", divide="ignore"):
            return w / s

    def mean(self, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean of weight x flux over the band's good pixels (by covered wavelength) and its
        variance; weight (N, K) defaults to 1."""
        a = self.mean_coefficients(weight)
        return (a * self.flux).sum(axis=1), (a ** 2 * self.var).sum(axis=1)


class Spectra:
    """(N, P) spectra on one grid, with their errors, masks and redshifts, ready for bands.

    flux: (N, P) or (P,); wave: (P,) pixel centres (A); z: (N,) or scalar, used to place
    rest-frame bands when `frame` is 'observed' (a 'rest' grid ignores it). Errors from
    `sigma` or `ivar` (ivar = 0 is masked); without either, errors are NaN. `mask`: True =
    bad pixel. Non-finite flux and error are masked too.
    """

    def __init__(self, flux, wave, z=None, *, sigma=None, ivar=None, mask=None, frame: str = "observed"):
        # Inputs are kept as given (float32 memmaps included): only the few pixels of each
        # band are gathered and converted, so a call costs O(N x band pixels), not O(N x P).
        flux = np.asarray(flux)
        self.flux = flux[None, :] if flux.ndim == 1 else flux
        if self.flux.ndim != 2:
            raise ValueError(f"measure: flux must be (N, P) or (P,), got shape {flux.shape}")
        n, p = self.flux.shape
        self.ln_edges = log_edges(wave)
        self._lam_edges = np.exp(self.ln_edges)
        self._lam_centres = np.exp(0.5 * (self.ln_edges[1:] + self.ln_edges[:-1]))
        if self.ln_edges.size != p + 1:
            raise ValueError(f"measure: flux has {p} pixels but the grid {self.ln_edges.size - 1}")
        if sigma is not None and ivar is not None:
            raise ValueError("measure: give sigma or ivar, not both")
        self.sigma, self.ivar, self.mask = (self._as_2d(a, (n, p), name) for a, name in
                                            ((sigma, "sigma"), (ivar, "ivar"), (mask, "mask")))
        if frame not in ("observed", "rest"):
            raise ValueError(f"measure: frame must be 'observed' or 'rest' (got {frame!r})")
        self.frame = frame
        if frame == "observed":
            zin = np.asarray(np.nan if z is None else z, np.float64)
            if zin.size not in (1, n):
                raise ValueError(f"measure: {zin.size} redshifts for {n} spectra")
            zz = np.broadcast_to(zin.reshape(()) if zin.size == 1 else zin.reshape(-1), (n,)).copy()
            self.no_z = ~np.isfinite(zz) | (zz <= -1.0)
            zz[self.no_z] = 0.0
            self.shift = np.log1p(zz)                      # ln(1+z): rest ln(lambda) = ln(lambda) - shift
            self.flux_scale = np.where(self.no_z, np.nan, 1.0 + zz)  # int f dlambda_obs = (1+z) int f dlambda_rest
        else:
            self.no_z = np.zeros(n, bool)
            self.shift = np.zeros(n)
            self.flux_scale = np.ones(n)
        self._bands: dict[tuple[float, float], Band] = {}
        # One shift for every row (the rest frame, or one z): every band is the same columns for all
        # rows, gathered as a column selection instead of (row, column) pairs, several times faster.
        self._same_columns = n > 1 and bool(np.all(self.shift == self.shift[0]))

    @staticmethod
    def _as_2d(a, shape: tuple[int, int], name: str):
        if a is None:
            return None
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[None, :]
        if a.shape[1] != shape[1] or a.shape[0] not in (1, shape[0]):
            raise ValueError(f"measure: {name} shape {a.shape} does not match flux {shape}")
        return np.broadcast_to(a, shape)

    def _gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flux, variance (0 at bad pixels, NaN without errors) and bad pixels at (N, K) indices."""
        if self._same_columns:
            cols = idx[0]
            take = lambda a: np.asarray(a[:, cols], np.float64)  # noqa: E731
        else:
            rows = np.arange(idx.shape[0])[:, None]
            take = lambda a: np.asarray(a[rows, idx], np.float64)  # noqa: E731  (broadcast rows are views)
        flux = take(self.flux)
        bad = ~np.isfinite(flux)
        if self.sigma is not None:
            sig = take(self.sigma)
            bad |= ~np.isfinite(sig) | (sig < 0)
            var = np.where(bad, 0.0, sig) ** 2
        elif self.ivar is not None:
            iv = take(self.ivar)
            bad |= ~(np.isfinite(iv) & (iv > 0))
            var = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, iv))
        else:
            var = np.full(flux.shape, np.nan)
        if self.mask is not None:
            bad |= take(self.mask).astype(bool)
        return np.where(bad, 0.0, flux), var, bad

    def __len__(self) -> int:
        return self.flux.shape[0]

    def band(self, lo: float, hi: float) -> Band:
        """Gather the pixels of the rest-frame band [lo, hi] (A) for every object (cached)."""
        key = (float(lo), float(hi))
        if key not in self._bands:
            self._bands[key] = self._band(*key)
        return self._bands[key]

    def _band(self, lo: float, hi: float) -> Band:
        e = self.ln_edges
        p = e.size - 1
        a = np.log(lo) + self.shift   # band edges on the grid's ln-lambda axis, per object
        b = np.log(hi) + self.shift
        off = (a < e[0]) | (b > e[-1])
        pix = np.arange(p + 1, dtype=np.float64)
        ua, ub = np.interp(a, e, pix), np.interp(b, e, pix)
        k = int(np.ceil(np.max(ub - ua, initial=0.0))) + 2
        idx = np.clip(np.floor(ua).astype(np.int64), 0, p - 1)[:, None] + np.arange(k)[None, :]
        inside = idx < p
        idx = np.minimum(idx, p - 1)
        # Overlap of each pixel with the band in observed A, then / (1+z): exp is monotonic, so
        # min/max of the precomputed edge wavelengths replace exp of (N, K) arrays.
        stretch = np.exp(self.shift)[:, None]
        lam_edges = self._lam_edges
        width = np.minimum(lam_edges[idx + 1], hi * stretch) - np.maximum(lam_edges[idx], lo * stretch)
        width = np.where(inside, np.clip(width, 0.0, None), 0.0) / stretch
        centre = self._lam_centres[idx] / stretch
        flux, var, bad = self._gather(idx)
        return Band(flux=flux, var=var, bad=bad, width=width, wave=centre, off_grid=off, index=idx)
