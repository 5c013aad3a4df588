"""img2spec predict: same spectra as predict_spectra, FITS readable by astropy and read_spectrum,
bad inputs reported and skipped, magnitudes -> 1e-17 units, tables, plots, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import astropy.units as u
from astropy.io import fits

from img2spec import BANDS
from img2spec.config import params_from_dict
from img2spec.config.constants import LINE_REST_VACUUM_A
from img2spec.io.ps1_cutout import Cutout, write_cutout
from img2spec.io.sdss_spectrum import FLUX_UNIT, read_spectrum
from img2spec.paths import Paths
from test_predict_support import N_PIX, SIZE, build_project, galaxy_cutout

N_SAMPLES = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny project, its bundle and a loaded Predictor."""
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root)
    params = params_from_dict({"publish": {"n_samples": N_SAMPLES, "batch_size": 5, "registry": False}})
    build_bundle(params, Paths(root))
    return root, facts, Predictor.from_path(root / "models" / "img2spec")


def test_bundle_predict_equals_direct_predict_spectra(env):
    from img2spec.models.inference import load_models, predict_spectra
    from img2spec.predict import Predictor

    root, facts, _ = env
    predictor = Predictor.from_path(root / "models" / "img2spec", runtime="tensorflow")  # bit-equal to Keras
    cnn, decoder = load_models(root / "models" / "vae", root / "models" / "cnn")[:2]
    direct = predict_spectra(cnn, decoder, facts["images"], n_samples=N_SAMPLES, batch_size=5, seed=0)
    assert predictor.sigma_method == "linearised"  # the publish default, recorded in the bundle
    via = predictor.predict(facts["images"])
    np.testing.assert_array_equal(via.flux, direct.flux)
    np.testing.assert_array_equal(via.sigma, direct.sigma)
    assert np.all(np.isfinite(via.sigma)) and np.all(via.sigma >= 0)
    sampled = predict_spectra(cnn, decoder, facts["images"], n_samples=N_SAMPLES, batch_size=5, seed=0,
                              sigma_method="sampled")
    np.testing.assert_array_equal(predictor.predict(facts["images"], sigma_method="sampled").sigma, sampled.sigma)
    assert via.flux.shape == (len(facts["images"]), N_PIX)
    # raw counts + MAGZP go through the prepare stage's own scaling
    stack = np.stack([c.stack() for c in facts["cutouts"]])
    magzp = np.array([[c.magzp[b] for b in BANDS] for c in facts["cutouts"]])
    np.testing.assert_array_equal(predictor.predict_counts(stack, magzp).flux, direct.flux)


EXPORT_ATOL = 1e-5
"""Exported (ONNX) graphs against Keras: latents, z, flux and the linearised sigma (exported from the
same TensorFlow graph) agree to this (normalised flux units; measured ~2e-7)."""


def test_exported_graphs_equal_keras(env):
    from img2spec.predict import Predictor

    root, facts, onnx = env
    assert onnx.runtime == "onnx" and type(onnx.cnn).__name__ == "ExportedGraph"  # the bundle's default
    keras = Predictor.from_path(root / "models" / "img2spec", runtime="tensorflow")
    for method in ("linearised", "sampled"):
        a, b = onnx.predict(facts["images"], sigma_method=method), keras.predict(facts["images"], sigma_method=method)
        for name in ("latent_mu", "latent_logvar", "flux", "sigma"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=EXPORT_ATOL, err_msg=name)
    meta = json.loads((root / "models" / "img2spec" / "onnx.json").read_text())
    assert set(meta["max_abs_diff"]) == {"cnn", "decoder", "sigma", "jacobian_dot"}
    manifest = json.loads((root / "models" / "img2spec" / "bundle.json").read_text())
    assert {"cnn.onnx", "decoder_body.onnx", "decoder_body_jvp.onnx", "decoder_body_vjp.onnx", "decoder_tail.npz",
            "onnx.json"} <= set(manifest["files"])
    assert manifest["inference"]["runtime"] == "onnx"


