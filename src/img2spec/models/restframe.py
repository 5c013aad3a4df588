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


def _interpolate(rest: np.ndarray, left: np.ndarray, w: np.ndarray) -> np.ndarray:
    rest = np.asarray(rest, np.float64)
    return (1.0 - w) * np.take_along_axis(rest, left, axis=1) + w * np.take_along_axis(rest, left + 1, axis=1)


def to_observed(grid: RestGrid, rest: np.ndarray, obs_ln_wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, R) rest spectra -> (N, P) on the observed grid at z (N,): linear interpolation,
    clamped at the grid ends, as `layers.RedshiftToObserved` does."""
    return _interpolate(rest, *_interpolation(grid, obs_ln_wave, z))


def gaussian_smooth(x: np.ndarray, width_pix: np.ndarray) -> np.ndarray:
    """Each row of x (N, R) convolved with a unit-area Gaussian of its own width (pixels), by FFT
    with edge padding; rows of width 0 come back unchanged."""
    x = np.asarray(x, np.float64)
    width = np.asarray(width_pix, np.float64).reshape(-1)
    if x.size == 0:
        return x.copy()
    import scipy.fft

    pad = int(min(np.ceil(PAD_SIGMAS * float(np.max(width, initial=0.0))), 4 * x.shape[1]))
    # right edge padded on to a length the FFT factorises fast (the padding is edge values either way)
    n = scipy.fft.next_fast_len(x.shape[1] + 2 * pad, real=True)
    padded = np.pad(x, ((0, 0), (pad, n - x.shape[1] - pad)), mode="edge")
    freq = np.fft.rfftfreq(n)
    transfer = np.exp(-2.0 * (np.pi * freq[None, :] * width[:, None]) ** 2)
    out = scipy.fft.irfft(scipy.fft.rfft(padded, axis=1) * transfer, n=n, axis=1)
    return out[:, pad:pad + x.shape[1]]


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
    mean = gaussian_smooth(f, width)
    left, w = _interpolation(grid, obs_ln_wave, z)
    flux = _interpolate(mean, left, w).astype(np.float32)
    if rest_var is None:
        return flux, None
    second = gaussian_smooth(f * f + np.asarray(rest_var, np.float64), width)
    var = np.maximum(second - mean * mean, 0.0)
    sigma = np.sqrt(np.maximum(_interpolate(var, left, w), 0.0))
    return flux, sigma.astype(np.float32)
