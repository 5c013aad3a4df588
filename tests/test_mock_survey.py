"""The mock survey: physics checks, file round-trips, determinism (a tiny survey per session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from img2spec import BANDS
from img2spec.config import Params
from img2spec.io.ps1_cutout import read_cutout
from img2spec.io.sdss_spectrum import read_spectrum, sdss_loglam_grid
from img2spec.paths import Paths
from img2spec.sources import run_source_stage
from img2spec.sources.mock import truth
from img2spec.sources.mock.filters import band_weights
from img2spec.sources.mock.images import make_renderer, noiseless_images
from img2spec.sources.mock.sersic import fibre_fraction
from img2spec.sources.mock.synth import GalaxySynth

N_GAL = 30


def _params(**mock) -> Params:
    base = {"n_galaxies": N_GAL, "seed": 7, "n_workers": 2, "chunk_size": 8}
    base.update(mock)
    # A tiny cutout keeps rendering fast; the physics is the same.
    return Params.model_validate({"mock": base, "data": {"cutout_size": 48}})


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    paths = Paths(tmp_path_factory.mktemp("mock"))
    params = _params()
    reports = {s: run_source_stage(s, params, paths)
               for s in ("select", "fetch_spectra", "fetch_images", "fetch_photometry")}
    tp = truth.read_params(paths.truth_dir)
    return params, paths, reports, tp


def test_candidates_contract(survey):
    _, paths, reports, tp = survey
    cand = pd.read_csv(paths.candidates)
    assert list(cand.columns) == ["objid", "specobjid", "ra", "dec", "z", "plate", "mjd", "fiberid"]
    assert len(cand) == N_GAL == reports["select"]["n_candidates"]
    assert cand["objid"].dtype == np.int64 and cand["objid"].astype(str).str.len().eq(19).all()
    assert cand["objid"].is_unique and cand["specobjid"].is_unique
    assert cand["z"].between(0.01, 0.25).all()
    assert set(tp["galaxy_type"]) <= {"red", "green", "blue"} and len(set(tp["galaxy_type"])) == 3
    spectra = truth.open_spectra(paths.truth_dir)
    assert spectra.shape == (N_GAL, len(sdss_loglam_grid()))
    assert np.all(np.isfinite(spectra)) and np.all(np.median(spectra, axis=1) > 0)
    assert (tp["total_mag_g"] < 18.0).mean() > 0.8


def test_spectra_round_trip_astropy_and_reader(survey):
    _, paths, _, tp = survey
    files = sorted(paths.spectra_dir.glob("spec-*.fits"))
    assert len(files) == N_GAL
    row = tp.iloc[0]
    path = paths.spectrum_file(row["plate"], row["mjd"], row["fiberid"])
    with fits.open(path) as hdul:
        assert hdul[1].name == "COADD" and hdul[2].name == "SPECOBJ"
        assert {"flux", "loglam", "ivar", "and_mask", "model"} <= set(hdul[1].columns.names)
        assert int(hdul[2].data["PLATE"][0]) == row["plate"]
    spec = read_spectrum(path)
    assert spec.z == pytest.approx(row["z"]) and spec.fiberid == row["fiberid"] and spec.cls == "GALAXY"
    np.testing.assert_allclose(spec.loglam, sdss_loglam_grid(), atol=1e-6)
    assert spec.good.mean() > 0.5

    # Noise is consistent with ivar: (flux - truth) sqrt(ivar) has unit spread on good pixels.
    # Per spectrum (~3,700 pixels) std(pull) scatters by ~0.02 between spectra, so the median
    # over the survey's spectra is known to ~0.005; the tolerance allows the mock's deliberate
    # non-Gaussian realism (a few bad spectra, sky residuals) and nothing like a 1.5x noise error.
    true = truth.open_spectra(paths.truth_dir)
    stds = {1.0: [], 1.5: [], 1 / 1.5: []}
    for k, row in tp.iterrows():
        spec = read_spectrum(paths.spectrum_file(row["plate"], row["mjd"], row["fiberid"]))
        g = spec.good & (spec.and_mask == 0)
        for factor in stds:  # the quoted errors as written, and 1.5x too large or too small
            stds[factor].append(np.std((spec.flux[g] - true[k][g]) * np.sqrt(spec.ivar[g]) * factor))
    assert noise_matches_ivar(stds[1.0]), np.median(stds[1.0])
    assert not noise_matches_ivar(stds[1.5]) and not noise_matches_ivar(stds[1 / 1.5])


SPECTRUM_PULL_TOLERANCE = 0.03
"""|median over spectra of std(pull) - 1| allowed (measured 1.005 on the 30-galaxy survey)."""


def noise_matches_ivar(pull_stds) -> bool:
    return abs(float(np.median(pull_stds)) - 1.0) < SPECTRUM_PULL_TOLERANCE


def photometry_errors_match(pulls) -> bool:
    """Pulls (catalogue - model) / quoted error look like N(0, 1): median |pull| within 3 standard
    errors of 0.674 (half-normal median; standard error 0.5 / (sqrt(n) 2 phi(0.674))) and the
    standard deviation within 3 standard errors (1 / sqrt(2 n)) of 1."""
    pulls = np.asarray(pulls, float)
    half_normal_median = 0.6745
    sem_median = 0.5 / (np.sqrt(pulls.size) * 2 * 0.3178)
    return bool(abs(np.median(np.abs(pulls)) - half_normal_median) < 3 * sem_median
                and abs(np.std(pulls) - 1.0) < 3 / np.sqrt(2 * pulls.size))


def test_some_spectra_are_bad_but_few(tmp_path):
    # A survey large enough to hit the failure rates would be slow; force them instead.
    from img2spec.sources.mock.noise import observe

    p = Params().mock.spectra
    loglam = sdss_loglam_grid()
    flux = np.full(len(loglam), 20.0)
    kinds = [observe(flux, loglam, p, np.random.default_rng(i))[4] for i in range(400)]
    bad = sum(k != "" for k in kinds) / len(kinds)
    assert 0.0 < bad < 0.08
    forced = p.model_copy(update={"mostly_masked_fraction": 1.0})
    _, ivar, mask, _, kind = observe(flux, loglam, forced, np.random.default_rng(0))
    assert kind == "mostly_masked" and (ivar == 0).mean() > 0.6 and (mask != 0).mean() > 0.6


def test_images_round_trip_and_match_photometry(survey):
    params, paths, _, tp = survey
    phot = pd.read_csv(paths.photometry)
    assert list(phot.columns[:4]) == ["objid", "ps1_objid", "ra", "dec"]
    assert all(f"{b}KronMag" in phot and f"{b}KronMagErr" in phot for b in BANDS)
    renderer = make_renderer(params.mock.images, params.data.cutout_size, params.data.pixel_scale_arcsec)
    pulls = []
    for _, g in tp.iterrows():
        cut = read_cutout(paths.image_file(int(g["objid"])))
        assert cut.data["g"].shape == (48, 48) and cut.objid == g["objid"]
        # Fraction of each component's light that falls inside the cutout (large disks overflow it).
        model = noiseless_images(g.to_dict(), renderer, cut.seeing, params.mock.images)
        p = phot[phot["objid"] == g["objid"]].iloc[0]
        for band in BANDS:
            if band in ("g", "r", "i"):  # the image sum is the model light in the cutout, up to noise...
                img_flux = float(cut.data[band].sum())
                expected = float(model[band].sum())
                sky = np.std(cut.data[band][:4, :4]) * np.sqrt(cut.data[band].size)
                assert abs(img_flux - expected) < 6 * sky + 0.02 * expected
            # ... and the catalogue is that model's total light, up to its quoted error.
            cat_counts = 10 ** (-0.4 * (p[f"{band}KronMag"] - cut.magzp[band]))
            total_model = (g[f"bulge_maggies_{band}"] + g[f"disk_maggies_{band}"]) * 10 ** (0.4 * cut.magzp[band])
            pulls.append((cat_counts - total_model) / (total_model * p[f"{band}KronMagErr"] / 1.0857))
    assert photometry_errors_match(pulls), (np.median(np.abs(pulls)), np.std(pulls))  # 150 pulls: measured 0.71, 0.99
    pulls = np.asarray(pulls)
    assert not photometry_errors_match(pulls * 1.5) and not photometry_errors_match(pulls / 1.5)  # 1.5x error


def test_red_sequence_redder_than_blue_cloud(survey):
    tp = survey[3]
    gr = tp["total_mag_g"] - tp["total_mag_r"]
    assert gr[tp["galaxy_type"] == "red"].median() > gr[tp["galaxy_type"] == "blue"].median() + 0.2


def test_halpha_in_star_forming_disks_not_in_bulges(survey):
    tp = survey[3]
    blue, red = tp[tp["galaxy_type"] == "blue"], tp[tp["galaxy_type"] == "red"]
    # Equivalent width proxy: H-alpha flux per unit r-band continuum flux.
    ew_blue = blue["fibre_halpha_flux"] / (blue["bulge_maggies_r"] + blue["disk_maggies_r"])
    ew_red = red["fibre_halpha_flux"] / (red["bulge_maggies_r"] + red["disk_maggies_r"])
    assert ew_blue.median() > 10 * ew_red.median()


def test_halpha_line_visible_in_fibre_spectrum(survey):
    _, paths, _, tp = survey
    spectra = truth.open_spectra(paths.truth_dir)
    wave = 10 ** truth.read_loglam(paths.truth_dir)
    contrast = {}
    for i, g in tp.iterrows():
        ha = 6564.6 * (1 + g["z"])
        line = np.abs(wave - ha) < 4
        cont = (np.abs(wave - ha) > 30) & (np.abs(wave - ha) < 60)
        contrast[i] = spectra[i][line].max() / np.median(spectra[i][cont]) - 1
    c = pd.Series(contrast)
    assert c[tp["galaxy_type"] == "blue"].median() > 0.3
    assert c[tp["galaxy_type"] == "blue"].median() > 3 * max(c[tp["galaxy_type"] == "red"].median(), 0.01)


def test_4000a_break_moves_with_redshift():
    params = _params()
    synth = GalaxySynth(params.mock)
    wave = 10 ** synth.sps.loglam
    base = {"index": 0, "veldisp_kms": 150.0, "bulge_age_gyr": 9.0, "bulge_tau_gyr": 0.3,
            "bulge_metallicity": 1.0, "bulge_av": 0.1, "log_u": -3.0}
    breaks = []
    for z in (0.03, 0.2):
        spec, *_ = synth.sps.component({**base, "z": z}, "bulge")
        # The strongest blue-to-red jump of the smoothed spectrum sits at 4000 (1 + z).
        smooth = np.convolve(spec, np.ones(41) / 41, mode="same")
        ratio = smooth[60:] / smooth[:-60]
        sel = (wave[60:] > 3900) & (wave[60:] < 5200)
        breaks.append(wave[60:][sel][np.argmax(ratio[sel])])
    assert breaks[0] == pytest.approx(4000 * 1.03, abs=120)
    assert breaks[1] == pytest.approx(4000 * 1.20, abs=120)


def test_fibre_of_bulge_dominated_galaxy_redder_than_total(survey):
    tp = survey[3]
    colour = {c: -2.5 * np.log10(tp[f"{c}_maggies_g"] / tp[f"{c}_maggies_r"]) for c in ("bulge", "disk")}
    # Bulge-dominated, with a bulge redder than its disk and more concentrated in the fibre.
    bd = tp[(tp["bulge_to_total"] > 0.4) & (colour["bulge"] > colour["disk"] + 0.05)
            & (tp["bulge_fibre_fraction"] > tp["disk_fibre_fraction"] + 0.05)]
    assert len(bd) >= 3
    # Colours of the fibre *spectrum* through the g and r curves vs the total light.
    fibre_gr = bd["fibre_mag_g"] - bd["fibre_mag_r"]
    total_gr = bd["total_mag_g"] - bd["total_mag_r"]
    assert (fibre_gr > total_gr).all()


def test_fibre_fraction_limits():
    # A point-like source puts most light in a 1.5" fibre; a huge disk very little.
    small = fibre_fraction(1.0, 0.05, 1.0, 0.0, 1.5, 1.5)
    big = fibre_fraction(1.0, 10.0, 1.0, 0.0, 1.5, 1.5)
    gauss = 1 - np.exp(-0.5 * (1.5 / (1.5 / 2.3548)) ** 2)
    assert small == pytest.approx(gauss, abs=0.02) and big < 0.05


def test_band_weights_match_speclite():
    import speclite.filters

    wave = np.linspace(3700, 11050, 6000)
    flux = 1e-16 * (wave / 5000) ** -1.5
    ours = band_weights(wave) @ flux
    ref = speclite.filters.load_filters(*[f"panstarrs-{b}" for b in BANDS]).get_ab_maggies(flux, wave)
    np.testing.assert_allclose(ours, [ref[f"panstarrs-{b}"][0] for b in BANDS], rtol=2e-3)


def test_deterministic_and_independent_of_workers(survey, tmp_path):
    params, paths, _, tp = survey
    other = Paths(tmp_path)
    n = 6
    p1 = _params(n_galaxies=n, n_workers=1, chunk_size=4)
    run_source_stage("select", p1, other)
    run_source_stage("fetch_spectra", p1, other)
    tp2 = truth.read_params(other.truth_dir)
    pd.testing.assert_frame_equal(tp.iloc[:n].reset_index(drop=True), tp2, check_exact=False, rtol=1e-9)
    np.testing.assert_allclose(truth.open_spectra(other.truth_dir), truth.open_spectra(paths.truth_dir)[:n], rtol=1e-6)
    g = tp.iloc[2]
    a = read_spectrum(paths.spectrum_file(g["plate"], g["mjd"], g["fiberid"]))
    b = read_spectrum(other.spectrum_file(g["plate"], g["mjd"], g["fiberid"]))
    np.testing.assert_array_equal(a.flux, b.flux)
    # Rerun is idempotent and removes files of a former, larger survey.
    report = run_source_stage("fetch_spectra", p1, other)
    assert report["n_stale_removed"] == 0 and len(list(other.spectra_dir.glob("spec-*.fits"))) == n


def test_bad_params_are_named():
    from img2spec.config import ConfigError, params_from_dict

    with pytest.raises(ConfigError, match="mock.population"):
        params_from_dict({"mock": {"population": {"z_min": 0.3, "z_max": 0.1}}})
    with pytest.raises(ConfigError, match="mock.images"):
        params_from_dict({"mock": {"images": {"exptime_s": {"g": 1.0}}}})
