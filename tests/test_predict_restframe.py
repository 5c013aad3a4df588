"""img2spec predict with a rest-frame bundle: the lines are measured at the z the spectrum was
decoded at (MEAS_Z), with the bundle's own `measure` params, and the rest-frame prediction is
written (REST extension, table columns) as the model predicted it, readable by specutils."""

from __future__ import annotations

import logging
import shutil

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits

from img2spec.config import params_from_dict
from img2spec.paths import Paths
from img2spec.predict.measure_columns import Z_PREDICTED
from restframe_support import (HALPHA_VAC, LINE_FLUX, SHIFTED_HALPHA, Z_PRED, build_rest_project, line_peak,
                               shifted_measure)

CALIBRATED = u.Unit("1e-17 erg / (s cm2 Angstrom)")
Z_GIVEN = (0.05, 0.12)
"""Catalogue redshifts of objects 0 and 1 (object 2 has none: the photo-z Z_PRED places it)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The rest-frame project, its bundle with default measure params and one with a shifted Halpha window."""
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("rest")
    facts = build_rest_project(root)
    publish = {"publish": {"batch_size": 5, "registry": False}}
    build_bundle(params_from_dict(publish), Paths(root))
    shifted = root / "models" / "shifted"
    build_bundle(params_from_dict({**publish, "measure": shifted_measure()}), Paths(root),
                 dest=shifted)
    return root, facts, Predictor.from_path(root / "models" / "img2spec"), Predictor.from_path(shifted)


def _catalogue(tmp_path, facts, **extra) -> object:
    cuts = facts["cutouts"]
    path = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [c.objid for c in cuts[:2]], "z": list(Z_GIVEN), **extra}).to_csv(path, index=False)
    return path


def test_rest_bundle_exported_graphs_equal_keras(env):
    """The rest-frame half of the decoder and its sigma graph, exported: the same z, rest and
    observed-frame spectra as Keras, at a given z and marginalised over the photo-z."""
    from img2spec.predict import Predictor
    from test_predict import EXPORT_ATOL

    root, facts, onnx, _ = env
    assert onnx.runtime == "onnx"
    keras = Predictor.from_path(root / "models" / "img2spec", runtime="tensorflow")
    z = np.array([Z_GIVEN[0], np.nan, Z_GIVEN[1]])
    a, b = onnx.predict_batch(facts["images"][:3], z=z), keras.predict_batch(facts["images"][:3], z=z)
    for name in ("z", "z_err", "z_used", "flux", "sigma", "rest_flux", "rest_sigma"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=EXPORT_ATOL, err_msg=name)
    np.testing.assert_array_equal(a.z_given, [True, False, True])


def test_measure_only_decodes_the_measured_rest_pixels_as_the_full_decode(env):
    """`predict_batch(measure_only=True)`: the rest pixels the measurements read, equal to those of
    the whole decode (float32 rounding), NaN elsewhere, no observed frame; the same measurements."""
    from img2spec.predict.measure_columns import measure_target, measurement_target

    _, facts, predictor, _ = env
    z = np.array([Z_GIVEN[0], np.nan, Z_GIVEN[1]])
    full = predictor.predict_batch(facts["images"][:3], z=z)
    part = predictor.predict_batch(facts["images"][:3], z=z, measure_only=True)
    cols = predictor.measured_rest_pixels()
    np.testing.assert_array_equal(part.rest_columns, cols)
    assert part.flux.shape == (3, 0) and full.rest_columns is None
    for name in ("rest_flux", "rest_sigma"):
        got, want = getattr(part, name), getattr(full, name)
        np.testing.assert_allclose(got[:, cols], want[:, cols], rtol=1e-5, atol=1e-7, err_msg=name)
        assert np.isnan(np.delete(got, cols, axis=1)).all()
    np.testing.assert_array_equal(part.z_used, full.z_used)
    measured = [measure_target(measurement_target(r, predictor.wave, predictor.frame, z, ["catalogue"] * 3),
                               predictor.measure_params) for r in (part, full)]
    for name, values in measured[1].items():
        np.testing.assert_allclose(measured[0][name], values, rtol=1e-4, atol=1e-6, err_msg=name)


