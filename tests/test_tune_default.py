"""Tuning that can only report what it measured: the params.yaml configuration is each
study's first trial, trials train at the default's fidelity, tune --apply writes a best
trial only when it beats the default, and GPU workers are pinned one per device."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from img2spec.config import load_params
from img2spec.paths import Paths
from img2spec.tuning import apply_tuned
from img2spec.tuning.devices import CUDA_ENV, list_gpus, plan_workers, run_workers
from img2spec.tuning.factories import make_pruner
from img2spec.tuning.runner import run_study
from img2spec.tuning.space import DEFAULT_ATTR, cnn_updates, default_trial_params, trial_cnn_params, trial_vae_params
from test_tune_support import isolated_mlflow_uri, mlflow_template  # noqa: F401  (fixtures)
from test_tune_support import tiny_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _recording_objective(seen: list, values: dict[int, float] | None = None):
    """A CNN-study objective without training: records what each trial was asked to train."""
    def objective(trial):
        from img2spec.tuning import mlruns

        updates = cnn_updates(trial, STUDY.tune.cnn)
        trial.set_user_attr("section_params", updates)
        with mlruns.trial_run(trial, STUDY.tune.cnn.study_name, updates):
            seen.append((trial.number, bool(trial.user_attrs.get(DEFAULT_ATTR)), dict(trial.params)))
            return (values or {}).get(trial.number, 1.0 + trial.number)
    return objective


STUDY = None


def test_default_config_is_the_first_trial_and_reported(tmp_path, storage, isolated_mlflow_uri, monkeypatch):
    global STUDY
    params = tiny_params(storage, n_trials=3)
    params = params.model_copy(update={"cnn": params.cnn.model_copy(update={"filters": (4, 8), "dense_units": 16,
                                                                             "kernel_size": 3, "loss": "latent"})})
    STUDY = params
    seen: list = []
    report = run_study("cnn", params, Paths(tmp_path), objective=_recording_objective(seen, {0: 2.0, 1: 1.5, 2: 3.0}))
    assert [s[0] for s in seen] == [0, 1, 2]
    number, is_default, trial_params = seen[0]
    assert is_default and not seen[1][1] and not seen[2][1]
    # the enqueued trial proposes exactly the params.yaml values the space can express
    assert trial_params["n_blocks"] == 2 and trial_params["base_filters"] == 4 and trial_params["dense_units"] == 16
    assert report["default_trial"] == 0 and report["default_value"] == 2.0
    assert report["best_value"] == 1.5 and report["improved"] is True
    assert report["improvement"] == pytest.approx(0.5)
    # a rerun (topping up) does not enqueue the default again
    more = run_study("cnn", params, Paths(tmp_path), n_trials=4, objective=_recording_objective(seen))
    assert more["ran_numbers"] == [3] and not seen[-1][1]
    study = optuna.load_study(study_name=params.tune.cnn.study_name, storage=storage)
    assert sum(bool(t.user_attrs.get(DEFAULT_ATTR)) for t in study.trials) == 1


def test_default_trial_params_skip_what_the_space_cannot_express(repo_root):
    params = load_params(repo_root / "params.yaml")
    cnn = default_trial_params("cnn", params.cnn, params.tune.cnn.space)
    assert cnn["n_blocks"] == len(params.cnn.filters) and cnn["base_filters"] == params.cnn.filters[0]
    odd = params.cnn.model_copy(update={"filters": (16, 24), "dense_units": 7})
    out = default_trial_params("cnn", odd, params.tune.cnn.space)
    assert "n_blocks" not in out and "dense_units" not in out and out["kernel_size"] == odd.kernel_size


def test_trials_train_at_the_default_fidelity(repo_root):
    params = load_params(repo_root / "params.yaml")
    cnn = trial_cnn_params(params.cnn, {}, params.tune.cnn)
    vae = trial_vae_params(params.vae, {}, params.tune.vae)
    assert params.tune.cnn.max_epochs is None  # the committed default: no cap
    assert cnn.epochs == params.cnn.epochs and cnn.patience == params.cnn.patience
    assert vae.epochs == params.vae.epochs and vae.kl_warmup_epochs == params.vae.kl_warmup_epochs
    capped = trial_cnn_params(params.cnn, {}, params.tune.cnn.model_copy(update={"max_epochs": 3}))
    assert capped.epochs == 3
    pruner = make_pruner(params.tune.model_copy(update={"pruner": "hyperband"}), params.cnn.epochs)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._max_resource == params.cnn.epochs and pruner._min_resource == params.tune.hyperband_min_epochs


def _seed(storage: str, name: str, section: dict, values: list[float], default_index: int | None = 0) -> None:
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    dist = {"x": optuna.distributions.FloatDistribution(0, 10)}
    for i, value in enumerate(values):
        attrs = {"section_params": section}
        if i == default_index:
            attrs[DEFAULT_ATTR] = True
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, distributions=dist, value=value,
                                                  user_attrs=attrs, state=TrialState.COMPLETE))


@pytest.mark.parametrize("values, default_index, applied", [
    ([1.0, 0.5], 0, True),          # a measured 50% improvement
    ([1.0, 0.995], 0, False),       # 0.5%: below tune.vae.min_improvement (1%)
    ([0.8, 0.9], 0, False),         # the default itself is best
    ([1.0, 0.5], None, False),      # no default trial: nothing measured against
])
def test_apply_only_writes_a_measured_improvement(tmp_path, repo_root, storage, values, default_index, applied):
    target = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", target)
    target.write_text(target.read_text().replace("sqlite:///optuna.db", storage, 1))
    before = target.read_text()
    params = load_params(target)
    assert params.tune.vae.min_improvement == 0.01
    _seed(storage, params.tune.vae.study_name, {"latent_dim": 13}, values, default_index)
    report = apply_tuned(target, part="vae")
    assert report["vae"]["applied"] is applied
    if applied:
        assert load_params(target).vae.latent_dim == 13 and "vae.latent_dim" in report["changed"]
    else:
        assert target.read_text() == before and report["changed"] == {} and report["vae"]["reason"]


# ----------------------------------------------------------------------------- devices
def test_plan_workers_one_per_gpu():
    assert plan_workers([]) == plan_workers([], 4)
    (cpu,) = plan_workers([])
    assert cpu.gpu is None and cpu.env == {}
    (one,) = plan_workers(["0"])  # a single GPU: this process, no extra worker
    assert one.gpu == "0" and one.env == {}
    slots = plan_workers(["0", "1", "2"], first_index=5)
    assert [s.index for s in slots] == [5, 6, 7]
    assert [s.env for s in slots] == [{CUDA_ENV: "0"}, {CUDA_ENV: "1"}, {CUDA_ENV: "2"}]
    assert [s.gpu for s in plan_workers(["0", "1", "2"], max_workers=2)] == ["0", "1"]


def test_list_gpus_follows_tensorflow_and_visible_devices(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu-a", "gpu-b"])
    monkeypatch.delenv(CUDA_ENV, raising=False)
    assert list_gpus() == ["0", "1"]
    monkeypatch.setenv(CUDA_ENV, "3,5")
    assert list_gpus() == ["3", "5"]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert list_gpus() == []


def test_each_worker_process_sees_only_its_gpu(tmp_path):
    from img2spec.tuning.devices import with_storage

    url = "postgresql://u:secret@db/optuna"
    slots = [with_storage(s, url) for s in plan_workers(["0", "1"])]
    code = ("import os, sys; open(sys.argv[1], 'w').write("
            "os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + ' ' + os.environ.get('OPTUNA_STORAGE', 'unset'))")
    cmds = [[sys.executable, "-c", code, str(tmp_path / f"w{s.index}")] for s in slots]
    assert run_workers(slots, cmds) == [0, 0]
    assert (tmp_path / "w0").read_text() == f"0 {url}" and (tmp_path / "w1").read_text() == f"1 {url}"


def test_run_tune_starts_pinned_workers_with_the_gpu_space(tmp_path, repo_root, monkeypatch):
    import img2spec.tuning as tuning
    import img2spec.tuning.devices as devices
    import img2spec.tuning.runner as runner

    target = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", target)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = {}

    def fake_run_workers(slots, commands, cwd=None):
        started["slots"], started["commands"] = slots, commands
        params = load_params(target)
        for name in (params.tune.vae.study_name, params.tune.cnn.study_name):  # what the workers leave behind
            _seed(storage, name, {}, [1.0, 0.9])
        return [0] * len(slots)

    monkeypatch.setattr(devices, "list_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(devices, "run_workers", fake_run_workers)
    monkeypatch.setattr(runner, "run_study", lambda *a, **k: pytest.fail("GPU runs go through the workers"))
    report = tuning.run_tune(target, storage=storage, root=tmp_path)
    # Each worker sees its GPU and the storage through its environment; no command line carries the
    # URL (it may hold a password, and `ps` shows command lines to every user).
    assert [s.env for s in started["slots"]] == [{CUDA_ENV: "0", "OPTUNA_STORAGE": storage},
                                                 {CUDA_ENV: "1", "OPTUNA_STORAGE": storage}]
    assert all("--worker" in c and "--storage" not in c and not any(storage in a for a in c)
               for c in started["commands"])
    assert report["cnn"]["default_value"] == 1.0 and report["cnn"]["best_value"] == 0.9
    assert [w["gpu"] for w in report["vae"]["workers"]] == ["0", "1"]
    gpu = tuning.gpu_params(load_params(target))
    assert gpu.tune.cnn.space.architecture is not None and gpu.tune.cnn.n_trials == gpu.tune.cnn.gpu_n_trials


# ----------------------------------------------------------------------------- ELBO proxy check
def test_spearman_known_values():
    from img2spec.tuning.latent_rank import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.slow  # trains a VAE and a CNN per size (~40 s on 2 busy cores); test_spearman_* stay fast
def test_latent_rank_reports_both_objectives(tmp_path):
    from img2spec.config import params_from_dict
    from img2spec.io.processed import ProcessedData
    from img2spec.tuning.latent_rank import rank_latent_sizes
    from test_tune_support import write_processed

    data = ProcessedData.open(write_processed(tmp_path, n=48))
    params = params_from_dict({"vae": {"batch_size": 16, "epochs": 2, "patience": 2, "kl_warmup_epochs": 1,
                                       "encoder_units": [16], "decoder_units": [16]},
                               "cnn": {"batch_size": 16, "epochs": 5, "filters": [4], "dense_units": 8,
                                       "loss": "latent", "redshift_weight": 0.0}})
    report = rank_latent_sizes(params, data, [3, 2], cnn_epochs=1)
    rows = report["rows"]
    assert [r["latent_dim"] for r in rows] == [3, 2] and report["cnn_epochs"] == 1   # in the order asked
    assert all(np.isfinite(r["val_neg_elbo"]) and np.isfinite(r["val_mean_deviation"]) for r in rows)
    assert all(r["val_mean_deviation"] < 1e3 for r in rows)  # the poisoned test rows never enter
    assert all(r["vae_seconds"] > 0 and r["cnn_seconds"] > 0 for r in rows)
    # Each best is the size with the lowest value of its own objective, read off the rows.
    assert report["best_by_elbo"] == min(rows, key=lambda r: r["val_neg_elbo"])["latent_dim"]
    assert report["best_by_deviation"] == min(rows, key=lambda r: r["val_mean_deviation"])["latent_dim"]
    agree = np.sign(rows[1]["val_neg_elbo"] - rows[0]["val_neg_elbo"]) == np.sign(
        rows[1]["val_mean_deviation"] - rows[0]["val_mean_deviation"])
    assert report["spearman"] == pytest.approx(1.0 if agree else -1.0)


def test_spearman_ranks():
    from img2spec.tuning.latent_rank import spearman

    assert spearman([4.4, 4.3, 4.1, 4.0], [3.4, 2.8, 2.7, 2.9]) == pytest.approx(0.4)   # ELBO vs D: a weak proxy
    assert spearman([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 5.0, 9.0], [0.1, 0.2, 7.0]) == pytest.approx(1.0)             # ranks, not values
    assert np.isnan(spearman([1.0], [2.0]))
