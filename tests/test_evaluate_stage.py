"""train_vae -> encode -> train_cnn -> evaluate as library stages on a tiny synthetic survey."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from img2spec.config import params_from_dict
from img2spec.prep.synthetic import write_synthetic_processed
from img2spec.paths import Paths

METHODS = ("cnn", "knn_colour", "mean_spectrum", "pca_cnn", "vae_ceiling", "noise_floor")
TINY = {
    "vae": {"latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 3, "kl_warmup_epochs": 1,
            "patience": 2, "batch_size": 32},
    "cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32},
    "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 2, "hist_bins": 10},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("root")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage

    paths = Paths(root)
    write_synthetic_processed(paths.processed, n=90)
    params = params_from_dict(TINY)
    try:
        train_vae_stage(params, paths)
        encode_stage(params, paths)
        train_cnn_stage(params, paths)
        result = evaluate_stage(params, paths)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return paths, result


def test_stage_outputs(evaluated):
    paths, result = evaluated
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    for method in METHODS:
        s = metrics["mean_deviation"][method]
        assert {"mean", "sem", "median", "p16", "p84", "n"} <= set(s)
        assert s["n"] > 0 and np.isfinite(s["mean"])
    for name in ("examples_best.png", "examples_worst.png", "examples_typical.png", "deviation_hist.png",
                 "deviation_vs_mag_z.png"):
        assert (paths.figures / name).stat().st_size > 0
    # timings go to reports/, so metrics/ of two runs is byte-identical
    assert "train_seconds" in json.loads((paths.reports / "train_vae.json").read_text())
    assert "train_seconds" in json.loads((paths.reports / "train_cnn.json").read_text())["cnn"]
    for name in ("train_vae.json", "train_cnn.json"):
        assert "train_seconds" not in (paths.metrics / name).read_text()
    assert np.load(paths.latents / "mu.npy").shape == (90, 3)


def test_scores_the_test_split_with_the_trained_models(evaluated):
    """Recompute the CNN's D_i independently (saved models, test rows): the stage scored
    exactly the test objects, with the published models, on the metric of DESIGN.md."""
    from img2spec.io.processed import ProcessedData
    from img2spec.metrics import deviation
    from img2spec.models.inference import load_models, predict_spectra

    paths, _ = evaluated
    data = ProcessedData.open(paths.processed)
    test = data.indices("test")
    table = pd.read_csv(paths.reports / "evaluate_objects.csv")
    np.testing.assert_array_equal(table["objid"].to_numpy(), data.catalog["objid"].to_numpy()[test])
    assert (table["split"] == "test").all()
    models = load_models(paths.vae_dir, paths.cnn_dir)
    pred = predict_spectra(models.cnn, models.decoder, np.asarray(data.images[test]), sigma_method="none")
    mine = deviation(pred.flux, np.asarray(data.flux[test]), np.asarray(data.ivar[test]))
    np.testing.assert_allclose(table["D_cnn"].to_numpy(), mine, rtol=1e-4)
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    assert metrics["mean_deviation"]["cnn"]["mean"] == pytest.approx(mine.mean(), rel=1e-4)


def test_baselines_behave(evaluated):
    """The noiseless truth scores like pure noise (E|N(0,1)| = 0.80) overall and in every
    region, and every other method is worse than it; the per-type rows partition the test set."""
    paths, _ = evaluated
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    md = metrics["mean_deviation"]
    floor = md["noise_floor"]["mean"]
    assert floor == pytest.approx(np.sqrt(2 / np.pi), abs=0.1)
    for method in METHODS:
        if method != "noise_floor":
            assert md[method]["mean"] > floor + 2 * md[method]["sem"], method
    for region, row in metrics["regions"].items():
        assert row["noise_floor"]["n"] > 0, region
        assert row["noise_floor"]["mean"] == pytest.approx(np.sqrt(2 / np.pi), abs=0.2), region
    n_by_type = sum(t["cnn"]["n"] + t["cnn"]["n_skipped"] for t in metrics["galaxy_type"].values())
    assert n_by_type == metrics["notes"]["n_test"]


def test_sigma_calibration_is_fitted_on_val(evaluated):
    """The factor comes from the val split (never test) and does what it was fitted for there."""
    from img2spec.io.processed import ProcessedData
    from img2spec.metrics import GAUSSIAN_WITHIN_1SIGMA, calibration
    from img2spec.models.inference import load_models, predict_spectra

    paths, _ = evaluated
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    fit = metrics["sigma_scale"]["cnn"]
    data = ProcessedData.open(paths.processed)
    val = data.indices("val")
    assert fit["fitted_on"] == "val" and fit["n_objects"] == len(val) and fit["scale"] > 0
    models = load_models(paths.vae_dir, paths.cnn_dir)
    pred = predict_spectra(models.cnn, models.decoder, np.asarray(data.images[val]), sigma_method=fit["sigma_method"],
                           sigma_scale=fit["scale"])
    cal = calibration(pred.flux, pred.sigma, np.asarray(data.flux[val]), np.asarray(data.ivar[val]))
    assert cal["within_1sigma"] == pytest.approx(GAUSSIAN_WITHIN_1SIGMA, abs=0.01)
