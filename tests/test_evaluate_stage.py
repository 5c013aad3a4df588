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
    # the noiseless truth scores like pure noise: D ~ E|N(0,1)| = 0.80
    assert metrics["mean_deviation"]["noise_floor"]["mean"] == pytest.approx(np.sqrt(2 / np.pi), abs=0.1)
    assert set(metrics["regions"]) == {"blue_continuum", "break_4000", "halpha"}
    assert set(metrics["galaxy_type"]) <= {"red", "green", "blue"}
    cal = metrics["calibration"]["cnn"]
    assert 0 <= cal["within_1sigma"] <= cal["within_2sigma"] <= 1
    fit = metrics["sigma_scale"]["cnn"]  # fitted on val, reported with the unscaled test calibration
    assert fit["fitted_on"] == "val" and fit["scale"] > 0 and fit["sigma_method"] == "linearised"
    raw = fit["test_calibration_unscaled"]["within_1sigma"]
    assert (cal["within_1sigma"] <= raw) == (fit["scale"] <= 1)  # shrinking sigma lowers coverage
    table = pd.read_csv(paths.reports / "evaluate_objects.csv")
    assert len(table) == metrics["mean_deviation"]["cnn"]["n"]
    assert np.isclose(table["D_cnn"].mean(), metrics["mean_deviation"]["cnn"]["mean"])
    for name in ("examples_best.png", "examples_worst.png", "examples_typical.png", "deviation_hist.png",
                 "deviation_vs_mag_z.png"):
        assert (paths.figures / name).stat().st_size > 0
    assert (paths.reports / "plots" / "deviation_hist.csv").exists()
    for name in ("train_vae.json", "train_cnn.json"):
        assert (paths.metrics / name).exists()
    lat = np.load(paths.latents / "mu.npy")
    assert lat.shape == (90, 3)


def test_stage_scores_measurements_against_the_truth(evaluated):
    """evaluate/measurements.py through the stage: sections, methods and the figure."""
    paths, _ = evaluated
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    assert metrics["notes"]["measurements"]["reference"] == "truth"   # the synthetic survey has truth_flux
    for q in ("dn4000", "halpha_ew", "hdelta_a", "oiii_hbeta", "nii_halpha"):
        assert {"cnn", "knn_colour", "observed"} <= set(metrics["measurements"][q])
    dn = metrics["measurements"]["dn4000"]
    assert dn["observed"]["n"] > 0 and dn["observed"]["nmad"] < dn["knn_colour"]["nmad"] + 1.0
    for scheme in ("sf_quiescent", "bpt", "agn"):
        s = metrics["classes"][scheme]["cnn"]
        assert s["n"] == sum(sum(row.values()) for row in s["confusion"].values())
    assert (paths.figures / "measurements.png").stat().st_size > 0
