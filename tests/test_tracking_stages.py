"""The real train_vae / train_cnn / evaluate stages read back from the MLflow store: named mean
deviation metrics, data-version tags, runs that span their work, params limited to their sections."""

from __future__ import annotations

import json

import pytest
import yaml

from img2spec import tracking

from tracking_fixture import run_tiny_pipeline, tracking_store

# A training of the VAE and the CNN(s) plus a whole evaluate stage in the fixture (~20-30 s): run by `make test-slow`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    with tracking_store(root) as uri:
        run_tiny_pipeline(root, publish=False)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking.PIPELINE_EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    return root, runs


def test_train_and_evaluate_runs_carry_deviation_and_data_version(store):
    root, runs = store
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    processed = next(o["md5"] for s in lock["stages"].values() for o in s["outs"] if o["path"] == "data/processed")
    evaluate, train_cnn = runs["evaluate"], runs["train_cnn"]
    written = json.loads((root / "metrics" / "evaluate.json").read_text())["mean_deviation"]
    for method in ("cnn", "knn_colour", "mean_spectrum", "vae_ceiling", "noise_floor"):
        assert evaluate.data.metrics[f"mean_deviation_{method}"] == pytest.approx(written[method]["mean"])
        assert evaluate.data.metrics[f"mean_deviation_{method}_sem"] == pytest.approx(written[method]["sem"])
    trained = json.loads((root / "metrics" / "train_cnn.json").read_text())
    assert train_cnn.data.metrics["val_mean_deviation_cnn"] == pytest.approx(trained["cnn"]["val_mean_deviation"])
    for run in (runs["train_vae"], train_cnn, evaluate):
        assert run.data.tags[tracking.DATA_VERSION_TAG] == processed[:tracking.SHORT_HASH], run.info.run_name
        assert run.data.tags["img2spec.data.data/processed"] == processed
    assert evaluate.data.tags["img2spec.data.models/cnn"] and train_cnn.data.tags["img2spec.data.models/vae"]
    summary = json.loads((root / "metrics" / "summary.json").read_text())
    assert summary["mean_deviation_cnn"] == pytest.approx(written["cnn"]["mean"])


def test_one_parent_row_with_the_headline(store):
    _, runs = store
    parent = runs[next(name for name in runs if name.startswith("repro "))]
    assert parent.data.tags[tracking.ROLE_TAG] == "pipeline"
    assert parent.data.metrics["mean_deviation_cnn"] == runs["evaluate"].data.metrics["mean_deviation_cnn"]
    assert parent.data.metrics["val_mean_deviation_cnn"] == runs["train_cnn"].data.metrics["val_mean_deviation_cnn"]
    for stage in ("train_vae", "train_cnn", "evaluate"):
        assert runs[stage].data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_runs_span_their_work_and_log_their_sections(store):
    root, runs = store
    evaluate = runs["evaluate"]
    written_ms = int((root / "metrics" / "evaluate.json").stat().st_mtime * 1000)
    assert evaluate.info.start_time <= written_ms <= evaluate.info.end_time  # opened before the work
    model_ms = int((root / "models" / "cnn" / "cnn.keras").stat().st_mtime * 1000)
    assert runs["train_cnn"].info.start_time <= model_ms <= runs["train_cnn"].info.end_time
    assert set(runs["train_vae"].data.params) and all(k.startswith("vae.") for k in runs["train_vae"].data.params)
    # train_cnn logs its dvc.yaml params sections: cnn and measure (the windows of the CNN's measurement term)
    cnn_params = runs["train_cnn"].data.params
    cnn_sections = tuple(f"{s}." for s in tracking.stage_sections("train_cnn", root))
    assert any(k.startswith("cnn.") for k in cnn_params) and all(k.startswith(cnn_sections) for k in cnn_params)
    sections = tuple(f"{s}." for s in tracking.stage_sections("evaluate", root))
    assert evaluate.data.params and all(k.startswith(sections) for k in evaluate.data.params)
