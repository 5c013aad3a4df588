"""measure/: lines, Dn4000, Hdelta_A and classes on synthetic spectra with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from img2spec.config import Params
from img2spec.config.measure import MeasureParams
from img2spec.config.prepare import PrepareParams
from img2spec.measure import (BAD_CONTINUUM, MASKED, NO_REDSHIFT, OFF_GRID, air_to_vacuum, bpt_region,
                              classify, column_names, measure_spectra)
from img2spec.prep.spectra import make_grid

MP = Params().measure
GRID = make_grid(PrepareParams())
WAVE, EDGES = GRID.centres, GRID.edges
HALPHA, OIII, HBETA, NII, OII = 6564.61, 5008.24, 4862.68, 6585.27, 3728.5   # vacuum, A


def gaussian_bins(edges: np.ndarray, centre: np.ndarray, sigma: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Mean f_lambda per pixel of Gaussian lines (exact bin integrals / bin widths): (N, P)."""
    c, s, f = (np.asarray(a, float)[:, None] for a in (centre, sigma, flux))
    cdf = 0.5 * (1 + erf((edges[None, :] - c) / (np.sqrt(2) * s)))
    return f * np.diff(cdf, axis=1) / np.diff(edges)[None, :]


def observed(z, lines, cont=lambda lam: np.full_like(lam, 2.0), sigma_rest=2.0):
    """Observed-frame spectra (N, P): continuum + lines {rest centre: observed line flux}."""
    z = np.atleast_1d(np.asarray(z, float))
    flux = np.broadcast_to(cont(WAVE), (len(z), len(WAVE))).copy()
    for lam, f in lines.items():
        flux += gaussian_bins(EDGES, lam * (1 + z), sigma_rest * (1 + z), np.full(len(z), f))
    return flux


def test_columns_match_output_and_params_validate():
    out = measure_spectra(observed(0.05, {}), WAVE, 0.05, MP)
    assert list(out) == column_names(MP)
    assert all(v.shape == (1,) for v in out.values())
    with pytest.raises(ValueError, match="BPT"):
        MeasureParams(lines={"halpha": MP.lines["halpha"]})
    with pytest.raises(ValueError, match="lower bound"):
        MeasureParams(dn4000={"blue": [3950.0, 3850.0], "red": [4000.0, 4100.0]})


def test_no_spectra_gives_empty_columns():
    """A survey shard whose cutouts were all rejected measures zero spectra."""
    out = measure_spectra(np.zeros((0, WAVE.size), np.float32), WAVE, np.zeros(0), MP,
                          sigma=np.zeros((0, WAVE.size), np.float32))
    assert list(out) == column_names(MP) and all(v.shape == (0,) for v in out.values())


