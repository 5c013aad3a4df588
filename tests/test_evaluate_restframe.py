"""evaluate with a rest-frame decoder: the CNN scored as users run it, without a redshift (`cnn`)
and with the catalogue's (`cnn_given_z`); each measured at the redshift it was decoded at."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.config import params_from_dict
from img2spec.paths import Paths
from img2spec.prep.synthetic import write_synthetic_processed

# A training of the VAE and the CNN(s) plus a whole evaluate stage in the fixture (~20-30 s): run by `make test-slow`.
pytestmark = pytest.mark.slow

TINY_REST = {
    "vae": {"frame": "rest", "latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 3,
            "kl_warmup_epochs": 1, "patience": 2, "batch_size": 32},
    "cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32,
            "redshift_weight": 1.0, "loss": "spectrum", "train_direct": False},
    "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 1, "hist_bins": 10},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("root")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage

    paths = Paths(root)
    write_synthetic_processed(paths.processed, n=90, n_pix=1200)  # line windows resolved
    params = params_from_dict(TINY_REST)
    try:
        train_vae_stage(params, paths)
        encode_stage(params, paths)
        train_cnn_stage(params, paths)
        result = evaluate_stage(params, paths)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return paths, params, result


def _test_inputs(paths):
    from img2spec.io.processed import ProcessedData
    from img2spec.models.inference import load_models

    data = ProcessedData.open(paths.processed)
    test = data.indices("test")
    return data, test, load_models(paths.vae_dir, paths.cnn_dir)


def test_both_modes_are_scored_and_the_pca_baseline_is_rest_frame(evaluated):
    from img2spec.models.inference import is_conditioned, load_models

    paths, _, _ = evaluated
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    for name in ("cnn", "cnn_given_z", "pca_cnn", "vae_ceiling"):
        assert metrics["mean_deviation"][name]["n"] > 0
        assert "cnn" in metrics["measurements"]["dn4000"] and "cnn_given_z" in metrics["measurements"]["dn4000"]
    assert set(metrics["sigma_scale"]) == {"cnn", "cnn_given_z"}
    assert metrics["sigma_scale"]["cnn_given_z"]["redshift"] == "catalogue"
    pca = load_models(paths.cnn_dir / "pca", paths.cnn_dir / "pca")
    assert is_conditioned(pca.decoder, 3)  # compared in the representation's own frame


def test_given_z_is_decoded_and_measured_at_the_catalogue_z(evaluated):
    from img2spec.measure import measure_spectra
    from img2spec.metrics import deviation
    from img2spec.models.inference import predict_spectra

    paths, params, _ = evaluated
    data, test, models = _test_inputs(paths)
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    z = data.catalog["z"].to_numpy()[test]
    obs, ivar = np.asarray(data.flux[test]), np.asarray(data.ivar[test])
    given = predict_spectra(models.cnn, models.decoder, np.asarray(data.images[test]), z=z, sigma_method="none")
    assert given.z_given.all()
    d = deviation(given.flux, obs, ivar)
    assert metrics["mean_deviation"]["cnn_given_z"]["mean"] == pytest.approx(d.mean(), rel=1e-4)
    truth = measure_spectra(np.asarray(data.truth_flux[test]), data.wave, z, params.measure, ivar=ivar)
    mine = measure_spectra(given.flux, data.wave, z, params.measure, ivar=ivar)
    _same_scores(metrics, "cnn_given_z", mine, truth)


def _same_scores(metrics: dict, method: str, mine: dict, truth: dict) -> None:
    """The stage's scores of `method` equal those recomputed from `mine` (EWs and Dn4000/HdeltaA)."""
    from img2spec.evaluate.measurements import robust_difference

    n = 0
    for q, col in {"dn4000": "dn4000", "halpha_ew": "halpha_ew", "hdelta_a": "hdelta_a"}.items():
        ref = robust_difference(mine[col], truth[col])
        got = metrics["measurements"][q][method]
        assert got["n"] == ref["n"]
        np.testing.assert_allclose([got["bias"], got["nmad"]], [ref["bias"], ref["nmad"]], rtol=1e-4, atol=1e-6,
                                   equal_nan=True)
        n += ref["n"]
    assert n > 0


def test_without_z_the_lines_are_measured_on_the_rest_frame_prediction(evaluated):
    from img2spec.evaluate.measurements import rest_error_model
    from img2spec.measure import measure_spectra
    from img2spec.models.inference import predict_spectra

    paths, params, _ = evaluated
    data, test, models = _test_inputs(paths)
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    z = data.catalog["z"].to_numpy()[test]
    ivar = np.asarray(data.ivar[test])
    pred = predict_spectra(models.cnn, models.decoder, np.asarray(data.images[test]), sigma_method="none")
    assert not pred.z_given.any()
    rest_ivar = rest_error_model(data.wave, ivar, z, pred.rest_wave)
    mine = measure_spectra(pred.rest_flux, pred.rest_wave, 0.0, params.measure, ivar=rest_ivar, frame="rest")
    truth = measure_spectra(np.asarray(data.truth_flux[test]), data.wave, z, params.measure, ivar=ivar)
    _same_scores(metrics, "cnn", mine, truth)


def test_rest_error_model_masks_what_the_observation_masks():
    from img2spec.evaluate.measurements import rest_error_model

    wave = np.geomspace(4000.0, 8000.0, 200)
    ivar = np.ones((1, 200), np.float32)
    ivar[0, 100] = 0.0
    rest_wave = np.geomspace(3000.0, 8000.0, 300)
    z = np.array([0.1])
    got = rest_error_model(wave, ivar, z, rest_wave)
    at = rest_wave * 1.1
    assert np.all(got[0, (at < wave[0] * 0.999) | (at > wave[-1] * 1.001)] == 0)  # off the observed grid
    masked = np.argmin(np.abs(np.log(at) - np.log(wave[100])))
    assert got[0, masked] == 0 and got[0, masked + 3] == 1
    assert np.all(rest_error_model(wave, ivar, np.array([np.nan]), rest_wave) == 0)  # no z: nothing measured