def test_rest_bundle_measures_lines_at_the_z_it_decoded_at(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor, _ = env
    assert predictor.frame == "observed"   # the observed grid; the decoder is rest-frame
    opts = RunOptions(out_dir=tmp_path / "out", catalogue=_catalogue(tmp_path, facts))
    run_predict(predictor, facts["files"][:3], opts)
    wave = predictor.wave
    for k, cut in enumerate(facts["cutouts"][:3]):
        with fits.open(tmp_path / "out" / f"spec-pred-{cut.objid}.fits") as hdul:
            h, flux = hdul[0].header, np.asarray(hdul["COADD"].data["flux"], np.float64)
        z_meas = h["MEAS_Z"]
        if k < 2:   # the catalogue z: decoded exactly at it, and measured at it
            assert h["MEAS_ZSRC"] == "catalogue" and z_meas == pytest.approx(Z_GIVEN[k], abs=1e-6)
        else:       # no catalogue z: the photo-z both places the spectrum and is reported
            assert h["MEAS_ZSRC"] == Z_PREDICTED and h["ZSOURCE"] == "photo-z"
            assert z_meas == pytest.approx(h["Z_PRED"], abs=1e-6) and z_meas == pytest.approx(Z_PRED, abs=1e-4)
        assert h["MEAS_FRAME"] == "rest"
        # the observed-frame line is where MEAS_Z puts the rest-frame line (within a pixel)
        pixel = HALPHA_VAC * (1 + z_meas) * (wave[1] / wave[0] - 1)
        assert line_peak(wave, flux) == pytest.approx(HALPHA_VAC * (1 + z_meas), abs=1.5 * pixel)
        # measured on the rest-frame spectrum: the decoder's line flux, whatever z it was placed at
        assert h["HALPHA_FLUX"] == pytest.approx(LINE_FLUX, rel=0.03)


def test_bundle_measure_params_are_recorded_and_used(env, tmp_path, caplog):
    from img2spec.config.measure import MeasureParams
    from img2spec.predict import Predictor, RunOptions, run_predict

    root, facts, default, shifted = env
    recorded = yaml.safe_load((shifted.bundle_dir / "params.yaml").read_text())["measure"]["lines"]["halpha"]
    assert recorded["line"] == SHIFTED_HALPHA["line"]
    assert shifted.measure_params.lines["halpha"].line == tuple(SHIFTED_HALPHA["line"])
    assert default.measure_params == MeasureParams()
    tables = {}
    for name, predictor in (("default", default), ("shifted", shifted)):
        opts = RunOptions(out_dir=tmp_path / name, catalogue=_catalogue(tmp_path, facts),
                          table=tmp_path / f"{name}.fits", per_object=False)
        run_predict(predictor, facts["files"][:3], opts)
        with fits.open(tmp_path / f"{name}.fits") as hdul:
            tables[name] = hdul["PREDICTIONS"].data
    np.testing.assert_allclose(tables["default"]["HALPHA_FLUX"], LINE_FLUX, rtol=0.03)
    assert np.all(np.abs(tables["shifted"]["HALPHA_FLUX"]) < 0.05 * LINE_FLUX)   # the window misses the line
    np.testing.assert_allclose(tables["shifted"]["OIII_5007_FLUX"], tables["default"]["OIII_5007_FLUX"], rtol=1e-6)

    # a bundle that records no measure params (made before publish recorded them): defaults, with a warning
    old = tmp_path / "old_bundle"
    shutil.copytree(shifted.bundle_dir, old)
    params = yaml.safe_load((old / "params.yaml").read_text())
    del params["measure"]
    (old / "params.yaml").write_text(yaml.safe_dump(params))
    with caplog.at_level(logging.WARNING, logger="img2spec.predict.predictor"):
        legacy = Predictor.from_path(old, verify=False)
    assert legacy.measure_params == MeasureParams()
    assert any("no measure params" in r.getMessage() for r in caplog.records)


def test_rest_extension_and_table_columns_hold_the_rest_frame_prediction(env, tmp_path):
    from specutils import Spectrum

    from img2spec.predict import RunOptions, run_predict
    from img2spec.predict.writers import REST_COLUMN_MAPPING

    _, facts, predictor, _ = env
    cuts = facts["cutouts"][:3]
    cat = _catalogue(tmp_path, facts, rKronMag=[16.0, np.nan])
    out = tmp_path / "out"
    run_predict(predictor, facts["files"][:3], RunOptions(out_dir=out, catalogue=cat, table=out / "t.fits"))
    run_predict(predictor, facts["files"][:3], RunOptions(out_dir=tmp_path / "csv", catalogue=cat,
                                                          table=tmp_path / "t.csv", per_object=False))
    direct = predictor.predict(facts["images"][:3], z=np.array([*Z_GIVEN, np.nan]))
    assert direct.rest_flux is not None and direct.rest_flux.shape == (3, len(direct.rest_wave))
    norm = float(predictor.norm_from_mag(16.0))
    for k, (cut, factor) in enumerate(zip(cuts, (norm, 1.0, 1.0))):
        path = out / f"spec-pred-{cut.objid}.fits"
        with fits.open(path) as hdul:
            rest = hdul["REST"]
            np.testing.assert_allclose(rest.data["WAVE"], direct.rest_wave, rtol=1e-12)
            np.testing.assert_allclose(rest.data["FLUX"], direct.rest_flux[k] * factor, rtol=1e-5)
            np.testing.assert_allclose(rest.data["SIGMA"], direct.rest_sigma[k] * factor, rtol=1e-4)
            assert rest.header["FRAME"] == "rest" and rest.header["AIRORVAC"] == "vac"
            assert rest.header["Z"] == pytest.approx(hdul[0].header["MEAS_Z"], abs=1e-6)
            assert u.Unit(rest.columns["WAVE"].unit, format="fits") == u.AA
        if k == 0:   # flux-calibrated: specutils' table reader finds wavelength, flux and sigma by their units
            spec = Spectrum.read(path, format="tabular-fits", hdu="REST")
            assert spec.flux.unit == CALIBRATED
        else:        # normalised (dimensionless): with the documented column mapping
            spec = Spectrum.read(path, format="tabular-fits", hdu="REST", column_mapping=REST_COLUMN_MAPPING)
            assert spec.flux.unit == u.dimensionless_unscaled
        np.testing.assert_allclose(spec.spectral_axis.to_value(u.AA), direct.rest_wave, rtol=1e-12)
        np.testing.assert_allclose(spec.flux.value, direct.rest_flux[k] * factor, rtol=1e-5)
        np.testing.assert_allclose(spec.uncertainty.array, direct.rest_sigma[k] * factor, rtol=1e-4)
        # the SDSS reader still reads the observed-frame spectrum of the same file
        sdss = Spectrum.read(path, format="SDSS-III/IV spec")
        np.testing.assert_allclose(sdss.flux.value, direct.flux[k] * factor, rtol=1e-5)
    with fits.open(out / "t.fits") as hdul:   # the table holds normalised spectra
        tab = hdul["PREDICTIONS"].data
        np.testing.assert_allclose(tab["REST_FLUX"], direct.rest_flux, rtol=1e-5)
        np.testing.assert_allclose(tab["REST_IVAR"], 1.0 / direct.rest_sigma.astype(np.float64) ** 2, rtol=1e-4)
        np.testing.assert_allclose(hdul["REST_WAVE"].data["wave"], direct.rest_wave, rtol=1e-12)
        assert list(tab["MEAS_FRAME"]) == ["rest"] * 3
    csv = pd.read_csv(tmp_path / "t.csv")
    rest_cols = [c for c in csv.columns if c.startswith("rest_flux_")]
    assert len(rest_cols) == len(direct.rest_wave)
    np.testing.assert_allclose(csv[rest_cols].to_numpy(), direct.rest_flux, rtol=1e-5)
