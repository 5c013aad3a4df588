"""Tiny pipeline executions logged through the project's real stage code (no DVC), for the
tests that read the MLflow store back (tests/test_tracking*.py, tests/test_mlflow*.py)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

from img2spec.config import params_from_dict
from img2spec.paths import Paths

TINY: dict[str, Any] = {
    "vae": {"latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 2, "kl_warmup_epochs": 1,
            "patience": 2, "batch_size": 32},
    "cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32, "train_pca": False},
    "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 1, "hist_bins": 10},
    "publish": {"n_samples": 4, "batch_size": 16},
}
SECRET = "hunter2-not-for-mlflow"
STORAGE_WITH_PASSWORD = f"postgresql+psycopg2://optuna:{SECRET}@db.example.org:5432/optuna"


@contextlib.contextmanager
def tracking_store(root: Path):
    """MLFLOW_TRACKING_URI set to a sqlite store under `root` for the block (the previous value restored); yields the URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _dir_md5(path: Path) -> str:
    """A stand-in for DVC's directory hash (content of every file), as dvc.lock would record it."""
    digest = hashlib.md5()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest() + ".dir"


def write_lock(root: Path, outs: list[str]) -> None:
    """dvc.lock recording `outs` the way `dvc repro` does after each stage."""
    lock = {"schema": "2.0", "stages": {Path(o).name: {"outs": [{"path": o, "md5": _dir_md5(root / o)}]}
                                        for o in outs if (root / o).exists()}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


def run_tiny_pipeline(root: Path, override: dict | None = None, *, publish: bool = True, n: int = 90,
                      seed: int = 0) -> dict[str, Any]:
    """prepare's output (synthetic) -> train_vae -> encode -> train_cnn -> evaluate [-> publish],
    each stage through its library entry point, tracked to MLFLOW_TRACKING_URI (must be set)."""
    assert os.environ.get("MLFLOW_TRACKING_URI"), "set MLFLOW_TRACKING_URI to an isolated store"
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage
    from img2spec.prep.synthetic import write_synthetic_processed

    paths = Paths(root)
    if not paths.processed.exists():
        write_synthetic_processed(paths.processed, n=n, seed=seed)
    params = params_from_dict(merged(TINY, {"publish": {"registry": publish}, **(override or {})}))
    write_lock(root, ["data/processed"])
    train_vae_stage(params, paths)
    encode_stage(params, paths)
    write_lock(root, ["data/processed", "models/vae", "data/latents"])
    train_cnn_stage(params, paths)
    write_lock(root, ["data/processed", "models/vae", "data/latents", "models/cnn"])
    result = {"evaluate": evaluate_stage(params, paths), "params": params}
    if publish:
        from img2spec.predict.publish import publish as publish_stage

        result["publish"] = publish_stage(params, paths)
    return result
