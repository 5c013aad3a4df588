"""MLflow tracking read back from the store: no secrets, one comparable row per pipeline
execution, stage runs nested and limited to their params, git dirtiness, log redaction."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from img2spec import tracking
from img2spec.config import params_from_dict
from img2spec.logs import install_redaction, redact_text

from tracking_fixture import SECRET, STORAGE_WITH_PASSWORD

TRACKED_STAGES = ("prepare", "train_vae", "train_cnn", "evaluate", "publish")


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _all_runs(client):
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], max_results=1000)


@pytest.mark.parametrize("text, expected", [
    ("postgresql+psycopg2://optuna:s3cr%40t@db:5432/optuna", "postgresql+psycopg2://optuna:***@db:5432/optuna"),
    ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),
    ("http://alice:pw@127.0.0.1:5000/api", "http://alice:***@127.0.0.1:5000/api"),
    ("https://h/x?token=abc&b=1", "https://h/x?token=***&b=1"),
    ("host=db password=abc user=x", "host=db password=*** user=x"),
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_no_password_reaches_the_store(tmp_path, mlflow_uri):
    """tune.storage with a password: no tracked stage nor the tuning study writes it to MLflow."""
    from img2spec.tuning import mlruns

    params = params_from_dict({"tune": {"storage": STORAGE_WITH_PASSWORD}})
    for stage in TRACKED_STAGES:
        with tracking.start_run(stage, params, root=tmp_path, tags={"note": f"storage {STORAGE_WITH_PASSWORD}"}):
            pass
    with mlruns.study_run("study", STORAGE_WITH_PASSWORD, params, tmp_path):
        pass
    client = _client(mlflow_uri)
    runs = _all_runs(client)
    assert len(runs) == len(TRACKED_STAGES) + 2  # + the pipeline parent and the study
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in value, (run.info.run_name, key)
    study = next(r for r in runs if r.data.tags.get(mlruns.TAG_ROLE) == "study")
    assert study.data.params["tune.storage"] == "postgresql+psycopg2://optuna:***@db.example.org:5432/optuna"
    assert study.data.tags[mlruns.TAG_STORAGE] == study.data.params["tune.storage"]
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    assert SECRET.encode() not in db.read_bytes()


def test_log_records_are_redacted(caplog):
    install_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("img2spec.test").info("tune: storage %s", STORAGE_WITH_PASSWORD)
        try:
            raise RuntimeError(f"cannot connect to {STORAGE_WITH_PASSWORD}")
        except RuntimeError:
            logging.getLogger("img2spec.test").exception("failed")
    text = caplog.text
    assert SECRET not in text and "optuna:***@db.example.org" in text and "cannot connect" in text


def test_setup_logging_redacts_stderr():
    """What a user sees on the terminal, MLflow's own logger included."""
    code = (
        "import logging; from img2spec.logs import setup_logging; setup_logging();"
        f"logging.getLogger('img2spec.x').warning('storage %s', {STORAGE_WITH_PASSWORD!r});"
        f"logging.getLogger('mlflow.x').warning('uri {STORAGE_WITH_PASSWORD}')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert SECRET not in proc.stderr
    assert proc.stderr.count("optuna:***@db.example.org") == 2, proc.stderr


def test_pipeline_executions_are_rows_with_nested_stages(tmp_path, mlflow_uri):
    """Two executions with different params: one experiment, one parent row each, stages nested
    under it; the row has the named metrics, key params and data version; stages log only
    the params sections dvc.yaml gives them."""
    (tmp_path / "dvc.lock").write_text(
        "stages:\n  prepare:\n    outs:\n    - path: data/processed\n      md5: 0123456789abcdef0123.dir\n")
    for latent, d_cnn in ((8, 2.1), (12, 1.9)):
        params = params_from_dict({"vae": {"latent_dim": latent}})
        for stage in ("train_vae", "train_cnn", "evaluate"):
            with tracking.start_run(stage, params, root=tmp_path, inputs=["data/processed"]):
                if stage == "evaluate":
                    tracking.log_metrics(tracking.deviation_metrics(
                        {"cnn": {"mean": d_cnn, "sem": 0.05, "median": 2.0}, "knn_colour": {"mean": 4.7, "sem": 0.1}}))
    client = _client(mlflow_uri)
    exp = client.get_experiment_by_name(tracking.PIPELINE_EXPERIMENT)
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert "mean_deviation_cnn" in exp.tags[tracking.NOTE_TAG]
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "pipeline"]
    assert len(parents) == 2 and len(runs) == 8
    assert sorted(p.data.metrics["mean_deviation_cnn"] for p in parents) == [1.9, 2.1]
    for parent in parents:
        assert parent.data.tags[tracking.DATA_VERSION_TAG] == "0123456789ab"
        assert parent.data.metrics["mean_deviation_knn_colour_sem"] == 0.1
        assert parent.data.params["cnn.loss"] and "vae.latent_dim" in parent.data.params
        assert set(parent.data.params) <= set(tracking.KEY_PARAMS)  # not all 273
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.info.run_name for c in children) == ["evaluate", "train_cnn", "train_vae"]
        for child in children:
            assert child.data.tags[tracking.PIPELINE_RUN_TAG] == parent.data.tags[tracking.PIPELINE_RUN_TAG]
            assert child.data.tags[tracking.DATA_VERSION_TAG] == "0123456789ab"
            assert parent.info.start_time <= child.info.start_time <= child.info.end_time <= parent.info.end_time
        train_vae = next(c for c in children if c.info.run_name == "train_vae")
        assert train_vae.data.params and all(k.startswith("vae.") for k in train_vae.data.params)
        assert train_vae.data.params["vae.latent_dim"] == parent.data.params["vae.latent_dim"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_git_dirty_ignores_what_the_pipeline_writes(tmp_path):
    repo = tmp_path
    (repo / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: x\n    outs: [reports/objects.csv]\n"
                                   "    metrics:\n    - metrics/evaluate.json:\n        cache: false\n")
    (repo / "metrics").mkdir()
    (repo / "reports").mkdir()
    (repo / "metrics" / "evaluate.json").write_text("{}")
    (repo / "reports" / "objects.csv").write_text("a\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    (repo / "README.md").write_text("# t\n<!-- eval:start -->\nold table\n<!-- eval:end -->\ntext\n")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    assert tracking.git_commit(repo)[1] is False
    (repo / "metrics" / "evaluate.json").write_text('{"cnn": 2}')
    (repo / "reports" / "objects.csv").write_text("b\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "README.md").write_text("# t\n<!-- eval:start -->\nnew table\n<!-- eval:end -->\ntext\n")
    assert tracking.git_commit(repo)[1] is False, tracking.dirty_files(repo)
    (repo / "README.md").write_text("# t\n<!-- eval:start -->\nnew table\n<!-- eval:end -->\nedited\n")
    assert tracking.dirty_files(repo) == ["README.md"]
    (repo / "code.py").write_text("x = 2\n")
    sha, dirty = tracking.git_commit(repo)
    assert dirty is True and len(sha) == 40 and tracking.dirty_files(repo) == ["README.md", "code.py"]


def test_pipeline_run_id_follows_params_and_code(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.PIPELINE_RUN_ENV, raising=False)
    a = tracking.pipeline_run_id(params_from_dict({}), tmp_path)
    assert a == tracking.pipeline_run_id(params_from_dict({}), tmp_path)
    assert a != tracking.pipeline_run_id(params_from_dict({"vae": {"latent_dim": 5}}), tmp_path)
    monkeypatch.setenv(tracking.PIPELINE_RUN_ENV, "fixed")
    assert tracking.pipeline_run_id(params_from_dict({}), tmp_path) == "fixed"


def test_version_description_says_what_changed():
    from img2spec.predict.version_notes import version_description

    manifest = {"metrics": {"cnn": {"mean": 2.1, "sem": 0.05, "median": 2.0},
                            "knn_colour": {"mean": 4.7, "sem": 0.1, "median": 4.5}},
                "git_commit": "b" * 40, "git_dirty": False, "bundle_hash": "f" * 64}
    tags = {tracking.DATA_VERSION_TAG: "0123456789ab", "mlflow.source.git.commit": "b" * 40}
    first = version_description(manifest, {"vae.latent_dim": "8"}, tags)
    assert "mean_deviation_cnn: 2.100 +- 0.050" in first and "0123456789ab" in first and "first" in first
    previous = {"version": "3", "params": {"vae.latent_dim": "6"}, "metrics": {"mean_deviation_cnn": 2.4},
                "tags": {tracking.DATA_VERSION_TAG: "aaaaaaaaaaaa", "mlflow.source.git.commit": "a" * 40}}
    text = version_description(manifest, {"vae.latent_dim": "8"}, tags, previous)
    for line in ("since version 3", "vae.latent_dim: 6 -> 8", "data version: aaaaaaaaaaaa -> 0123456789ab",
                 "commit: aaaaaaaaaaaa -> bbbbbbbbbbbb", "mean_deviation_cnn: 2.400 -> 2.100"):
        assert line in text, (line, text)


def test_stage_script_run_spans_the_work(tmp_path, mlflow_uri, monkeypatch):
    """A tracked stage script opens its run before the stage body runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
    try:
        import _stage
    finally:
        sys.path.pop(0)
    marks = {}

    def body(params, paths):
        import mlflow

        marks["active"] = mlflow.active_run().info.run_id
        marks["t0"] = int(time.time() * 1000)  # ms, truncated like MLflow's timestamps
        time.sleep(0.2)
        with tracking.start_run("evaluate", params, root=paths.root) as run:  # the library's own call
            marks["inner"] = run.info.run_id
        marks["t1"] = int(time.time() * 1000)

    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path)])
    _stage.run_stage("evaluate", body, tracked=True)
    run = _client(mlflow_uri).get_run(marks["active"])
    assert marks["inner"] == marks["active"]  # reused, not a second run
    assert run.info.start_time <= marks["t0"] and marks["t1"] <= run.info.end_time
    assert run.data.tags["mlflow.parentRunId"]


def test_pipeline_description_names_logged_metrics_and_current_numbers():
    """The experiment's description (shown in the MLflow UI) names only metrics the runs log and
    states the noise floor of the calibrated mock, not of pure Gaussian noise alone."""
    import re

    from img2spec.docs import METHOD_LABELS

    named = set(re.findall(r"`mean_deviation_([a-z_]+?)(?:_sem)?`", tracking.PIPELINE_DESCRIPTION))
    assert {"cnn", "knn_colour", "vae_ceiling", "noise_floor"} <= named <= set(METHOD_LABELS)
    logged = tracking.deviation_metrics({m: {"mean": 1.0, "sem": 0.1, "median": 0.9} for m in named})
    assert {f"mean_deviation_{m}" for m in named} <= set(logged)
    text = " ".join(tracking.PIPELINE_DESCRIPTION.split())
    assert "~0.98 on the calibrated mock" in text and "reconstruction of the observed spectrum" in text
    assert "true spectrum: the ceiling" not in text


def test_configure_leaves_the_environment_as_the_user_set_it(tmp_path, monkeypatch):
    """MLflow copies the URIs it is given into os.environ; the next project root in the same
    process must get its own store, not the first root's passed off as the user's choice."""
    import mlflow

    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    monkeypatch.delenv(tracking.REGISTRY_ENV, raising=False)
    first, second = tmp_path / "a", tmp_path / "b"
    assert tracking.configure(first) == f"sqlite:///{(first / 'mlflow.db').resolve()}"
    assert tracking.TRACKING_ENV not in os.environ and tracking.REGISTRY_ENV not in os.environ
    assert tracking.configure(second) == f"sqlite:///{(second / 'mlflow.db').resolve()}"
    assert mlflow.get_tracking_uri() == tracking.tracking_uri(second)

    monkeypatch.setenv(tracking.TRACKING_ENV, "http://127.0.0.1:5999")
    assert tracking.configure(first) == "http://127.0.0.1:5999"
    assert os.environ[tracking.TRACKING_ENV] == "http://127.0.0.1:5999"


def test_configure_points_the_registry_at_the_user_choice_or_the_tracking_store(tmp_path, monkeypatch):
    """The registry follows the tracking store for every scheme (an http server as well as sqlite),
    unless MLFLOW_REGISTRY_URI says otherwise; an earlier root's registry never lingers."""
    import mlflow

    monkeypatch.delenv(tracking.REGISTRY_ENV, raising=False)
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    tracking.configure(tmp_path / "a")
    assert mlflow.get_registry_uri() == tracking.tracking_uri(tmp_path / "a")
    monkeypatch.setenv(tracking.TRACKING_ENV, "http://127.0.0.1:5999")
    tracking.configure(tmp_path / "b")
    assert mlflow.get_registry_uri() == "http://127.0.0.1:5999"
    registry = f"sqlite:///{(tmp_path / 'registry.db').resolve()}"
    monkeypatch.setenv(tracking.REGISTRY_ENV, registry)
    tracking.configure(tmp_path / "b")
    assert mlflow.get_registry_uri() == registry and os.environ[tracking.REGISTRY_ENV] == registry
