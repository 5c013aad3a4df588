"""MLflow tracking: one place that knows the URI, experiment names and standard tags.

Tracking URI: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<root>/mlflow.db` with
artifacts in `<root>/mlartifacts/`. One experiment per stage (`img2spec/<stage>`).
Every run is tagged with the git commit, the DVC data version of its inputs and a
`pipeline_run` id shared by all stages of one `dvc repro` (same commit + params),
so the MLflow UI can compare them side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import yaml

from .config import Params, flatten

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "img2spec"
PIPELINE_RUN_TAG = "img2spec.pipeline_run"
PIPELINE_RUN_ENV = "IMG2SPEC_PIPELINE_RUN"


def tracking_uri(root: str | Path = ".") -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def artifact_root(root: str | Path = ".") -> Path:
    return (Path(root) / "mlartifacts").resolve()


def configure(root: str | Path = ".") -> str:
    """Point MLflow at the project's tracking store; returns the URI."""
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite"):
        mlflow.set_registry_uri(uri)
    return uri


def experiment(stage: str, root: str | Path = ".") -> str:
    """Create (once) and activate the experiment for `stage`; returns its id."""
    import mlflow

    configure(root)
    name = f"{EXPERIMENT_PREFIX}/{stage}"
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if tracking_uri(root).startswith("sqlite"):
            location = (artifact_root(root) / stage).as_uri()
        exp_id = client.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit(root: str | Path = ".") -> tuple[str, bool]:
    """(commit sha or 'unknown', working tree dirty?)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def pipeline_run_id(root: str | Path = ".") -> str:
    """Shared id of one `dvc repro`: env override, else hash of commit + params.yaml."""
    env = os.environ.get(PIPELINE_RUN_ENV)
    if env:
        return env
    sha, _ = git_commit(root)
    params_file = Path(root) / "params.yaml"
    text = params_file.read_bytes() if params_file.exists() else b""
    return hashlib.sha1(sha.encode() + text).hexdigest()[:12]


def data_version(paths: list[str | Path], root: str | Path = ".") -> dict[str, str]:
    """DVC hashes of `paths` as recorded in dvc.lock outputs (the data version of inputs)."""
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    recorded: dict[str, str] = {}
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            recorded[str(out["path"])] = str(out.get("md5") or out.get("hash") or "")
    return {str(p): recorded[str(p)] for p in paths if str(p) in recorded}


@contextlib.contextmanager
def start_run(
    stage: str,
    params: Params | None = None,
    *,
    inputs: list[str | Path] | None = None,
    run_name: str | None = None,
    nested: bool = False,
    root: str | Path = ".",
    tags: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run for `stage` with the standard tags and all params logged."""
    import mlflow

    if not nested:
        experiment(stage, root)
    sha, dirty = git_commit(root)
    all_tags = {
        "img2spec.stage": stage,
        "mlflow.source.git.commit": sha,
        "img2spec.git_dirty": str(dirty),
        PIPELINE_RUN_TAG: pipeline_run_id(root),
    }
    for path, md5 in data_version(inputs or [], root).items():
        all_tags[f"img2spec.data.{path}"] = md5
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    with mlflow.start_run(run_name=run_name or stage, nested=nested, tags=all_tags) as run:
        if params is not None:
            flat = {k: (str(v) if isinstance(v, (list, tuple)) else v) for k, v in flatten(params).items()}
            mlflow.log_params(flat)
        yield run