@pytest.mark.parametrize("z", [0.02, 0.1, 0.2])
def test_gaussian_line_on_flat_continuum(z):
    f_line, cont = 100.0, 2.0
    flux = observed(z, {HALPHA: f_line, OIII: 40.0})
    out = measure_spectra(flux, WAVE, z, MP)
    assert out["halpha_flux"][0] == pytest.approx(f_line, rel=2e-3)
    # rest-frame EW = observed EW / (1+z) = F / (C (1+z))
    assert out["halpha_ew"][0] == pytest.approx(f_line / cont / (1 + z), rel=2e-3)
    assert out["oiii_5007_flux"][0] == pytest.approx(40.0, rel=2e-3)
    assert out["hbeta_flux"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["halpha_flag"][0] == 0
    assert np.isnan(out["halpha_flux_err"][0])   # no sigma/ivar given -> unknown error, never 0


def test_sloped_continuum_is_interpolated_between_side_bands():
    z = 0.07
    cont = lambda lam: 1.0 + 4e-4 * (lam - 5000.0)  # noqa: E731
    flux = observed(z, {HALPHA: 60.0, NII: 20.0}, cont=cont)
    out = measure_spectra(flux, WAVE, z, MP)
    assert out["halpha_flux"][0] == pytest.approx(60.0, rel=3e-3)
    assert out["nii_6584_flux"][0] == pytest.approx(20.0, rel=1e-2)
    c_line = cont(HALPHA * (1 + z))
    assert out["halpha_ew"][0] == pytest.approx(60.0 / c_line / (1 + z), rel=3e-3)


def test_dn4000_known_break_ratio():
    """F_nu = 1 blue of 3975 A (rest), F_nu = 1.8 red of it: Dn4000 = 1.8 exactly."""
    z = np.array([0.03, 0.12])
    rest = WAVE[None, :] / (1 + z[:, None])
    fnu = np.where(rest < 3975.0, 1.0, 1.8)
    flux = fnu / WAVE[None, :] ** 2 * 1e8           # f_lambda = c F_nu / lambda^2 (constant irrelevant)
    out = measure_spectra(flux, WAVE, z, MP)
    np.testing.assert_allclose(out["dn4000"], 1.8, rtol=1e-6)
    # a flat f_lambda has Dn4000 = <lambda^2>_red / <lambda^2>_blue ~ (4050/3900)^2, not 1
    flat = measure_spectra(np.ones((1, WAVE.size)), WAVE, 0.05, MP)
    assert flat["dn4000"][0] == pytest.approx((4050.0 / 3900.0) ** 2, rel=2e-3)


def test_hdelta_a_absorption_positive():
    z, ew = 0.05, 4.0
    hd = air_to_vacuum(4101.74)
    flux = observed(z, {hd: -ew * 2.0 * (1 + z)})   # observed EW = rest EW (1+z), continuum 2
    out = measure_spectra(flux, WAVE, z, MP)
    assert out["hdelta_a"][0] == pytest.approx(ew, rel=2e-3)


def test_air_to_vacuum_halpha():
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)
    assert air_to_vacuum(5006.84) == pytest.approx(5008.24, abs=0.01)


def test_errors_match_monte_carlo_scatter_and_ivar_equals_sigma():
    rng = np.random.default_rng(3)
    n, z, noise = 3000, 0.08, 0.15
    clean = observed(np.full(n, z), {HALPHA: 30.0, HBETA: 8.0})
    flux = clean + rng.normal(0, noise, clean.shape)
    sig = np.full(clean.shape, noise)
    out = measure_spectra(flux, WAVE, np.full(n, z), MP, sigma=sig)
    for q in ("halpha_flux", "halpha_ew", "hbeta_flux", "dn4000", "hdelta_a"):
        assert np.std(out[q]) == pytest.approx(np.median(out[f"{q}_err"]), rel=0.08), q
    assert np.mean(out["halpha_flux"]) == pytest.approx(30.0, abs=3 * np.std(out["halpha_flux"]) / np.sqrt(n))
    via_ivar = measure_spectra(flux[:5], WAVE, np.full(5, z), MP, ivar=1.0 / sig[:5] ** 2)
    np.testing.assert_allclose(via_ivar["halpha_flux_err"], out["halpha_flux_err"][:5], rtol=1e-10)
    with pytest.raises(ValueError, match="3 redshifts for 2 spectra"):
        measure_spectra(flux[:2], WAVE, np.full(3, z), MP)
    with pytest.raises(ValueError, match="not both"):
        measure_spectra(flux[:2], WAVE, z, MP, sigma=sig[:2], ivar=sig[:2])


