"""Results that reproduce: the training and evaluate stages run twice on the same data give
byte-identical metrics (seeded Keras, deterministic TensorFlow ops, seeded tf.data)."""

from __future__ import annotations

import os

import pytest

from img2spec.config import params_from_dict
from img2spec.paths import Paths
from img2spec.prep.synthetic import write_synthetic_processed

TINY = {
    "vae": {"frame": "rest", "latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 2,
            "kl_warmup_epochs": 1, "patience": 2, "batch_size": 32, "line_weight": 5.0},
    "cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32,
            "redshift_weight": 1.0, "loss": "spectrum", "photometry": True, "train_direct": False},
    "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 1, "hist_bins": 10},
}


def _run(root) -> bytes:
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage

    paths = Paths(root)
    write_synthetic_processed(paths.processed, n=90, n_pix=400)
    params = params_from_dict(TINY)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        train_vae_stage(params, paths)
        encode_stage(params, paths)
        train_cnn_stage(params, paths)
        evaluate_stage(params, paths)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    # notes name the run's own directories (e.g. the untrained direct model's path): not a result
    return (paths.metrics / "evaluate.json").read_bytes().replace(str(root).encode(), b"ROOT")


@pytest.mark.slow
def test_two_runs_give_byte_identical_metrics(tmp_path):
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b")
    assert first == second
