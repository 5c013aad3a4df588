"""One galaxy end to end for the `select` stage: SPS, flux scaling, sizes, fibre aperture.

Output: a flat truth row (all parameters, per-component band fluxes, sizes, fibre
fractions) and the noiseless fibre spectrum on the SDSS grid in 1e-17 units.
"""

from __future__ import annotations

import numpy as np

from ... import BANDS
from ...config.constants import SDSS_FLUX_UNIT
from ...config.mock import MockParams
from .cosmology import kpc_per_arcsec
from .filters import band_weights, maggies_to_mag
from .agn import add_agn, draw_agn
from .population import draw_galaxy
from .sersic import fibre_fraction
from .sps import SPS, REF_LOG_MASS, model_loglam, sdss_slice

COMPONENTS = ("bulge", "disk")


class GalaxySynth:
    """Per-process state: the bagpipes model and the filter weights."""

    def __init__(self, mp: MockParams):
        self.mp = mp
        self.sps = SPS(mp)
        self.weights = band_weights(10.0 ** model_loglam(mp))
        self.sdss = sdss_slice(mp)

    def galaxy(self, index: int) -> tuple[dict, np.ndarray]:
        mp, st = self.mp, self.mp.structure
        g = draw_galaxy(index, mp)
        g.update(draw_agn(index, getattr(mp.population, g["galaxy_type"]).agn_fraction, mp))
        spec, maggies, sfr, halpha, living = {}, {}, {}, {}, {}
        for comp in COMPONENTS:
            spec[comp], sfr[comp], halpha[comp], living[comp] = self.sps.component(g, comp)
            maggies[comp] = self.weights @ spec[comp]
        r, gb = BANDS.index("r"), BANDS.index("g")
        bt = g["bulge_to_total"]
        # Scale bulge and disk so the bulge holds `bt` of the r light and total g hits the target.
        g_per_r = bt * maggies["bulge"][gb] / maggies["bulge"][r] + (1 - bt) * maggies["disk"][gb] / maggies["disk"][r]
        total_r = 10 ** (-0.4 * g["g_target"]) / g_per_r
        scale = {"bulge": bt * total_r / maggies["bulge"][r], "disk": (1 - bt) * total_r / maggies["disk"][r]}
        kpc = kpc_per_arcsec(g["z"])
        fibre = np.zeros_like(spec["disk"])
        total = np.zeros(len(BANDS))
        for comp in COMPONENTS:
            s = scale[comp]
            log_m = REF_LOG_MASS + np.log10(s) if s > 0 else -np.inf
            g[f"{comp}_log_mass_formed"] = float(log_m)
            g[f"{comp}_log_stellar_mass"] = float(living[comp] + np.log10(s)) if s > 0 else float("-inf")
            g[f"{comp}_sfr"] = float(sfr[comp] * s)
            re0 = st.bulge_re_kpc_at_1e10 if comp == "bulge" else st.disk_re_kpc_at_1e10
            slope = st.bulge_size_slope if comp == "bulge" else st.disk_size_slope
            m_eff = log_m if np.isfinite(log_m) else REF_LOG_MASS
            re_kpc = re0 * 10 ** (slope * (m_eff - 10.0) + g[f"{comp}_size_dev"])
            g[f"{comp}_re_kpc"] = float(re_kpc)
            g[f"{comp}_re_arcsec"] = float(max(re_kpc / kpc, st.min_re_arcsec))
            ff = fibre_fraction(g[f"{comp}_n"], g[f"{comp}_re_arcsec"], g[f"{comp}_q"], g[f"{comp}_pa_deg"],
                                g["fibre_seeing_arcsec"], mp.fibre.radius_arcsec, mp.fibre.pixel_arcsec,
                                mp.images.centre_oversample)
            g[f"{comp}_fibre_fraction"] = ff
            for k, band in enumerate(BANDS):
                g[f"{comp}_maggies_{band}"] = float(maggies[comp][k] * s)
            total += maggies[comp] * s
            fibre += spec[comp] * (s * ff)
            g[f"{comp}_halpha_flux"] = float(halpha[comp] * s)
        g["fibre_halpha_flux"] = float(sum(g[f"{c}_halpha_flux"] * g[f"{c}_fibre_fraction"] for c in COMPONENTS))
        # The unresolved nucleus: all of its line light is in the fibre; in the images it rides on the bulge.
        sigma_gas = float(np.hypot(g["veldisp_kms"], mp.instrument_sigma_kms))
        agn = add_agn(g, fibre, self.sps.edges, sigma_gas)
        if g["agn_class"] != "none":
            fibre = fibre + agn
            agn_maggies = self.weights @ agn
            total += agn_maggies
            for k, band in enumerate(BANDS):
                g[f"bulge_maggies_{band}"] += float(agn_maggies[k])
        fibre_maggies = self.weights @ fibre
        for k, band in enumerate(BANDS):
            g[f"total_mag_{band}"] = float(maggies_to_mag(total[k]))
            g[f"fibre_mag_{band}"] = float(maggies_to_mag(fibre_maggies[k]))
        g["log_mass_formed"] = float(np.log10(10 ** g["bulge_log_mass_formed"] + 10 ** g["disk_log_mass_formed"]))
        g["log_stellar_mass"] = float(np.log10(10 ** g["bulge_log_stellar_mass"] + 10 ** g["disk_log_stellar_mass"]))
        return g, (fibre[self.sdss] / SDSS_FLUX_UNIT).astype(np.float32)