def test_masked_line_pixel_is_nan_with_flag_and_continuum_tolerates_some():
    z = 0.05
    flux = observed([z, z, z, z], {HALPHA: 50.0})
    ivar = np.full(flux.shape, 100.0)
    pix = np.argmin(np.abs(WAVE - HALPHA * (1 + z)))
    ivar[0, pix] = 0.0                               # one masked pixel in the Halpha line band
    flux[0, pix] = 1e6                               # whatever a masked pixel holds is never used
    blue = (WAVE / (1 + z) > 6483.0) & (WAVE / (1 + z) < 6513.0)
    ivar[1, np.flatnonzero(blue)[:3]] = 0.0          # a third of the blue side band masked: still measured
    ivar[2, blue] = 0.0                              # whole side band masked: NaN
    out = measure_spectra(flux, WAVE, np.full(4, z), MP, ivar=ivar)
    assert np.isnan(out["halpha_flux"][0]) and np.isnan(out["halpha_ew"][0])
    assert out["halpha_flag"][0] & MASKED
    assert out["halpha_flux"][1] == pytest.approx(50.0, rel=3e-3) and out["halpha_flag"][1] == 0
    assert np.isnan(out["halpha_flux"][2]) and out["halpha_flag"][2] & MASKED
    assert out["nii_6584_flag"][2] & MASKED          # shares the side band
    assert out["halpha_flag"][3] == 0 and out["hbeta_flag"][0] == 0   # other rows / lines untouched
    nan_flux = flux.copy()
    nan_flux[3, pix] = np.nan                        # a NaN flux is a masked pixel, not a NaN leak elsewhere
    out2 = measure_spectra(nan_flux, WAVE, np.full(4, z), MP)
    assert out2["halpha_flag"][3] & MASKED and np.isfinite(out2["oiii_5007_flux"][3])


def test_off_grid_and_missing_redshift_are_nan_with_flags():
    z = np.array([0.005, 0.45, np.nan, 0.1])
    out = measure_spectra(observed(np.nan_to_num(z), {HALPHA: 10.0}), WAVE, z, MP)
    assert out["oii_3727_flag"][0] & OFF_GRID and np.isnan(out["oii_3727_flux"][0])      # 3716 A below 3800
    assert out["halpha_flag"][1] & OFF_GRID and np.isnan(out["halpha_ew"][1])           # 6653*1.45 > 9200
    assert out["dn4000_flag"][2] & NO_REDSHIFT and np.isnan(out["dn4000"][2])
    assert out["bpt_class"][2] == -1 and out["sf_class"][2] == -1
    assert out["halpha_flag"][3] == 0 and np.isfinite(out["dn4000"][3])
    for name in column_names(MP):
        if name.endswith("_flag"):
            q = name[:-5]
            v = out[q if q in out else f"{q}_flux"]
            assert np.all(np.isnan(v[(out[name] & (OFF_GRID | MASKED | NO_REDSHIFT)) > 0])), name


def test_non_positive_continuum_gives_flux_but_no_ew():
    flux = observed(0.05, {HALPHA: 10.0}, cont=lambda lam: np.zeros_like(lam))
    out = measure_spectra(flux, WAVE, 0.05, MP)
    assert out["halpha_flux"][0] == pytest.approx(10.0, rel=3e-3)
    assert np.isnan(out["halpha_ew"][0]) and out["halpha_flag"][0] & BAD_CONTINUUM
    assert np.isnan(out["dn4000"][0]) and out["dn4000_flag"][0] & BAD_CONTINUUM


def test_rest_frame_grid_gives_the_same_measurements():
    """prepare's rest frame: lambda / (1+z), f_lambda (1+z) on a rest grid."""
    z = 0.1
    flux_obs = observed(z, {HALPHA: 50.0, HBETA: 12.0})
    out_obs = measure_spectra(flux_obs, WAVE, z, MP)
    out_rest = measure_spectra(flux_obs * (1 + z), WAVE / (1 + z), None, MP, frame="rest")
    for q in ("halpha_flux", "halpha_ew", "hbeta_flux", "dn4000", "hdelta_a"):
        assert out_rest[q][0] == pytest.approx(out_obs[q][0], rel=1e-9), q


