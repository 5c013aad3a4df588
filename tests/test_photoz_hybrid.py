"""Hybrid photo-z: the standard sigma_NMAD, the val-only redshift-error scale, the hybrid CNN's
photometry input (training, bundle, predict, pack and survey), and the images-only fallback."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from img2spec import BANDS
from img2spec.config import params_from_dict
from img2spec.config.models import CNNParams
from img2spec.evaluate.redshift import (COVERAGE_LEVELS, fit_redshift_scale, photoz_metrics, pit_values,
                                        redshift_metrics)
from img2spec.paths import Paths
from test_predict_support import LATENT, SIZE, build_project

HYBRID = CNNParams(filters=(4,), dense_units=8, photometry=True, photometry_units=(8,), redshift_weight=1.0)
Z_SCALE, Z_SCALE_IMAGES = 2.0, 3.0
"""Photo-z error factors written into the tiny bundle's metrics (with / without photometry)."""


# ----------------------------------------------------------------------------- metrics
def test_sigma_nmad_is_the_nmad_of_dz_over_one_plus_z():
    z_true = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    dz = np.array([0.0, 0.02, 0.02, 0.06, -0.04])
    m = photoz_metrics(z_true + dz, z_true)
    rel = dz / (1 + z_true)  # 0, .02, .01, .03, -.02 -> median .01 -> |.| = .01 .01 0 .02 .03
    assert m["sigma_nmad"] == pytest.approx(1.4826 * 0.01)
    old = 1.4826 * np.median(np.abs(dz - np.median(dz)) / (1 + z_true))  # the former formula: 0.01 x 1.4826 / 1 ...
    assert old == pytest.approx(1.4826 * 0.02)  # |dz - .02| / (1+z) = .02 0 0 .02 .03 -> median .02
    assert m["sigma_nmad"] != pytest.approx(old)
    assert m["bias"] == pytest.approx(rel.mean())
    import img2spec.evaluate.redshift as redshift

    assert not hasattr(redshift, "NMAD_SCALE")  # one NMAD definition: measure.stats


def test_redshift_scale_gives_the_one_sigma_coverage_and_pit():
    rng = np.random.default_rng(0)
    n = 4000
    z_true = rng.uniform(0.05, 0.1, n)
    z_err = np.full(n, 0.01)
    z_pred = z_true + rng.normal(0, 0.02, n)  # errors twice too small
    fit = fit_redshift_scale(z_pred, z_err, z_true)
    assert fit["n"] == n and fit["scale"] == pytest.approx(2.0, rel=0.05)
    assert fit["coverage_1sigma"] == pytest.approx(0.683, abs=0.002)
    assert fit["coverage_1sigma_unscaled"] == pytest.approx(0.383, abs=0.03)
    m = photoz_metrics(z_pred, z_true, z_err=z_err * fit["scale"])
    assert set(COVERAGE_LEVELS) <= set(m)
    assert m["coverage_1sigma"] == pytest.approx(0.683, abs=0.002) and m["coverage_2sigma"] == pytest.approx(0.954, abs=0.01)
    pit = pit_values(z_pred, z_err * fit["scale"], z_true)
    assert np.histogram(pit, 4, (0, 1))[0].min() > 0.2 * n  # calibrated: flat
    assert np.histogram(pit_values(z_pred, z_err, z_true), 4, (0, 1))[0][1] < 0.2 * n  # too small: U-shaped
    assert np.isnan(fit_redshift_scale(z_pred, np.full(n, np.nan), z_true)["scale"])


def test_redshift_metrics_reports_both_cnn_paths():
    rng = np.random.default_rng(1)
    n = 300
    z = rng.uniform(0.02, 0.2, n)
    cat = pd.DataFrame({"z": z, **{f"mag_{b}": 17 + c * z * 10 for b, c in zip(BANDS, (2.0, 1.0, 0.5, 0.2, 0.0))}})
    train, test = np.arange(200), np.arange(200, n)
    out = redshift_metrics(z[test] + 0.001, cat, train, test, 5, False, z_err=np.full(100, 0.002),
                           z_images_only=z[test] + rng.normal(0, 0.01, 100), z_err_images_only=np.full(100, 0.01))
    assert {"cnn", "cnn_images_only", "knn_colour"} <= set(out)
    assert out["cnn"]["coverage_1sigma"] == 1.0 and "coverage_1sigma" not in out["knn_colour"]
    assert out["cnn"]["sigma_nmad"] < out["cnn_images_only"]["sigma_nmad"]