def test_worker_with_exported_graphs_never_imports_tensorflow(env):
    import subprocess
    import sys

    root, facts, _ = env
    np.save(root / "probe.npy", facts["images"][:3])
    code = (
        "import sys, numpy as np\n"
        "from img2spec.predict.bundle_info import BundleInfo\n"
        "from img2spec.survey.task import ModelSpec, worker_predictor\n"
        f"spec = ModelSpec.of(BundleInfo.from_path({str(root / 'models' / 'img2spec')!r}))\n"
        f"out = worker_predictor(spec).predict_batch(np.load({str(root / 'probe.npy')!r}))\n"
        "print(out.flux.shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout


def test_predict_rejects_arrays_that_do_not_fit(env):
    from img2spec.predict import InputError

    _, facts, predictor = env
    with pytest.raises(InputError, match="shape"):
        predictor.predict(np.zeros((2, SIZE + 1, SIZE, 5), np.float32))
    bad = facts["images"][:2].copy()
    bad[1, 3, 3, 2] = np.nan
    with pytest.raises(InputError, match=r"\[1\]"):
        predictor.predict(bad)


def test_norm_matches_prepare_convention(env):
    from img2spec.prep.normalise import mag_to_flambda

    _, _, predictor = env
    mags = np.array([14.0, 17.5, -999.0])
    np.testing.assert_allclose(predictor.norm_from_mag(mags), mag_to_flambda(mags, "r"), rtol=1e-12)


def _write_bad_inputs(d, rng):
    d.mkdir()
    good = galaxy_cutout(1, rng)
    missing = galaxy_cutout(2, rng)
    del missing.data["z"]
    write_cutout(d / "missing_band.fits", missing)
    wrong = galaxy_cutout(3, rng, size=SIZE + 4)
    write_cutout(d / "wrong_shape.fits", wrong)
    nan = galaxy_cutout(4, rng)
    nan.data["r"][:] = np.nan
    write_cutout(d / "nan.fits", nan)
    off = galaxy_cutout(5, rng, shift=6.0)
    write_cutout(d / "off_centre.fits", off)
    (d / "truncated.fits").write_bytes((write_cutout(d / "t.fits", good)).read_bytes()[:3000])
    (d / "t.fits").unlink()
    write_cutout(d / "dup_a.fits", galaxy_cutout(7, rng))
    write_cutout(d / "dup_b.fits", galaxy_cutout(7, rng))


def test_batch_over_files_with_bad_inputs(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    root, facts, predictor = env
    bad = tmp_path / "bad"
    _write_bad_inputs(bad, np.random.default_rng(5))
    out = tmp_path / "out"
    inputs = [root / "data" / "raw" / "images", bad, tmp_path / "does_not_exist.fits"]
    summary = run_predict(predictor, inputs, RunOptions(out_dir=out, batch_size=5))
    n_good = len(facts["files"])
    assert summary.n_predicted == n_good + 1  # + the first of the duplicate pair
    reasons = {s.file.split("/")[-1]: (s.reason, s.detail) for s in summary.skipped}
    # a stable code per skip, and the detail naming what was wrong
    assert reasons["missing_band.fits"][0] == "missing_band" and "band z" in reasons["missing_band.fits"][1]
    assert reasons["wrong_shape.fits"][0] == "wrong_shape" and "(20, 20)" in reasons["wrong_shape.fits"][1]
    assert reasons["nan.fits"][0] in ("nan_centre", "no_finite_pixels")
    assert reasons["off_centre.fits"][0] == "off_centre"
    assert reasons["truncated.fits"][0] == "corrupt_image"   # the code pack gives it too
    assert reasons["dup_b.fits"][0] == "duplicate_objid" and "7" in reasons["dup_b.fits"][1]
    assert reasons["does_not_exist.fits"][0] == "not_found"
    report = json.loads((out / "summary.json").read_text())
    assert report["n_skipped"] == len(summary.skipped) == 7
    assert sum(report["skipped_by_reason"].values()) == 7
    assert report["skipped_by_reason"]["duplicate_objid"] == 1 and report["skipped_by_reason"]["not_found"] == 1
    assert all(set(s) == {"file", "reason", "detail"} for s in report["skipped"])
    assert report["n_inputs"] == report["n_predicted"] + report["n_skipped"]

    # the same spectra as one direct call on the same objects, batched identically
    direct = predictor.predict(facts["images"][:5])
    spec = read_spectrum(out / f"spec-pred-{facts['cutouts'][0].objid}.fits")
    np.testing.assert_allclose(spec.flux, direct.flux[0], rtol=1e-6)
    np.testing.assert_allclose(spec.ivar, 1.0 / direct.sigma[0].astype(np.float64) ** 2, rtol=1e-5)
    np.testing.assert_allclose(10**spec.loglam, facts["wave"], rtol=1e-6)
    with fits.open(out / f"spec-pred-{facts['cutouts'][0].objid}.fits") as hdul:
        head = hdul[0].header
        assert head["PREDICTED"] is True
        assert head["MODELHSH"] == predictor.bundle_hash[:16]
        assert head["SIGMETH"] == "linearised"
        assert head["FLUXNORM"] == "NORMALISED"
        assert head["BUNIT"] == "" and not hdul["COADD"].columns["flux"].unit  # dimensionless
        assert hdul["SPECOBJ"].data["OBJID"][0] == str(facts["cutouts"][0].objid)
        assert np.isnan(hdul["SPECOBJ"].data["Z"][0])


def test_magnitudes_table_and_plot(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    root, facts, predictor = env
    cut0, cut1 = facts["cutouts"][:2]
    mags = tmp_path / "phot.csv"
    pd.DataFrame({"objid": [cut0.objid, cut1.objid], "rKronMag": [16.0, -999.0], "z": [0.08, 0.05]}).to_csv(mags, index=False)
    out = tmp_path / "out"
    opts = RunOptions(out_dir=out, catalogue=mags, table=tmp_path / "all.fits", plot=True, batch_size=5)
    summary = run_predict(predictor, facts["files"][:3], opts)
    assert summary.n_predicted == 3 and summary.n_scaled == 1
    plain = read_spectrum(out / f"spec-pred-{cut1.objid}.fits")
    scaled = read_spectrum(out / f"spec-pred-{cut0.objid}.fits")
    norm = float(predictor.norm_from_mag(16.0))
    direct = predictor.predict(facts["images"][:3])
    np.testing.assert_allclose(scaled.flux, direct.flux[0] * norm, rtol=1e-5)
    np.testing.assert_allclose(plain.flux, direct.flux[1], rtol=1e-6)  # -999: stays normalised
    assert scaled.z == pytest.approx(0.08)
    with fits.open(out / f"spec-pred-{cut0.objid}.fits") as hdul:
        assert hdul[0].header["FLUXNORM"] == "PS1_KRON"
        assert hdul[0].header["NORMFAC"] == pytest.approx(norm)
        assert u.Unit(hdul["COADD"].columns["flux"].unit, format="fits") == u.Unit(FLUX_UNIT)
        assert hdul[0].header["ZSOURCE"] == "catalogue"
    with fits.open(tmp_path / "all.fits") as hdul:
        tab = hdul["PREDICTIONS"].data
        assert len(tab) == 3 and tab["FLUX"].shape == (3, N_PIX)
        # one unit per table: normalised spectra, NORM turns a row into 1e-17 erg/s/cm^2/A
        np.testing.assert_allclose(tab["FLUX"][1], direct.flux[1], rtol=1e-6)
        np.testing.assert_allclose(tab["FLUX"][0] * tab["NORM"][0], direct.flux[0] * norm, rtol=1e-5)
        assert np.isnan(tab["NORM"][1]) and list(tab["Z_SOURCE"]) == ["catalogue", "catalogue", "none"]
    for c in facts["cutouts"][:3]:
        png = out / f"spec-pred-{c.objid}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_line_marks_need_a_redshift_in_the_observed_frame():
    from img2spec.predict.plot import line_positions

    wave = np.geomspace(3800, 9200, 50)
    assert line_positions(None, "observed", wave) == {}
    at_z = line_positions(0.1, "observed", wave)
    assert at_z["Hα"] == pytest.approx(LINE_REST_VACUUM_A["halpha"] * 1.1) and "[OII]3727" in at_z
    assert line_positions(None, "rest", wave)["Hβ"] == pytest.approx(LINE_REST_VACUUM_A["hbeta"])


def test_csv_table_and_cli(env, tmp_path):
    from typer.testing import CliRunner

    from img2spec.cli import app

    root, facts, _ = env
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "predict", str(root / "data" / "raw" / "images"), "--model", str(root / "models" / "img2spec"),
        "--out", str(out), "--table", str(tmp_path / "all.csv"), "--batch-size", "4",
        "--params", str(tmp_path / "absent.yaml"),
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_predicted"] == len(facts["files"])
    table = pd.read_csv(tmp_path / "all.csv")
    assert len(table) == len(facts["files"])
    assert sum(c.startswith("flux_") for c in table.columns) == N_PIX
    # --sigma sampled: the per-object FITS say which uncertainty they carry
    sampled = CliRunner().invoke(app, [
        "predict", str(facts["files"][0]), "--model", str(root / "models" / "img2spec"), "--out", str(tmp_path / "s"),
        "--sigma", "sampled", "--n-samples", "5", "--params", str(tmp_path / "absent.yaml"),
    ])
    assert sampled.exit_code == 0, sampled.output
    head = fits.getheader(next((tmp_path / "s").glob("*.fits")))
    assert head["SIGMETH"] == "sampled" and head["NSAMPLE"] == 5 and head["SIGSCALE"] == 1.0
    # a bundle that is not one: a clear error, exit 2
    bad = CliRunner().invoke(app, ["predict", str(root / "data" / "raw" / "images"), "--model", str(tmp_path)])
    assert bad.exit_code == 2 and "bundle.json" in bad.output


def test_radec_table_goes_through_the_cutout_fetcher(env, tmp_path, monkeypatch):
    import img2spec.sources.sdss.ps1images as ps1
    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor = env
    calls = []

    def fake_fetch(p, fetcher, dest, objid, ra, dec, size, pixel_scale, bands):
        calls.append((objid, size))
        if objid == 2:
            from img2spec.sources.sdss.http import FetchError

            raise FetchError("https://ps1images.stsci.edu", 0, "no PS1 stack image")
        write_cutout(dest, Cutout(objid=objid, ra=ra, dec=dec, data=facts["cutouts"][0].data,
                                  magzp=facts["cutouts"][0].magzp))
        return "fetched"

    monkeypatch.setattr(ps1, "fetch_cutout", fake_fetch)
    table = tmp_path / "targets.csv"
    pd.DataFrame({"objid": [1, 2], "ra": [150.1, 150.2], "dec": [2.1, 2.2], "z": [0.07, 0.09]}).to_csv(table, index=False)
    summary = run_predict(predictor, [table], RunOptions(out_dir=tmp_path / "out", fetch_params=params_from_dict({})))
    assert calls == [(1, SIZE), (2, SIZE)]
    assert summary.n_predicted == 1 and summary.skipped[0].reason == "fetch_failed"
    assert "no PS1 stack image" in summary.skipped[0].detail
    assert read_spectrum(tmp_path / "out" / "spec-pred-1.fits").z == pytest.approx(0.07)


def test_table_only_run_with_str_paths(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor = env
    out = tmp_path / "out"
    summary = run_predict(predictor, [str(f) for f in facts["files"][:4]],
                          RunOptions(out_dir=str(out), table=str(tmp_path / "t.csv"), per_object=False))
    assert summary.n_predicted == 4 and not list(out.glob("*.fits"))
    table = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(table.filter(regex=r"^flux_\d").to_numpy()[0], predictor.predict(facts["images"][:1]).flux[0],
                               rtol=1e-5, atol=1e-6)  # the CSV keeps 6 significant digits
    with pytest.raises(ValueError, match="nothing to write"):
        run_predict(predictor, facts["files"][:1], RunOptions(out_dir=out, per_object=False))


def test_writer_processes_give_the_same_files(env, tmp_path, monkeypatch):
    import img2spec.predict.runner as runner
    from img2spec.predict import RunOptions, run_predict

    root, facts, predictor = env
    monkeypatch.setattr(runner, "WRITER_POOL_MIN", 0)
    files = facts["files"][:6]
    run_predict(predictor, files, RunOptions(out_dir=tmp_path / "one", batch_size=4))
    summary = run_predict(predictor, files, RunOptions(out_dir=tmp_path / "two", batch_size=4, n_writers=2, plot=True))
    assert summary.n_predicted == 6
    for c in facts["cutouts"][:6]:
        a = read_spectrum(tmp_path / "one" / f"spec-pred-{c.objid}.fits")
        b = read_spectrum(tmp_path / "two" / f"spec-pred-{c.objid}.fits")
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.ivar, b.ivar)
        assert (tmp_path / "two" / f"spec-pred-{c.objid}.png").stat().st_size > 0
