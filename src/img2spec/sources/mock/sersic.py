"""Sersic profiles: pixel-integrated, Gaussian-seeing-convolved, flux-normalised images.

Images are in units of the component's *total* flux (the sum over an infinite
plane is 1), so the light inside a cutout or a fibre is a plain sum.
Convolution is exact for a Gaussian PSF: multiply the Fourier transform.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import gamma, gammaincinv

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
PSF_PAD_SIGMA = 4.0
"""Padding (in PSF sigmas) that keeps the FFT convolution from wrapping light around."""
CENTRE_PIXELS = 2
"""Half-width (in sub-pixels) of the central block sampled extra finely (the n = 4 cusp)."""


def sersic_b(n: float) -> float:
    """b_n such that Re encloses half the light."""
    return float(gammaincinv(2.0 * n, 0.5))


def sersic_intensity(r_over_re: np.ndarray, n: float, re: float, q: float) -> np.ndarray:
    """Surface brightness per unit area (same length unit as `re`) for unit total flux."""
    b = sersic_b(n)
    total = 2.0 * np.pi * n * q * re**2 * np.exp(b) * b ** (-2.0 * n) * gamma(2.0 * n)
    return np.exp(-b * (r_over_re ** (1.0 / n) - 1.0)) / total


def _elliptical_r(x: np.ndarray, y: np.ndarray, re: float, q: float, pa_deg: float) -> np.ndarray:
    """Elliptical radius / Re; pa measured from +y (north) towards -x (east)."""
    t = np.deg2rad(pa_deg)
    major = -x * np.sin(t) + y * np.cos(t)
    minor = x * np.cos(t) + y * np.sin(t)
    return np.sqrt(major**2 + (minor / q) ** 2) / re


def sample_profile(n_pix: int, pix: float, n: float, re: float, q: float, pa_deg: float,
                   sub: int, centre_sub: int) -> np.ndarray:
    """Mean-intensity * pixel-area (flux fraction) per pixel on an n_pix grid centred on the galaxy.

    `sub` sub-samples per pixel side everywhere; the central pixels get `centre_sub` more.
    """
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    c = (np.arange(n_pix) - (n_pix - 1) / 2.0) * pix
    xs = (c[:, None] + offs[None, :] * pix).ravel()
    x, y = np.meshgrid(xs, xs)
    img = sersic_intensity(_elliptical_r(x, y, re, q, pa_deg), n, re, q)
    img = img.reshape(n_pix, sub, n_pix, sub).mean(axis=(1, 3)) * pix**2
    # Re-integrate the central pixels finely: an n = 4 cusp is badly sampled otherwise.
    mid = n_pix // 2
    lo, hi = max(mid - CENTRE_PIXELS, 0), min(mid + CENTRE_PIXELS, n_pix)
    fine = sub * centre_sub
    foffs = (np.arange(fine) + 0.5) / fine - 0.5
    xs = (c[lo:hi, None] + foffs[None, :] * pix).ravel()
    x, y = np.meshgrid(xs, xs)
    block = sersic_intensity(_elliptical_r(x, y, re, q, pa_deg), n, re, q)
    img[lo:hi, lo:hi] = block.reshape(hi - lo, fine, hi - lo, fine).mean(axis=(1, 3)) * pix**2
    return img


def gaussian_otf(shape: tuple[int, int], sigma_pix: float) -> np.ndarray:
    """Fourier transform (rfft2 layout) of a unit Gaussian PSF with sigma in pixels."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * np.pi**2 * sigma_pix**2 * (kx**2 + ky**2))


class Renderer:
    """Renders flux-normalised, seeing-convolved Sersic images on one pixel grid.

    The grid is oversampled by `oversample` and padded for the widest PSF; the
    output is binned back to `size` x `size` pixels of `pixel` arcsec.
    """

    def __init__(self, size: int, pixel: float, oversample: int, centre_oversample: int, max_fwhm: float):
        self.size, self.pixel, self.os = size, pixel, oversample
        self.centre_os = centre_oversample
        pad = int(np.ceil(PSF_PAD_SIGMA * max_fwhm / FWHM_PER_SIGMA / pixel))
        self.pad = pad
        self.n_fine = (size + 2 * pad) * oversample
        self.fine_pix = pixel / oversample

    def transform(self, n: float, re: float, q: float, pa_deg: float) -> np.ndarray:
        """rfft2 of the (unconvolved) component on the fine padded grid."""
        img = sample_profile(self.n_fine, self.fine_pix, n, re, q, pa_deg, 1, self.centre_os * 3)
        return np.fft.rfft2(img)

    def convolve(self, ft: np.ndarray, fwhm: float) -> np.ndarray:
        """Back to a (size, size) image after a Gaussian PSF of `fwhm` arcsec."""
        sigma = fwhm / FWHM_PER_SIGMA / self.fine_pix
        fine = np.fft.irfft2(ft * gaussian_otf((self.n_fine, self.n_fine), sigma), s=(self.n_fine, self.n_fine))
        # The profile is centred on the fine grid; fftshift-free since sampling is absolute.
        lo = self.pad * self.os
        cut = fine[lo: lo + self.size * self.os, lo: lo + self.size * self.os]
        return cut.reshape(self.size, self.os, self.size, self.os).sum(axis=(1, 3))


@lru_cache(maxsize=64)
def _aperture_weights(n_pix: int, pix: float, radius: float, sub: int = 8) -> np.ndarray:
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    c = (np.arange(n_pix) - (n_pix - 1) / 2.0) * pix
    xs = (c[:, None] + offs[None, :] * pix).ravel()
    x, y = np.meshgrid(xs, xs)
    inside = (x**2 + y**2) <= radius**2
    return inside.reshape(n_pix, sub, n_pix, sub).mean(axis=(1, 3))


def fibre_fraction(n: float, re: float, q: float, pa_deg: float, fwhm: float, radius: float,
                   pixel: float = 0.1, centre_oversample: int = 9) -> float:
    """Fraction of a component's total light inside a centred circular fibre after seeing."""
    sigma = fwhm / FWHM_PER_SIGMA
    half = radius + PSF_PAD_SIGMA * sigma
    n_pix = 2 * int(np.ceil((half + PSF_PAD_SIGMA * sigma) / pixel)) + 2
    n_pix += -n_pix % 8  # few distinct sizes, so the aperture weights are cached
    img = sample_profile(n_pix, pixel, n, re, q, pa_deg, 2, centre_oversample)
    conv = np.fft.irfft2(np.fft.rfft2(img) * gaussian_otf(img.shape, sigma / pixel), s=img.shape)
    return float(np.sum(conv * _aperture_weights(n_pix, pixel, radius)))
