"""Shared helpers of the tuning tests (no tests here): tiny params, a tiny synthetic
`data/processed/` directory, and a toy Keras objective for the study machinery."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from img2spec.config import Params, params_from_dict


def tiny_params(storage: str, *, n_trials: int = 3, pruner: str = "none", **tune: Any) -> Params:
    """Params for 3 tiny trials of each study (2 epochs, small networks)."""
    raw = {
        "data": {"cutout_size": 16},
        "vae": {"batch_size": 16, "epochs": 2, "patience": 2, "kl_warmup_epochs": 1},
        # the redshift head on, as in params.yaml: the CNN study must score a CNN that has one
        "cnn": {"batch_size": 16, "epochs": 2, "patience": 2, "filters": [4, 8], "dense_units": 8,
                "redshift_weight": 1.0},
        "tune": {
            "storage": storage, "sampler": "random", "pruner": pruner, "startup_trials": 0,
            "warmup_epochs": 0, **tune,
            "vae": {"n_trials": n_trials, "max_epochs": 2, "timeout_s": 300, "space": {
                "latent_dim": {"low": 2, "high": 4}, "outer_units": {"choices": [16, 32]},
                "inner_units": {"choices": [8]}}},
            "cnn": {"n_trials": n_trials, "max_epochs": 2, "timeout_s": 300, "space": {
                "n_blocks": {"low": 1, "high": 2}, "base_filters": {"choices": [4]},
                "kernel_size": {"choices": [3]}, "dense_units": {"choices": [8, 16]},
                "loss": {"choices": ["latent"]}}},
        },
    }
    return params_from_dict(raw, "tiny tune params")


POISON = 1e4
"""Flux and image value of the test rows (finite, with normal ivar): one test row in a training,
validation or calibration batch makes that loss astronomically large (see test_tune_models)."""
SANE_LOSS = 1e3
"""Losses and objectives of these tiny runs stay far below this unless test rows leak in."""


def write_processed(root: Path, n: int = 48, n_pix: int = 40, size: int = 16, seed: int = 0) -> Path:
    """A tiny `data/processed/` (the one synthetic data set) with its test split poisoned."""
    from img2spec.prep.synthetic import write_synthetic_processed

    return write_synthetic_processed(root / "data" / "processed", n=n, n_pix=n_pix, size=size, seed=seed,
                                     poison_test=POISON)


def toy_objective(study_name: str, *, fail: bool = False, epochs: int = 3):
    """A real but tiny Keras regression trained through the tuning callbacks and MLflow runs."""

    def objective(trial):
        import keras

        from img2spec.tuning import mlruns
        from img2spec.tuning.callbacks import trial_callbacks

        lr = trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        units = trial.suggest_categorical("units", [4, 8])
        trial.set_user_attr("section_params", {"learning_rate": lr, "latent_dim": units})
        with mlruns.trial_run(trial, study_name, {"learning_rate": lr, "units": units}):
            if fail:
                raise RuntimeError("toy failure")
            keras.utils.clear_session()
            keras.utils.set_random_seed(trial.number)
            rng = np.random.default_rng(0)
            x = rng.normal(size=(64, 3)).astype("float32")
            y = x @ np.array([1.0, 2.0, 3.0], "float32")
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(1)])
            model.compile(keras.optimizers.Adam(lr), "mse")
            logger, pruner = trial_callbacks(trial)
            hist = model.fit(x[:48], y[:48], validation_data=(x[48:], y[48:]), epochs=epochs, verbose=0,
                             callbacks=[logger, pruner])
            return float(min(hist.history["val_loss"]))

    return objective


# Creating an MLflow sqlite store runs every schema migration (seconds each time on this
# CPU): build one per session and give each test its own copy (same isolation as
# conftest's `mlflow_uri`, which these modules override with `isolated_mlflow_uri`).
@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    import mlflow

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def isolated_mlflow_uri(tmp_path, monkeypatch, mlflow_template) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
