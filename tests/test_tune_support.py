"""Shared helpers of the tuning tests (no tests here): tiny params, a tiny synthetic
`data/processed/` directory, and a toy Keras objective for the study machinery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from img2spec.config import Params, params_from_dict


def tiny_params(storage: str, *, n_trials: int = 3, pruner: str = "none", **tune: Any) -> Params:
    """Params for 3 tiny trials of each study (2 epochs, small networks)."""
    raw = {
        "data": {"cutout_size": 16},
        "vae": {"batch_size": 16, "epochs": 2, "patience": 2, "kl_warmup_epochs": 1},
        "cnn": {"batch_size": 16, "epochs": 2, "patience": 2, "filters": [4, 8], "dense_units": 8},
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


def write_processed(root: Path, n: int = 48, n_pix: int = 40, size: int = 16, seed: int = 0) -> Path:
    """A tiny `data/processed/` following io.processed's documented files. The test split
    is poisoned with NaN: anything that reads it during tuning turns a trial into NaN."""
    rng = np.random.default_rng(seed)
    out = root / "data" / "processed"
    out.mkdir(parents=True, exist_ok=True)
    wave = np.geomspace(3800.0, 9200.0, n_pix)
    amp = rng.uniform(0.5, 1.5, n)
    slope = rng.uniform(-0.5, 0.5, n)
    x = (wave - wave.mean()) / np.ptp(wave)
    truth = (amp[:, None] * (1 + slope[:, None] * x[None, :])).astype(np.float32)
    ivar = np.full((n, n_pix), 100.0, np.float32)
    ivar[:, :3] = 0.0  # masked pixels
    flux = (truth + rng.normal(0, 0.1, truth.shape)).astype(np.float32)
    images = (amp[:, None, None, None] * rng.uniform(0.5, 1.5, (n, size, size, 5))).astype(np.float32)
    split = np.array(["train"] * (n - 16) + ["val"] * 8 + ["test"] * 8)
    test = split == "test"
    flux[test] = np.nan
    images[test] = np.nan
    np.save(out / "wave.npy", wave)
    np.save(out / "flux.npy", flux)
    np.save(out / "ivar.npy", ivar)
    np.save(out / "images.npy", images)
    np.save(out / "truth_flux.npy", truth)
    mags = {f"mag_{b}": 17 + rng.normal(0, 0.3, n) for b in "grizy"}
    errs = {f"magerr_{b}": np.full(n, 0.01) for b in "grizy"}
    catalog = pd.DataFrame({
        "objid": np.arange(1000, 1000 + n, dtype=np.int64), "split": split, "z": rng.uniform(0.05, 0.1, n),
        "ra": rng.uniform(0, 10, n), "dec": rng.uniform(0, 10, n), "norm": amp * 10.0, **mags, **errs,
        "specfile": [f"spec-{i}.fits" for i in range(n)], "imagefile": [f"{i}.fits" for i in range(n)],
        "galaxy_type": rng.choice(["red", "green", "blue"], n),
    })
    catalog.to_parquet(out / "catalog.parquet", index=False)
    (out / "image_scaling.json").write_text(json.dumps({"stretch": "asinh", "bands": list("grizy"),
                                                        "scale": [1.0] * 5, "offset": [0.0] * 5}))
    (out / "meta.json").write_text(json.dumps({"frame": "observed", "n_pix": n_pix, "n_objects": n,
                                               "bands": list("grizy"), "cutout_size": size,
                                               "counts": {s: int((split == s).sum()) for s in ("train", "val", "test")}}))
    return out


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
