"""Rest-frame spectra on a decoder's log grid, and carrying them to the observed grid through a
redshift that is only known to within an uncertainty.

A rest-frame decoder (`vae.frame: rest`) decodes onto a log-uniform rest grid and shifts the
spectrum onto the observed grid at a redshift z (`layers.RedshiftToObserved`). When z is a
prediction, N(z_pred, z_err), placing the lines at z_pred alone puts them in the wrong pixels
whenever the guess is off; the expected observed spectrum is the rest spectrum averaged over
the redshift distribution instead. A redshift is a shift in ln(lambda): with
ln(1 + z) ~ N(ln(1 + z_pred), (z_err / (1 + z_pred))^2), the expectation is the rest spectrum
convolved with a Gaussian of that width in ln(lambda), then shifted by z_pred; its variance
is E[f^2] - E[f]^2 plus the latent part of the variance convolved the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_SIGMAS = 5.0
"""Edge padding before the FFT convolution, in kernel widths (wrap-around below 3e-7)."""
TRANSFER_FLOOR = 1e-17
"""Frequencies where every row's Gaussian transfer function is below this (relative to 1) are set
to zero instead of multiplied: below float64 resolution of the result, and most of the spectrum
for the widths of a photo-z (the exponentials are the convolution's largest cost)."""
SAME_STEP_RTOL = 1e-9
"""Observed and rest grids whose ln-steps agree to this are one lattice: a redshift shifts every
observed pixel by the same fraction of a rest pixel (`_interpolate` slices instead of gathering)."""


@dataclass(frozen=True)
class RestGrid:
    """The rest grid of a rest-frame decoder: ln(lambda_k) = ln_start + k ln_step, k < n."""

    ln_start: float
    ln_step: float
    n: int

    @property
    def wave(self) -> np.ndarray:
        """(n,) rest-frame wavelength in Angstrom (the observed grid's convention: vacuum)."""
        return np.exp(self.ln_start + self.ln_step * np.arange(self.n))

    def positions(self, obs_ln_wave: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, P) fractional rest-grid index of each observed pixel at redshift z (N,)."""
        z = np.asarray(z, np.float64).reshape(-1, 1)
        return (np.asarray(obs_ln_wave, np.float64)[None, :] - np.log1p(z) - self.ln_start) / self.ln_step


def _interpolation(grid: RestGrid, obs_ln_wave: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left rest index, weight of the right neighbour), each (N, P), of every observed pixel at z."""
    pos = np.clip(grid.positions(obs_ln_wave, z), 0.0, grid.n - 1.0)
    left = np.minimum(np.floor(pos), grid.n - 2).astype(np.int64)
    return left, pos - left


def _lattice_offsets(grid: RestGrid, obs_ln_wave: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first left index, right weight) per row when the observed grid is a run of the rest grid's
    lattice (same ln-step), else None; a row whose pixels leave the rest grid gets index -1."""
    obs = np.asarray(obs_ln_wave, np.float64)
    if obs.size < 2 or not np.allclose(np.diff(obs), grid.ln_step, rtol=SAME_STEP_RTOL, atol=0.0):
        return None
    start = (obs[0] - np.log1p(np.asarray(z, np.float64).reshape(-1)) - grid.ln_start) / grid.ln_step
    first = np.floor(start).astype(np.int64)
    weight = start - first
    first[(first < 0) | (first + obs.size >= grid.n)] = -1  # clamped at a grid end: the general path
    return first, weight


def _interpolate_to(grid: RestGrid, rest: list[np.ndarray], obs_ln_wave: np.ndarray, z: np.ndarray) -> list[np.ndarray]:
    """Each (N, R) array of `rest` on the observed grid at z (N,): linear interpolation, clamped at the
    grid ends (`to_observed`). On one lattice a row is two slices and a weight, not a gather."""
    z = np.asarray(z, np.float64).reshape(-1)
    p = len(obs_ln_wave)
    out = [np.empty((len(z), p), np.float64) for _ in rest]
    lattice = _lattice_offsets(grid, obs_ln_wave, z)
    first, w = lattice if lattice is not None else (np.full(len(z), -1), None)
    for i in np.flatnonzero(first >= 0):
        k, wi = first[i], w[i]
        for a, o in zip(rest, out):
            row = a[i]
            o[i] = (1.0 - wi) * row[k:k + p] + wi * row[k + 1:k + p + 1]
    other = np.flatnonzero(first < 0)
    if other.size:
        left, wo = _interpolation(grid, obs_ln_wave, z[other])
        for a, o in zip(rest, out):
            o[other] = _interpolate(np.asarray(a)[other], left, wo)
    return out


def _interpolate(rest: np.ndarray, left: np.ndarray, w: np.ndarray) -> np.ndarray:
    rest = np.asarray(rest, np.float64)
    return (1.0 - w) * np.take_along_axis(rest, left, axis=1) + w * np.take_along_axis(rest, left + 1, axis=1)


def to_observed(grid: RestGrid, rest: np.ndarray, obs_ln_wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, R) rest spectra -> (N, P) on the observed grid at z (N,): linear interpolation,
    clamped at the grid ends, as `layers.RedshiftToObserved` does."""
    return _interpolate(rest, *_interpolation(grid, obs_ln_wave, z))


def gaussian_smooth(x: np.ndarray, width_pix: np.ndarray) -> np.ndarray:
    """Each row of x (N, R) convolved with a unit-area Gaussian of its own width (pixels), by FFT
    with edge padding; rows of width 0 come back unchanged. x may be (N, K, R): K arrays per row,
    all smoothed with that row's width."""
    x = np.asarray(x, np.float64)
    width = np.asarray(width_pix, np.float64).reshape(-1)
    rows = np.flatnonzero(width > 0)
    if x.size == 0 or rows.size == 0:
        return x.copy()
    import scipy.fft

    r = x.shape[-1]
    pad = int(min(np.ceil(PAD_SIGMAS * float(np.max(width))), 4 * r))
    # right edge padded on to a length the FFT factorises fast (the padding is edge values either way)
    n = scipy.fft.next_fast_len(r + 2 * pad, real=True)
    every = rows.size == len(width)
    sub = x if every else x[rows]
    padded = np.pad(sub, [(0, 0)] * (sub.ndim - 1) + [(pad, n - r - pad)], mode="edge")
    spectrum = scipy.fft.rfft(padded, axis=-1)
    # the transfer exp(-2 (pi f w)^2) is below TRANSFER_FLOOR past f_max for the narrowest row
    f_max = np.sqrt(-np.log(TRANSFER_FLOOR) / 2.0) / (np.pi * float(width[rows].min()))
    keep = min(spectrum.shape[-1], int(np.ceil(f_max * n)) + 1)
    freq = np.arange(keep) / n
    transfer = np.exp(-2.0 * (np.pi * freq[None, :] * width[rows, None]) ** 2)
    spectrum[..., keep:] = 0.0
    spectrum[..., :keep] *= transfer.reshape(len(rows), *([1] * (sub.ndim - 2)), keep)
    smooth = scipy.fft.irfft(spectrum, n=n, axis=-1)[..., pad:pad + r]
    if every:
        return smooth
    out = x.copy()
    out[rows] = smooth
    return out


def marginalise_redshift(grid: RestGrid, rest_flux: np.ndarray, rest_var: np.ndarray | None, obs_ln_wave: np.ndarray,
                         z: np.ndarray, z_err: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and 1-sigma of the observed-frame spectrum when z ~ N(z, z_err) (see module doc).

    `rest_var` is the rest-frame prediction's own variance (latent uncertainty); the returned
    sigma adds the spread of the spectrum over the redshift distribution. z_err = 0 gives the
    spectrum shifted to z exactly. `rest_var` None: the mean alone (sigma None), half the work.
    """
    z = np.asarray(z, np.float64).reshape(-1)
    width = np.maximum(np.asarray(z_err, np.float64).reshape(-1), 0.0) / (1.0 + z) / grid.ln_step
    f = np.asarray(rest_flux, np.float64)
    if rest_var is None:
        (mean,) = _interpolate_to(grid, [gaussian_smooth(f, width)], obs_ln_wave, z)
        return mean.astype(np.float32), None
    # both moments in one FFT pass: E[f] and E[f^2] + the latent variance, smoothed alike
    smooth = gaussian_smooth(np.stack([f, f * f + np.asarray(rest_var, np.float64)], axis=1), width)
    var = np.maximum(smooth[:, 1] - smooth[:, 0] ** 2, 0.0)
    mean, var = _interpolate_to(grid, [smooth[:, 0], var], obs_ln_wave, z)
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 0.0)).astype(np.float32)