# ----------------------------------------------------------------------------- the hybrid CNN
def test_training_batches_withhold_photometry_and_validation_does_not():
    from img2spec.models.cnn import photometry_features
    from img2spec.models.data import image_dataset

    n = 400
    mags = 17 + np.random.default_rng(0).normal(0, 0.3, (n, 5))
    mags[:40, 2] = np.nan  # no i magnitude: always missing
    feats = photometry_features(mags)
    images = np.zeros((n, 4, 4, 5), np.float32)
    targets = {"mu": np.zeros((n, 1), np.float32)}
    rows = np.arange(n)
    train = image_dataset(images, rows, targets, batch_size=n, training=True, photometry=feats, withhold_fraction=0.25)
    x, _ = next(iter(train))
    flag = x["photometry"].numpy()[:, -1]
    assert set(np.unique(flag)) == {0.0, 1.0}
    assert 0.25 + 0.1 * 0.75 - 0.06 < flag.mean() < 0.25 + 0.1 * 0.75 + 0.06  # withheld or never there
    val = image_dataset(images, rows, targets, batch_size=n, training=False, photometry=feats)
    x, _ = next(iter(val))
    np.testing.assert_array_equal(x["photometry"].numpy(), feats)  # catalogue order, nothing withheld
    assert (feats[:40, -1] == 1).all() and (feats[:40, :-1] == 0).all() and (feats[40:, -1] == 0).all()


@pytest.fixture(scope="module")
def hybrid_env(tmp_path_factory):
    """The tiny predict project with a hybrid CNN (redshift head) and photo-z error factors, as a bundle."""
    from img2spec.models.cnn import build_cnn, photometry_features, photometry_stats
    from img2spec.models.data import catalogue_magnitudes
    from img2spec.models.train import photometry_inputs
    from img2spec.io.processed import ProcessedData
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("hybrid_proj")
    facts = build_project(root)
    data = ProcessedData.open(root / "data" / "processed")
    mags = catalogue_magnitudes(data.catalog)
    mean, std = photometry_stats(photometry_features(mags))
    cnn = build_cnn((SIZE, SIZE, 5), LATENT, HYBRID, np.zeros(LATENT), np.ones(LATENT), 0.08, 0.02, mean, std)
    head = cnn.get_layer("z_std")  # built with a zero kernel (z = train mean): give it something to say
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(0).normal(0, 0.5, kernel.shape).astype(np.float32), bias])
    cnn.save(root / "models" / "cnn" / "cnn.keras")
    _, stats = photometry_inputs(data, np.arange(len(data)))
    (root / "models" / "cnn" / "cnn.json").write_text(json.dumps({"latent_dim": LATENT,
                                                                  "training": {"photometry": stats}}))
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    metrics["redshift_scale"] = {"cnn": {"scale": Z_SCALE}, "cnn_images_only": {"scale": Z_SCALE_IMAGES}}
    (root / "metrics" / "evaluate.json").write_text(json.dumps(metrics))
    build_bundle(params_from_dict({"publish": {"batch_size": 5, "registry": False}}), Paths(root))
    return root, facts, Predictor.from_path(root / "models" / "img2spec"), mags


def test_hybrid_exported_cnn_equals_keras(hybrid_env):
    """The exported hybrid CNN takes the photometry input as Keras does (with and without magnitudes)."""
    from img2spec.predict import Predictor
    from test_predict import EXPORT_ATOL

    _, facts, onnx, mags = hybrid_env
    assert onnx.runtime == "onnx"
    keras = Predictor.from_path(onnx.bundle_dir, runtime="tensorflow")
    m = mags[:4].copy()
    m[1, 2] = np.nan  # one object without photometry: images alone
    a, b = onnx.predict_batch(facts["images"][:4], photometry=m), keras.predict_batch(facts["images"][:4], photometry=m)
    for name in ("z", "z_err", "flux", "sigma"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=EXPORT_ATOL, err_msg=name)


