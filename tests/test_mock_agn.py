"""The mock's narrow-line AGN population: draws, BPT placement, flux conservation, truth labels."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config import Params
from img2spec.measure import bpt_region, measure_spectra
from img2spec.sources.mock.agn import LINES_A, draw_agn, line_fluxes, line_spectrum
from img2spec.sources.mock.population import draw_galaxy
from img2spec.sources.mock.realism import SCHAWINSKI_ICPT, SCHAWINSKI_SLOPE
from img2spec.sources.mock.sps import log_bin_edges, model_loglam

AGN_CLASS_CODE = 2  # measure.BPT_LABELS: above Kewley et al. 2001


def _params(**population) -> Params:
    return Params.model_validate({"mock": {"seed": 3, "population": population}})


def test_agn_fraction_and_class_split_follow_params():
    mp = _params().mock
    draws = [draw_agn(i, 0.5, mp) for i in range(2000)]
    cls = np.array([d["agn_class"] for d in draws])
    assert abs((cls != "none").mean() - 0.5) < 0.04
    sey = (cls == "seyfert").sum() / (cls != "none").sum()
    assert abs(sey - mp.population.agn.seyfert_share) < 0.05
    assert all(draw_agn(i, 0.0, mp)["agn_class"] == "none" for i in range(200))
    assert draw_agn(7, 0.5, mp) == draw_agn(7, 0.5, mp)


def test_agn_draws_leave_every_other_parameter_unchanged():
    # The AGN has its own random stream: turning it on must not move any galaxy's other draws.
    off, on = _params().mock, _params(red={"fraction": 0.4, "bulge_to_total": [0.55, 0.95], "disk_age_gyr": [7, 10],
                                            "disk_tau_gyr": [0.5, 1], "disk_av": [0, 0.3],
                                            "veldisp_kms": [140, 260], "agn_fraction": 1.0}).mock
    for i in range(20):
        assert draw_galaxy(i, off) == draw_galaxy(i, on)


@pytest.mark.parametrize("cls", ["seyfert", "liner"])
def test_drawn_ratios_sit_in_their_bpt_region(cls):
    mp = _params().mock
    share = 1.0 if cls == "seyfert" else 0.0
    mp = mp.model_copy(update={"population": mp.population.model_copy(
        update={"agn": mp.population.agn.model_copy(update={"seyfert_share": share})})})
    for i in range(300):
        g = draw_agn(i, 1.0, mp)
        assert g["agn_class"] == cls
        f = line_fluxes(g, 1.0)
        x, y = np.log10(f["nii_6584"] / f["halpha"]), np.log10(f["oiii_5007"] / f["hbeta"])
        assert bpt_region(np.array([x]), np.array([y]))[0] == AGN_CLASS_CODE
        assert (y > SCHAWINSKI_SLOPE * x + SCHAWINSKI_ICPT) == (cls == "seyfert")
        assert f["oiii_5007"] / f["oiii_4959"] == pytest.approx(2.98)


def test_line_spectrum_conserves_flux():
    mp = _params().mock
    edges = log_bin_edges(model_loglam(mp))
    fluxes = {"halpha": 2e-15, "hbeta": 5e-16, "oiii_5007": 1e-15}
    spec = line_spectrum(edges, 0.08, fluxes, 150.0)
    dl = np.diff(edges)
    for name, f in fluxes.items():
        c = LINES_A[name] * 1.08
        near = np.abs(np.sqrt(edges[1:] * edges[:-1]) - c) < 30
        assert np.sum(spec[near] * dl[near]) == pytest.approx(f, rel=1e-3)


def test_agn_host_spectrum_measures_back_its_class():
    """A red host with a strong Seyfert: the measured BPT ratios of the noiseless fibre spectrum
    are the drawn ones (to the host's Balmer absorption) and the class is AGN."""
    from img2spec.sources.mock.synth import GalaxySynth

    base = {"fraction": 1.0, "bulge_to_total": [0.8, 0.9], "disk_age_gyr": [7, 10], "disk_tau_gyr": [0.5, 1],
            "disk_av": [0, 0.3], "veldisp_kms": [150, 200], "agn_fraction": 1.0}
    params = _params(red=base, green={**base, "fraction": 0.0}, blue={**base, "fraction": 0.0},
                     agn={"seyfert_share": 1.0, "seyfert": {
                         "log_oiii_hbeta": [0.8, 1.0], "log_nii_halpha": [-0.2, 0.0], "log_oii_oiii": [-0.5, -0.3],
                         "log_oi_halpha": [-1.2, -1.0], "log_sii_halpha": [-0.4, -0.2], "halpha_ew_a": [20, 30]}})
    synth = GalaxySynth(params.mock)
    rows, spectra = zip(*(synth.galaxy(i) for i in range(2)))
    wave = 10 ** synth.sps.loglam[synth.sdss]
    m = measure_spectra(np.stack(spectra), wave, np.array([g["z"] for g in rows]), params.measure)
    for k, g in enumerate(rows):
        assert g["agn_class"] == "seyfert" and g["agn_flux_halpha"] > 0
        assert m["log_nii_halpha"][k] == pytest.approx(g["agn_log_nii_halpha"], abs=0.2)
        assert m["log_oiii_hbeta"][k] == pytest.approx(g["agn_log_oiii_hbeta"], abs=0.25)
    # No sigma for the noiseless truth, so the S/N cut of measure's bpt_class does not apply: place the ratios.
    assert list(bpt_region(m["log_nii_halpha"], m["log_oiii_hbeta"])) == [AGN_CLASS_CODE] * 2
