"""Log a bundle to MLflow as a pyfunc model, register it and move the alias to it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Params
from ..paths import Paths
from .. import tracking
from ..tracking import start_run
from .loaders import MLFLOW_BUNDLE_ARTIFACT
from .version_notes import previous_version, version_description

log = logging.getLogger(__name__)

REGISTRY_INPUTS = ("models/vae", "models/cnn", "data/processed")
"""Pipeline outputs whose DVC hashes tag the publish run (data version of the model)."""


def _pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc model, given explicitly so MLflow does not infer them (slow)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = [f"img2spec=={__version__}"]
    for pkg in ("tensorflow", "keras", "numpy", "astropy", "mlflow", "onnxruntime"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return reqs


def log_and_register(bundle_dir: Path, manifest: dict[str, Any], params: Params, paths: Paths) -> dict[str, Any]:
    """Log `bundle_dir` as a pyfunc model, register it under `publish.model_name`, point `publish.alias` at it."""
    import mlflow

    from .pyfunc import BundleModel, signature

    name, alias = params.publish.model_name, params.publish.alias
    tracking.configure(paths.root)  # the registry of this root, not one an earlier call in the process set
    sig = signature(
        tuple(manifest["input"]["shape"]), int(manifest["output"]["n_pix"]),
        params.publish.n_samples, params.publish.seed, params.publish.sigma_method,
    )
    with start_run(
        "publish", params, inputs=list(REGISTRY_INPUTS), root=paths.root,
        tags={"img2spec.bundle_hash": manifest["bundle_hash"]},
    ) as run:
        mlflow.log_metrics(tracking.deviation_metrics(manifest.get("metrics") or {}))
        mlflow.log_dict(manifest, "bundle.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BundleModel(),
            artifacts={MLFLOW_BUNDLE_ARTIFACT: str(Path(bundle_dir).resolve())},
            signature=sig,
            pip_requirements=_pip_requirements(),
            registered_model_name=name,
            metadata={"bundle_hash": manifest["bundle_hash"], "img2spec_version": manifest["version"]},
        )
        run_id = run.info.run_id
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "bundle_hash", manifest["bundle_hash"])
    client.set_model_version_tag(name, version, "git_commit", manifest.get("git_commit", "unknown"))
    published = client.get_run(run_id).data
    description = version_description(manifest, published.params, published.tags,
                                      previous_version(client, name, version))
    client.update_model_version(name, version, description=description)
    log.info("registered %s version %s (alias %s) from run %s", name, version, alias, run_id)
    return {
        "model_name": name, "version": version, "alias": alias, "run_id": run_id,
        "model_uri": f"models:/{name}@{alias}", "logged_model_uri": info.model_uri,
    }
