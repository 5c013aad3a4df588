"""Fetch a bundle from a DVC revision or the MLflow registry into a local directory."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from .bundle import MANIFEST, BundleError

log = logging.getLogger(__name__)

CACHE_ENV = "IMG2SPEC_CACHE"
MLFLOW_BUNDLE_ARTIFACT = "bundle"
"""Key of the bundle directory in the logged pyfunc model's artifacts."""
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where fetched bundles are kept: argument, $IMG2SPEC_CACHE, else ~/.cache/img2spec."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "img2spec"))


def _key(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def _fresh_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))


def _swap_in(tmp: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def fetch_dvc_bundle(
    *, rev: str | None, repo: str | None, path: str = "models/img2spec", cache_dir: str | Path | None = None
) -> tuple[Path, dict[str, str]]:
    """Download `path` at `rev` of a DVC repo (git URL or local path) through `dvc.api.DVCFileSystem`.

    Works without cloning: DVC reads the .dvc/dvc.lock pointers at that revision and
    fetches the files from the repo's cache or its default remote.
    """
    from dvc.api import DVCFileSystem

    repo = repo or "."
    label = f"{repo}@{rev or 'HEAD'}:{path}"
    dest = cache_root(cache_dir) / "dvc" / _key(repo, rev or "", path)
    tmp = _fresh_dir(dest)
    try:
        fs = DVCFileSystem(repo, rev=rev)
        if not fs.isdir(path):
            raise BundleError(f"{label}: no directory {path!r} at that revision (was the publish stage run and committed?)")
        fs.get(path, str(tmp), recursive=True)
        # fsspec puts the directory's contents in tmp, or tmp/<basename> on some versions
        inner = tmp / Path(path).name
        if not (tmp / MANIFEST).exists() and (inner / MANIFEST).exists():
            for child in inner.iterdir():
                os.replace(child, tmp / child.name)
            inner.rmdir()
        if not (tmp / MANIFEST).exists():
            raise BundleError(f"{label}: fetched, but it has no {MANIFEST}; not an img2spec bundle")
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %s into %s", label, dest)
    return dest, {"source": "dvc", "uri": label, "rev": rev or "HEAD", "repo": str(repo)}


def resolve_registry_version(uri: str) -> dict[str, str]:
    """For `models:/name@alias` or `models:/name/N`: the registered name and version number."""
    import mlflow

    m = _MODELS_URI.match(uri)
    if not m:
        return {}
    client = mlflow.MlflowClient()
    if m["alias"]:
        mv = client.get_model_version_by_alias(m["name"], m["alias"])
    else:
        mv = client.get_model_version(m["name"], m["version"])
    return {"registry_name": mv.name, "registry_version": str(mv.version)}


def fetch_mlflow_bundle(uri: str, cache_dir: str | Path | None = None) -> tuple[Path, dict[str, str]]:
    """Download the bundle logged with a pyfunc model (`models:/img2spec@champion`, `runs:/...`)."""
    import mlflow

    from ..tracking import configure

    configure()
    info = resolve_registry_version(uri)
    dest = cache_root(cache_dir) / "mlflow" / _key(mlflow.get_tracking_uri(), uri, info.get("registry_version", ""))
    tmp = _fresh_dir(dest)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
        found = sorted(p.parent for p in local.rglob(MANIFEST))
        if not found:
            raise BundleError(f"{uri}: the logged model has no {MANIFEST}; not an img2spec bundle")
        bundle = found[0]
        rel = bundle.relative_to(tmp)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %s into %s", uri, dest)
    return dest / rel, {"source": "mlflow", "uri": uri, **info}