def test_rest_pixels_are_every_pixel_a_rest_frame_measurement_reads():
    """A rest-frame spectrum NaN outside `rest_pixels` measures exactly as the whole spectrum, and the
    pixels are a small part of the grid (what the survey's compact store decodes)."""
    from img2spec.measure.table import rest_pixels

    z = np.array([0.05, 0.1, 0.2])
    wave = WAVE / 1.1  # a rest grid covering 3450-8360 A
    flux = observed(z, {HALPHA: 50.0, HBETA: 12.0, OIII: 20.0, NII: 15.0, OII: 30.0}) * (1 + z[:, None])
    sigma = np.full_like(flux, 0.05)
    cols = rest_pixels(wave, MP)
    assert 0 < len(cols) < 0.4 * len(wave) and np.all(np.diff(cols) > 0)
    only = np.full_like(flux, np.nan)
    only[:, cols] = flux[:, cols]
    only_sigma = np.full_like(sigma, np.nan)
    only_sigma[:, cols] = sigma[:, cols]
    full = measure_spectra(flux, wave, None, MP, sigma=sigma, frame="rest")
    part = measure_spectra(only, wave, None, MP, sigma=only_sigma, frame="rest")
    for name in full:
        np.testing.assert_array_equal(part[name], full[name], err_msg=name)
    assert np.isfinite(full["halpha_ew"]).all() and np.isfinite(full["dn4000"]).all()
    # one pixel fewer changes a measurement: the set is not larger than it looks
    drop = only.copy()
    drop[:, cols[len(cols) // 2]] = np.nan
    changed = measure_spectra(drop, wave, None, MP, sigma=only_sigma, frame="rest")
    assert any(not np.array_equal(changed[k], full[k], equal_nan=True) for k in full)


def test_bpt_regions_and_classes():
    x = np.array([-0.6, -0.2, 0.0, 0.6, np.nan])
    y = np.array([-0.3, 0.1, 1.0, -0.5, 0.0])
    np.testing.assert_array_equal(bpt_region(x, y), [0, 1, 2, 2, -1])

    def table(fluxes, err=1.0, ew=10.0):
        cols = {}
        for (name, f) in zip(("hbeta", "oiii_5007", "halpha", "nii_6584"), fluxes):
            cols[f"{name}_flux"] = np.atleast_1d(np.asarray(f, float))
            cols[f"{name}_flux_err"] = np.full(cols[f"{name}_flux"].shape, err)
        cols["halpha_ew"] = np.full(cols["hbeta_flux"].shape, ew)
        cols["dn4000"] = np.full(cols["hbeta_flux"].shape, 1.2)
        return cols
    # per line (Hbeta, [OIII], Halpha, [NII]) for 4 objects: star-forming (x -0.6, y -0.3),
    # Seyfert (0, 1), composite (-0.22, 0.18), LINER-like far right (0.6, 1)
    c = classify(table([[40, 20, 100, 100], [20, 200, 150, 1000], [100, 100, 100, 25], [25, 100, 60, 100]]),
                 MP.classes)
    np.testing.assert_array_equal(c["bpt_class"], [0, 2, 1, 2])
    np.testing.assert_array_equal(c["agn_class"], [0, 1, 0, 1])
    weak = classify(table([[2.0], [20.0], [100.0], [25.0]], err=1.0), MP.classes)   # Hbeta at S/N 2
    assert weak["bpt_class"][0] == -1 and weak["agn_class"][0] == -1
    no_err = classify(table([[40.0], [20.0], [100.0], [25.0]], err=np.nan), MP.classes)
    assert no_err["bpt_class"][0] == -1                      # an unknown error fails the S/N cut
    q = classify(table([[40.0], [20.0], [100.0], [25.0]], ew=1.0), MP.classes)
    assert q["sf_class"][0] == 0 and classify(table([[40.0], [20.0], [100.0], [25.0]], ew=5.0), MP.classes)["sf_class"][0] == 1


def test_measure_only_reads_band_pixels_of_float32_memmaps(tmp_path):
    """Pixels outside every window may hold anything (NaN, inf) without changing a result: only
    the bands are read. A poisoned pixel inside a window does change it (the check can fail)."""
    z = np.full(3, 0.05)
    clean = observed(z, {HALPHA: 50.0}).astype(np.float32)
    sigma = np.full(WAVE.size, 0.1, np.float32)
    reddest_window = max(w.red[1] for w in MP.lines.values()) * (1 + z.max())
    outside = WAVE > reddest_window + 50.0
    assert outside.sum() > 100
    poisoned = clean.copy()
    poisoned[:, outside] = np.nan
    poisoned[1, outside] = np.inf
    np.save(tmp_path / "f.npy", poisoned)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    out = measure_spectra(mm, WAVE, z, MP, sigma=sigma)
    ref = measure_spectra(clean, WAVE, z, MP, sigma=sigma)
    np.testing.assert_allclose(out["halpha_flux"], 50.0, rtol=3e-3)
    for key in ("halpha_flux", "halpha_flux_err", "halpha_ew", "dn4000", "hdelta_a", "nii_6584_flux"):
        np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
    assert np.isnan(mm[0, outside]).all()                                   # the memmap is not written to
    in_line = np.flatnonzero((WAVE > 6564.0 * 1.05) & (WAVE < 6566.0 * 1.05))[:1]
    bad = clean.copy()
    bad[0, in_line] = np.nan
    hit = measure_spectra(bad, WAVE, z, MP, sigma=sigma)
    assert not np.isfinite(hit["halpha_flux"][0]) and np.isfinite(hit["halpha_flux"][1])


@pytest.mark.parametrize("criterion", ["halpha_ew", "dn4000"])
def test_measure_classes_equals_the_class_columns_of_measure_spectra(criterion):
    """On noisy spectra spread over every class (lines from absent to strong, AGN-like ratios included),
    with only the class pixels kept: the classes-only measurement gives measure_spectra's classes."""
    from img2spec.measure.table import measure_classes, rest_pixels

    mp = MP.model_copy(update={"classes": MP.classes.model_copy(update={"sf_criterion": criterion})})
    rng = np.random.default_rng(3)
    n = 300
    z = np.full(n, 0.1)
    wave = WAVE / 1.1
    flux = np.zeros((n, len(WAVE)))
    for k in range(n):
        f = rng.uniform(0, 1, 5) * np.array([60.0, 15.0, 40.0, 40.0, 30.0]) * rng.choice([0.0, 0.1, 1.0])
        flux[k] = observed(0.1, {HALPHA: f[0], HBETA: f[1], OIII: f[2], NII: f[3], OII: f[4]},
                           cont=lambda lam, a=rng.uniform(-1, 1): 2.0 + a * (lam > 4000 * 1.1))[0]
    flux = flux * (1 + z[:, None])
    sigma = np.full_like(flux, 0.3)
    flux += rng.normal(0, 0.3, flux.shape)
    cols = rest_pixels(wave, mp, classes_only=True)
    assert len(cols) < len(rest_pixels(wave, mp))
    only = np.full_like(flux, np.nan)
    only[:, cols] = flux[:, cols]
    full = measure_spectra(flux, wave, None, mp, sigma=sigma, frame="rest")
    part = measure_classes(only, wave, None, mp, sigma=sigma, frame="rest")
    for name in ("bpt_class", "agn_class", "sf_class", "log_nii_halpha", "log_oiii_hbeta"):
        np.testing.assert_array_equal(part[name], full[name], err_msg=name)
    for col, codes in (("bpt_class", (-1, 0, 1, 2)), ("sf_class", (0, 1))):
        assert set(np.unique(full[col])) == set(codes), col  # every class occurs: the test covers them


def test_one_redshift_for_all_rows_measures_as_row_by_row_gathering():
    """Rows sharing one shift are gathered as columns (the fast path); a batch with a second redshift
    is gathered per (row, column): the shared rows measure the same either way."""
    rng = np.random.default_rng(5)
    z = np.full(20, 0.1)
    flux = observed(z, {HALPHA: 50.0, HBETA: 12.0, OIII: 20.0, NII: 15.0, OII: 30.0}) + rng.normal(0, 0.2, (20, len(WAVE)))
    sigma = np.full_like(flux, 0.2)
    other = observed(0.2, {HALPHA: 10.0})
    fast = measure_spectra(flux, WAVE, 0.1, MP, sigma=sigma)
    mixed = measure_spectra(np.vstack([flux, other]), WAVE, np.append(z, 0.2), MP,
                            sigma=np.vstack([sigma, np.full_like(other, 0.2)]))
    for name in fast:
        np.testing.assert_array_equal(fast[name], mixed[name][:20], err_msg=name)
