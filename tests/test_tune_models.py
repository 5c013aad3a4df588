"""Real objectives on a tiny synthetic data set: the VAE study (val -ELBO) and the CNN
study (val mean D_i through the decoder). The test split is poisoned with a huge finite
value (NaN would be absorbed by the masked-pixel cleaning and nanmean), so a test row in any
training, early-stopping or objective batch makes a loss or objective astronomically large;
`test_leak_check_catches_test_rows` shows the check failing when test rows are used on purpose."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from img2spec.config import params_from_dict
from img2spec.paths import Paths
from test_tune_support import mlflow_template  # noqa: F401  (fixture)
from test_tune_support import isolated_mlflow_uri  # noqa: F401  (fixture)
from test_tune_support import SANE_LOSS, tiny_params, write_processed

optuna.logging.set_verbosity(optuna.logging.WARNING)


def assert_no_test_rows(values, what: str) -> None:
    """Every loss/objective finite and sane: none of them saw a poisoned test row."""
    values = np.asarray(list(values), float)
    assert values.size and np.isfinite(values).all() and (values < SANE_LOSS).all(), (
        f"{what}: {values.max()} (>= {SANE_LOSS:g} or non-finite): test rows leaked in")


@pytest.fixture
def mlflow_uri(isolated_mlflow_uri) -> str:
    """conftest's isolated store, copied from a pre-migrated template (fast)."""
    return isolated_mlflow_uri


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_root")
    write_processed(root)
    return root


@pytest.mark.slow  # the CNN study below trains the same real objective path; ~30 s on 2 busy cores
def test_vae_study_real_objective(tiny_root, tmp_path, mlflow_uri):
    from img2spec.tuning.runner import run_study

    params = tiny_params(f"sqlite:///{tmp_path / 'optuna.db'}")
    report = run_study("vae", params, Paths(tiny_root))
    study = optuna.load_study(study_name=params.tune.vae.study_name, storage=params.tune.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        assert math.isfinite(trial.value) and trial.value > 0
        assert_no_test_rows([trial.value, trial.user_attrs["val_loss"], *trial.intermediate_values.values()],
                            f"VAE trial {trial.number}")
        assert len(trial.intermediate_values) == trial.user_attrs["epochs"] <= params.tune.vae.max_epochs
        section = trial.user_attrs["section_params"]
        assert section["encoder_units"] == section["decoder_units"][::-1]
        params_from_dict({"vae": section})  # what --apply would write is valid
    assert report["best_value"] == pytest.approx(study.best_value)


def test_cnn_study_real_objective(tiny_root, tmp_path, mlflow_uri):
    import keras

    from img2spec.io.processed import ProcessedData
    from img2spec.models.data import clean_flux
    from img2spec.models.train import train_vae
    from img2spec.tuning.runner import run_study

    paths = Paths(tiny_root)
    params = tiny_params(f"sqlite:///{tmp_path / 'optuna.db'}", n_trials=2)
    data = ProcessedData.open(paths.processed)
    vae = train_vae(params.vae, data, out_dir=paths.vae_dir).model
    flux, ivar = clean_flux(data.flux[:], data.ivar[:])
    mu, logvar = (np.asarray(a) for a in vae.encoder([flux, ivar], training=False))
    paths.latents.mkdir(parents=True, exist_ok=True)
    np.save(paths.latents / "mu.npy", mu)
    np.save(paths.latents / "logvar.npy", logvar)
    keras.utils.clear_session()

    report = run_study("cnn", params, paths)
    study = optuna.load_study(study_name=params.tune.cnn.study_name, storage=params.tune.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        assert math.isfinite(trial.value) and trial.value > 0  # val mean D_i in SDSS error units
        assert math.isfinite(trial.user_attrs["val_loss"])
        assert len(trial.user_attrs["decoder_sha1"]) == 40
        assert_no_test_rows([trial.value, trial.user_attrs["val_loss"], *trial.intermediate_values.values()],
                            f"CNN trial {trial.number}")
    best = min(study.trials, key=lambda t: t.value)  # the report names the best trial's section
    assert report["best_section"] == best.user_attrs["section_params"]


@pytest.mark.parametrize("leak", [pytest.param("train", marks=pytest.mark.slow), "val"])  # ~20 s each: one fast
def test_leak_check_catches_test_rows(tiny_root, leak, monkeypatch):
    """Deliberately mix the test rows into the train (or val) split: the VAE's losses and the
    check above must then fail (the poison is finite, so nothing absorbs it)."""
    from img2spec.io.processed import ProcessedData
    from img2spec.models.train import train_vae

    data = ProcessedData.open(Paths(tiny_root).processed)
    params = tiny_params("sqlite://")
    history = train_vae(params.vae, data).history
    assert_no_test_rows([*history["loss"], *history["val_loss"]], "clean VAE")

    honest = ProcessedData.indices

    def leaky(self, split):
        rows = honest(self, split)
        return np.sort(np.concatenate([rows, honest(self, "test")])) if split == leak else rows

    monkeypatch.setattr(ProcessedData, "indices", leaky)
    history = train_vae(params.vae, data).history
    with pytest.raises(AssertionError, match="test rows leaked"):
        assert_no_test_rows([*history["loss"], *history["val_loss"]], f"VAE with test rows in {leak}")
