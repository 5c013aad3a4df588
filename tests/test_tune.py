"""Tuning: studies run, prune, fail visibly, resume, log nested MLflow runs, --apply."""

from __future__ import annotations

import shutil

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from img2spec.config import ConfigError, load_params, params_from_dict
from img2spec.paths import Paths
from img2spec.tuning import apply_tuned, mlruns
from img2spec.tuning.factories import storage_url
from img2spec.tuning.runner import run_study
from img2spec.tuning.space import DEFAULT_ATTR
from test_tune_support import mlflow_template  # noqa: F401  (fixture)
from test_tune_support import isolated_mlflow_uri  # noqa: F401  (fixture)
from test_tune_support import tiny_params, toy_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def mlflow_uri(isolated_mlflow_uri) -> str:
    """conftest's isolated store, copied from a pre-migrated template (fast)."""
    return isolated_mlflow_uri


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _runs(study_name: str):
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("img2spec/tune")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{mlruns.TAG_STUDY}` = '{study_name}'")
    parents = [r for r in runs if r.data.tags.get(mlruns.TAG_ROLE) == "study"]
    children = [r for r in runs if r.data.tags.get(mlruns.TAG_ROLE) == "trial"]
    return parents, children


def test_study_logs_nested_runs_curves_best_tag_and_figures(tmp_path, storage, mlflow_uri):
    params = tiny_params(storage)
    name = params.tune.vae.study_name
    report = run_study("vae", params, Paths(tmp_path), objective=toy_objective(name))
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert report["ran_here"]["COMPLETE"] == 3 and report["best_trial"] == study.best_trial.number

    parents, children = _runs(name)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    best = [c for c in children if c.data.tags.get(mlruns.TAG_BEST) == "true"]
    assert len(best) == 1 and best[0].data.tags[mlruns.TAG_TRIAL] == str(study.best_trial.number)
    client = mlflow.MlflowClient()
    curve = client.get_metric_history(children[0].info.run_id, "val_loss")
    assert [m.step for m in curve] == [0, 1, 2]
    assert all(c.data.tags[mlruns.TAG_STATE] == "COMPLETE" for c in children)
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert figures == {"figures/optimization_history.png", "figures/param_importances.png"}
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)


def test_rerun_is_idempotent_then_tops_up_in_the_same_parent_run(tmp_path, storage, mlflow_uri):
    params = tiny_params(storage, n_trials=2)
    name = params.tune.vae.study_name
    first = run_study("vae", params, Paths(tmp_path), objective=toy_objective(name))
    again = run_study("vae", params, Paths(tmp_path), objective=toy_objective(name))
    assert again["ran_numbers"] == [] and again["trials"]["COMPLETE"] == 2
    more = run_study("vae", params, Paths(tmp_path), n_trials=3, objective=toy_objective(name))
    assert more["ran_numbers"] == [2]
    assert first["mlflow_parent_run"] == again["mlflow_parent_run"] == more["mlflow_parent_run"]
    parents, children = _runs(name)
    assert len(parents) == 1 and sorted(int(c.data.tags[mlruns.TAG_TRIAL]) for c in children) == [0, 1, 2]


def test_forced_prune(tmp_path, storage, mlflow_uri):
    # Threshold pruner below any loss: every trial must be pruned after its first epoch.
    params = tiny_params(storage, pruner="threshold", prune_above=-1.0)
    name = params.tune.vae.study_name
    report = run_study("vae", params, Paths(tmp_path), objective=toy_objective(name))
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(len(t.intermediate_values) == 1 for t in study.trials)
    assert report["ran_here"]["PRUNED"] == 3 and "best_trial" not in report
    _, children = _runs(name)
    assert {(c.info.status, c.data.tags[mlruns.TAG_STATE]) for c in children} == {("KILLED", "PRUNED")}


def test_failing_trials_are_recorded_and_stop_the_worker(tmp_path, storage, mlflow_uri):
    params = tiny_params(storage, max_consecutive_failures=2)
    name = params.tune.vae.study_name
    with pytest.raises(RuntimeError, match="2 consecutive trials failed"):
        run_study("vae", params, Paths(tmp_path), objective=toy_objective(name, fail=True))
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    _, children = _runs(name)
    assert {(c.info.status, c.data.tags[mlruns.TAG_STATE]) for c in children} == {("FAILED", "FAIL")}
    assert all("toy failure" in c.data.tags["img2spec.tune.error"] for c in children)


def test_storage_precedence(monkeypatch, storage):
    params = tiny_params(storage)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert storage_url(params.tune) == storage
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@h/db")
    assert storage_url(params.tune) == "postgresql://u@h/db"
    assert storage_url(params.tune, "sqlite:///x.db") == "sqlite:///x.db"
    assert mlruns.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def test_bad_search_space_is_named():
    with pytest.raises(ConfigError, match="tune.vae.space.latent_dim"):
        params_from_dict({"tune": {"vae": {"space": {"latent_dim": {"low": 9, "high": 3}}}}})
    with pytest.raises(ConfigError, match="tune.sampler"):
        params_from_dict({"tune": {"sampler": "grid"}})


def _seed_study(storage: str, name: str, section: dict, values=(2.0, 1.0, 3.0)) -> None:
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    dist = {"x": optuna.distributions.FloatDistribution(0, 10)}
    for i, value in enumerate(values):
        attrs = {"section_params": {**section, "marker": i}} if i == 1 else {"section_params": {}}
        if i == 1:
            attrs["section_params"].pop("marker")
        if i == 0:  # the params.yaml configuration: what --apply measures an improvement against
            attrs[DEFAULT_ATTR] = True
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, distributions=dist, value=value, user_attrs=attrs))


def test_apply_writes_best_params_and_keeps_comments(tmp_path, repo_root, storage):
    target = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", target)
    text = (target.read_text()).replace("sqlite:///optuna.db", storage, 1)
    target.write_text(text)
    before = load_params(target)
    vae = {"latent_dim": 13, "encoder_units": [1024, 64], "decoder_units": [64, 1024],
           "kl_weight": 0.123456789, "learning_rate": 0.000777}
    cnn = {"filters": [16, 32], "kernel_size": 5, "dense_units": 64, "dropout": 0.25,
           "learning_rate": 0.002, "loss": "spectrum"}
    _seed_study(storage, before.tune.vae.study_name, vae)
    _seed_study(storage, before.tune.cnn.study_name, cnn)

    report = apply_tuned(target)
    after = load_params(target)
    assert report["vae"]["trial"] == 1 and report["cnn"]["trial"] == 1
    assert after.vae.latent_dim == 13 and after.vae.encoder_units == (1024, 64)
    assert after.vae.kl_weight == pytest.approx(0.1235)  # rounded to 4 significant digits
    assert after.cnn.filters == (16, 32) and after.cnn.loss == "spectrum"
    # untouched keys and sections stay; every comment line and inline comment survives
    assert after.vae.batch_size == before.vae.batch_size and after.data == before.data
    assert after.tune == before.tune
    new_text = target.read_text()
    for line in text.splitlines():
        if "#" in line:
            assert "#" + line.split("#", 1)[1] in new_text
    assert "encoder_units: [1024, 64]" in new_text
    assert "vae.latent_dim" in report["changed"]
    # idempotent: a second apply changes nothing
    assert apply_tuned(target)["changed"] == {}


def test_apply_refuses_invalid_params_and_leaves_file(tmp_path, repo_root, storage):
    target = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", target)
    original = target.read_text()
    params = load_params(target)
    _seed_study(storage, params.tune.vae.study_name, {"latent_dim": 0})
    with pytest.raises(ConfigError, match="vae.latent_dim"):
        apply_tuned(target, part="vae", storage=storage)
    assert target.read_text() == original
    with pytest.raises(LookupError, match="no study"):
        apply_tuned(target, part="cnn", storage=storage)
