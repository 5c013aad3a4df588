"""`dvc repro evaluate` end to end on a tiny mock survey, in a copy of the tracked repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

METHODS = ("cnn", "knn_colour", "mean_spectrum", "pca_cnn", "vae_ceiling", "noise_floor")
OVERRIDE = {
    "data": {"cutout_size": 32},
    "mock": {"n_galaxies": 80, "n_workers": 1, "chunk_size": 40},
    "prepare": {"n_workers": 1},
    "vae": {"latent_dim": 4, "encoder_units": [64], "decoder_units": [64], "epochs": 2, "kl_warmup_epochs": 1,
            "patience": 2, "batch_size": 32},
    "cnn": {"filters": [8, 16], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32},
    "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 1},
}


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def tiny_repo(repo_root: Path, tmp_path: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    work = tmp_path / "repo"
    for rel in files:
        src = repo_root / rel
        if src.is_file():
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(_merge(params, OVERRIDE), sort_keys=False))
    shutil.rmtree(work / ".dvc", ignore_errors=True)
    return work


@pytest.mark.slow  # the whole DVC graph on a tiny mock (~2.5 min); test_dvc_deps.py guards the deps in the fast suite
def test_dvc_repro_evaluate(tiny_repo: Path, mlflow_uri: str):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "IMG2SPEC_NO_PROGRESS": "1"}
    dvc = [str(bin_dir / "dvc")]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=tiny_repo, env=env, check=True)
    proc = subprocess.run(dvc + ["repro", "evaluate"], cwd=tiny_repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tiny_repo / "metrics" / "evaluate.json").read_text())
    for method in METHODS:
        assert metrics["mean_deviation"][method]["n"] > 0, method
    for path in ("models/vae/decoder.keras", "models/cnn/cnn.keras", "models/cnn/pca/cnn.keras",
                 "data/latents/mu.npy", "reports/evaluate_objects.csv"):
        assert (tiny_repo / path).exists(), path
    # Every stage up to evaluate is recorded and up to date (a rerun would do nothing).
    again = subprocess.run(dvc + ["status", "evaluate"], cwd=tiny_repo, env=env, capture_output=True, text=True)
    assert "changed" not in again.stdout, again.stdout
    # ... until code a stage runs changes, even code it reaches only through imports.
    for rel, stage in (("src/img2spec/io/processed.py", "prepare"), ("src/img2spec/models/validation.py", "train_cnn"),
                       ("src/img2spec/metrics.py", "train_vae"), ("pipeline/_stage.py", "select")):
        path = tiny_repo / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        status = subprocess.run(dvc + ["status", stage], cwd=tiny_repo, env=env, capture_output=True, text=True).stdout
        path.write_text(original)
        assert f"{stage}:" in status and "changed deps" in status, (rel, status)
