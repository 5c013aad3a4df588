"""Stellar population synthesis with bagpipes: one model per process, `update()` per component.

Building a bagpipes `model_galaxy` costs about a second, an `update()` tens of ms;
a worker therefore builds its model once (lazily) and reuses it. bagpipes' own
resampling onto `spec_wavs` (spectres, a Python loop per pixel) costs 80% of an
update, so the model is built with `spec_wavs` (which fixes the internal sampling
at `resolution` over our range) and then resampled here: velocity broadening by
a Gaussian on the log-uniform internal grid and a vectorised flux-conserving
rebin. Spectra: observed frame, on `model_loglam()`, erg/s/cm^2/A, for
log10(M_formed) = REF_LOG_MASS.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ...config.constants import C_KMS
from ...config.mock import MockParams
from ...io.sdss_spectrum import sdss_loglam_grid
from ...measure.bands import air_to_vacuum as measure_air_to_vacuum

LOGLAM_STEP = 1e-4
REF_LOG_MASS = 10.0
"""Components are synthesised at this log10 mass formed and rescaled linearly."""
HALPHA_KEY = "H  1  6562.80A"
KERNEL_SIGMAS = 4
AIR_VACUUM_MIN_A = 2000.0
"""bagpipes (MILES/BC03 stars, Cloudy lines) works in air above this wavelength, as is the convention;
the SDSS grid is in vacuum, so the mock converts (with the measurement windows' formula)."""


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths (A) of air wavelengths (A) by `measure.air_to_vacuum` (one formula for the
    mock's spectra and the windows that measure them); unchanged below AIR_VACUUM_MIN_A."""
    wave_air = np.asarray(wave_air, np.float64)
    return np.where(wave_air > AIR_VACUUM_MIN_A, measure_air_to_vacuum(wave_air), wave_air)


def model_loglam(mp: MockParams) -> np.ndarray:
    """log10 wavelength grid of the model spectra: the SDSS grid extended to cover PS1 y."""
    return sdss_loglam_grid(mp.wave_min_a, mp.wave_max_a, LOGLAM_STEP)


def sdss_slice(mp: MockParams, wave_min: float = 3800.0, wave_max: float = 9200.0) -> slice:
    """Where the SDSS coadd grid sits inside the model grid (same step, aligned)."""
    full = np.rint(model_loglam(mp) / LOGLAM_STEP).astype(np.int64)
    sdss = np.rint(sdss_loglam_grid(wave_min, wave_max, LOGLAM_STEP) / LOGLAM_STEP).astype(np.int64)
    start = int(np.searchsorted(full, sdss[0]))
    if start + len(sdss) > len(full) or full[start] != sdss[0]:
        raise ValueError("mock.wave_min_a/wave_max_a must cover the SDSS grid 3800-9200 A")
    return slice(start, start + len(sdss))


def log_bin_edges(loglam: np.ndarray) -> np.ndarray:
    """Wavelength edges of pixels centred on a log-uniform grid."""
    step = loglam[1] - loglam[0]
    return 10.0 ** np.concatenate([loglam - step / 2, loglam[-1:] + step / 2])


def rebin(wave_in: np.ndarray, flux_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """Flux-conserving rebin (mean f_lambda per output bin) via the cumulative integral."""
    mid = 0.5 * (wave_in[1:] + wave_in[:-1])
    edges_in = np.concatenate([[wave_in[0] - (mid[0] - wave_in[0])], mid, [wave_in[-1] + (wave_in[-1] - mid[-1])]])
    cum = np.concatenate([[0.0], np.cumsum(flux_in * np.diff(edges_in))])
    if edges_out[0] < edges_in[0] or edges_out[-1] > edges_in[-1]:
        raise ValueError("model spectrum does not cover the output grid")
    return np.diff(np.interp(edges_out, edges_in, cum)) / np.diff(edges_out)


def broaden(loglam_in: np.ndarray, flux: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Gaussian velocity broadening on a (locally) log-uniform grid."""
    dv = C_KMS * np.log(10.0) * np.median(np.diff(loglam_in))
    sigma_pix = sigma_kms / dv
    if sigma_pix < 0.3:
        return flux
    half = int(np.ceil(KERNEL_SIGMAS * sigma_pix))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma_pix) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(flux, half, mode="edge"), kernel, mode="valid")


def _components(z: float, age: float, tau: float, metallicity: float, av: float, log_u: float,
                eta: float = 1.0, gas_metallicity: float | None = None) -> dict:
    # Always explicit: bagpipes sets up its separate nebular SFH only if the first model has one.
    gas = metallicity if gas_metallicity is None or not np.isfinite(gas_metallicity) else gas_metallicity
    nebular = {"logU": log_u, "metallicity": gas}
    return {
        "redshift": z,
        "delayed": {"age": age, "tau": tau, "massformed": REF_LOG_MASS, "metallicity": metallicity},
        "dust": {"type": "Calzetti", "Av": av, "eta": eta},
        "nebular": nebular,
    }


class SPS:
    """A bagpipes model reused for every component synthesised in this process."""

    def __init__(self, mp: MockParams):
        self.mp = mp
        self.loglam = model_loglam(mp)
        self.edges = log_bin_edges(self.loglam)
        self._model = None

    def _ensure(self, comps: dict) -> None:
        if self._model is None:
            os.environ.setdefault("MPLBACKEND", "Agg")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import bagpipes
                import bagpipes.config

                bagpipes.config.R_spec = float(self.mp.sps_resolution)
                self._model = bagpipes.model_galaxy(comps, spec_wavs=10.0 ** self.loglam)
            # Sampling is now fixed; skip bagpipes' slow per-pixel resampler (done in rebin()).
            self._model.spec_wavs = None
        else:
            self._model.update(comps)
        if self._model.sfh.unphysical:
            raise ValueError(f"bagpipes: unphysical SFH for {comps}")

    def component(self, g: dict, which: str) -> tuple[np.ndarray, float, float, float]:
        """(observed-frame spectrum in erg/s/cm^2/A, SFR in Msun/yr, H-alpha flux in erg/s/cm^2,
        log10 living stellar mass) of the bulge or disk of galaxy parameters `g`, at REF_LOG_MASS formed."""
        z = g["z"]
        comps = _components(z, g[f"{which}_age_gyr"], g[f"{which}_tau_gyr"],
                            g[f"{which}_metallicity"], g[f"{which}_av"], g["log_u"],
                            self.mp.population.birth_cloud_eta, g.get("gas_metallicity"))
        self._ensure(comps)
        rest = air_to_vacuum(self._model.wavelengths)
        obs = rest * (1.0 + z)
        # Only the part that lands on our grid (plus kernel margin) needs broadening.
        lo = max(int(np.searchsorted(obs, self.edges[0])) - 200, 0)
        hi = min(int(np.searchsorted(obs, self.edges[-1])) + 200, len(obs))
        sigma = float(np.hypot(g["veldisp_kms"], self.mp.instrument_sigma_kms))
        full = np.asarray(self._model.spectrum_full, np.float64)[lo:hi]
        flux = broaden(np.log10(obs[lo:hi]), full, sigma)
        spec = rebin(obs[lo:hi], flux, self.edges)
        if not np.all(np.isfinite(spec)):
            raise FloatingPointError(f"bagpipes returned non-finite flux for galaxy {g['index']} ({which})")
        halpha = float(self._model.line_fluxes.get(HALPHA_KEY, 0.0))
        return spec, float(self._model.sfh.sfr), halpha, float(self._model.sfh.stellar_mass)