def test_hybrid_bundle_uses_magnitudes_and_falls_back_to_images(hybrid_env, caplog):
    from img2spec.models.inference import predict_outputs

    _, facts, predictor, mags = hybrid_env
    assert predictor.photometry_bands == tuple(BANDS)
    assert predictor.manifest["input"]["photometry"]["features"][-1] == "missing"
    assert (predictor.z_err_scale, predictor.z_err_scale_images_only) == (Z_SCALE, Z_SCALE_IMAGES)
    images, m = facts["images"][:4], mags[:4].copy()
    with_phot = predictor.predict_batch(images, photometry=m)
    without = predictor.predict_batch(images)
    assert with_phot.photometry_used.all() and not without.photometry_used.any()
    assert not np.allclose(with_phot.z, without.z, rtol=0, atol=1e-7)  # the magnitudes matter
    assert not np.allclose(with_phot.flux, without.flux, rtol=0, atol=1e-7)
    _, _, z_raw, err_raw = predict_outputs(predictor.cnn, images, photometry=m)
    np.testing.assert_allclose(with_phot.z, z_raw, rtol=1e-6)
    np.testing.assert_allclose(with_phot.z_err, err_raw * Z_SCALE, rtol=1e-5)  # calibrated Z_ERR

    m[1, 3] = np.nan  # object 1 lacks its z-band magnitude: images alone, never a 0 magnitude
    caplog.set_level(logging.WARNING)
    ids = ["a", "b", "c", "d"]
    mixed = predictor.predict_batch(images, photometry=m, object_ids=ids)
    assert mixed.photometry_used.tolist() == [True, False, True, True]
    assert "b (z)" in caplog.text and "images alone" in caplog.text
    np.testing.assert_allclose(mixed.z[[0, 2, 3]], with_phot.z[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(mixed.z[1], without.z[1], rtol=1e-6)
    np.testing.assert_allclose(mixed.z_err[1], without.z_err[1], rtol=1e-5)  # images-only factor
    np.testing.assert_allclose(mixed.flux[1], without.flux[1], rtol=1e-5, atol=1e-6)
    zeroed = m.copy()
    zeroed[1, 3] = 0.0
    assert not np.isclose(predictor.predict_batch(images, photometry=zeroed).z[1], mixed.z[1], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="photometry"):
        predictor.predict_batch(images, photometry=m[:, :3])


def test_predict_catalogue_gives_the_magnitudes(hybrid_env, tmp_path):
    from astropy.io import fits

    from img2spec.predict.runner import RunOptions, run_predict

    _, facts, predictor, mags = hybrid_env
    ids = [str(c.objid) for c in facts["cutouts"][:3]]
    cat = tmp_path / "cat.csv"
    frame = pd.DataFrame({"objid": ids, **{f"{b}KronMag": mags[:3, k] for k, b in enumerate(BANDS)}})
    frame.loc[2, "iKronMag"] = -999.0  # PS1's missing flag: that object is predicted from images alone
    frame.to_csv(cat, index=False)
    summary = run_predict(predictor, facts["files"][:3], RunOptions(out_dir=tmp_path / "out", catalogue=cat,
                                                                    batch_size=5))
    got = {fits.getheader(p, 0)["OBJID"]: fits.getheader(p, 0)["Z_PRED"] for p in summary.outputs}
    m = mags[:3].copy()
    m[2, 2] = np.nan
    ref = predictor.predict_batch(facts["images"][:3], photometry=m)
    for k, objid in enumerate(ids):
        assert got[objid] == pytest.approx(float(ref.z[k]), rel=1e-5)
    assert got[ids[2]] == pytest.approx(float(predictor.predict_batch(facts["images"][2:3]).z[0]), rel=1e-5)


def test_pack_catalogue_magnitudes_reach_the_survey(hybrid_env, tmp_path):
    from img2spec.io.shards import list_parts, read_cutout_shard
    from img2spec.predict.bundle_info import BundleInfo
    from img2spec.survey.pack import pack
    from img2spec.survey.task import ModelSpec, predict_shard

    root, facts, predictor, mags = hybrid_env
    ids = [str(c.objid) for c in facts["cutouts"]]
    cat = tmp_path / "cat.csv"
    frame = pd.DataFrame({"objid": ids, **{f"mag_{b}": mags[:, k] for k, b in enumerate(BANDS)}})
    frame.loc[0, "mag_y"] = np.nan  # no y magnitude for the first object
    frame.to_csv(cat, index=False)
    params = params_from_dict({"survey": {"healpix_order": 0, "objects_per_part": 100}})
    shards = tmp_path / "shards"
    pack([root / "data" / "raw" / "images"], shards, params, catalogue=cat)
    (_, path), = list_parts(shards)
    shard = read_cutout_shard(path)
    order = [ids.index(i) for i in shard.object_id]
    expected = mags[order].astype(np.float32)
    first = list(shard.object_id).index(ids[0])
    expected[first, -1] = np.nan
    np.testing.assert_array_equal(shard.mag, expected)

    out = tmp_path / "survey"
    rel = path.relative_to(shards).as_posix()
    report = predict_shard(str(path), rel, str(out), ModelSpec.of(BundleInfo.from_path(root / "models" / "img2spec")))
    assert report["status"] == "done"
    table = pd.read_parquet((out / "catalogue" / rel).with_suffix(".parquet"))
    assert table["photometry_used"].tolist() == [i != first for i in range(len(shard))]
    images = np.stack([facts["images"][k] for k in order])
    ref = predictor.predict_batch(images, photometry=expected)
    np.testing.assert_allclose(table["z_pred"].to_numpy(), ref.z, rtol=1e-5)
    np.testing.assert_allclose(table["z_pred_err"].to_numpy(), ref.z_err, rtol=1e-5)


def test_train_cnn_hybrid_learns_photometry_and_scale_ignores_test(tmp_path):
    """train_cnn with photometry (dict inputs, withheld rows), saved and reloaded; the redshift-error
    scale is fitted on val only: poisoning the test rows' z does not change it, poisoning val does."""
    from img2spec.evaluate.redshift import redshift_scales
    from img2spec.io.processed import ProcessedData
    from img2spec.models.cnn import uses_photometry
    from img2spec.models.inference import load_models
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn
    from img2spec.models.vae import build_decoder
    from img2spec.prep.synthetic import write_synthetic_processed

    root = write_synthetic_processed(tmp_path / "processed", n=60, n_pix=20, size=16, seed=2)
    data = ProcessedData.open(root)
    lat = Latents(np.random.default_rng(0).normal(size=(len(data), 2)).astype(np.float32),
                  np.full((len(data), 2), -2.0, np.float32))
    params = HYBRID.model_copy(update={"epochs": 1, "patience": 1, "batch_size": 16, "loss": "latent",
                                       "train_pca": False})
    res = train_cnn(params, data, lat, build_decoder(20, 2, (4,)), out_dir=tmp_path / "cnn")
    assert uses_photometry(res.model) and res.info["photometry"]["features"][-1] == "missing"
    assert res.model.get_layer("dense") is not None
    build_decoder(20, 2, (4,)).save(tmp_path / "cnn" / "decoder.keras")
    cnn = load_models(tmp_path / "cnn", tmp_path / "cnn").cnn
    assert uses_photometry(cnn)

    base = redshift_scales(cnn, data, batch_size=16)
    assert set(base) == {"cnn", "cnn_images_only"} and base["cnn"]["fitted_on"] == "val"
    assert base["cnn"]["n"] == len(data.indices("val"))
    cat = pd.read_parquet(root / "catalog.parquet")
    test_rows = cat["split"] == "test"
    cat.loc[test_rows, "z"] += 0.5
    cat.to_parquet(root / "catalog.parquet")
    assert redshift_scales(cnn, ProcessedData.open(root), batch_size=16) == base
    cat.loc[cat["split"] == "val", "z"] += 0.5
    cat.to_parquet(root / "catalog.parquet")
    assert redshift_scales(cnn, ProcessedData.open(root), batch_size=16)["cnn"]["scale"] > base["cnn"]["scale"]
