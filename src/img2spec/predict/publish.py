"""The `publish` stage: build models/img2spec/ and register it in MLflow."""

from __future__ import annotations

import logging
from typing import Any

from ..config import Params
from ..io.atomic import write_json
from ..paths import Paths
from .bundle import build_bundle

log = logging.getLogger(__name__)


def publish(params: Params, paths: Paths) -> dict[str, Any]:
    """Build the bundle; if `publish.registry`, log it to MLflow and move the alias. Writes reports/publish.json.

    With the registry on, the publish run is opened before the bundle is built (it spans the work).
    """
    if not params.publish.registry:
        return _publish(params, paths)
    from .. import tracking
    from .registry import REGISTRY_INPUTS

    with tracking.start_run("publish", params, inputs=list(REGISTRY_INPUTS), root=paths.root):
        return _publish(params, paths)


def _publish(params: Params, paths: Paths) -> dict[str, Any]:
    manifest = build_bundle(params, paths)
    log.info("bundle %s written (hash %s)", paths.bundle_dir, manifest["bundle_hash"][:16])
    report: dict[str, Any] = {
        "bundle": str(paths.bundle_dir),
        "bundle_hash": manifest["bundle_hash"],
        "bytes": sum(int(f["bytes"]) for f in manifest["files"].values()),
        "registry": None,
    }
    if params.publish.registry:
        from .registry import log_and_register

        report["registry"] = log_and_register(paths.bundle_dir, manifest, params, paths)
    else:
        log.info("publish.registry is false: bundle not logged to MLflow")
    write_json(paths.reports / "publish.json", report)
    return report
