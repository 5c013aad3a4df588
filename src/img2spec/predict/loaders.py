"""Fetch a bundle from a DVC revision or the MLflow registry into a local directory, and check it
against the hash recorded there (dvc.lock / .dvc md5 at that revision; the MLflow model version tag)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from .bundle import MANIFEST, BundleError, verify_bundle

log = logging.getLogger(__name__)

CACHE_ENV = "IMG2SPEC_CACHE"
MLFLOW_BUNDLE_ARTIFACT = "bundle"
"""Key of the bundle directory in the logged pyfunc model's artifacts."""
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/.*)?$")
REGISTRY_HASH_TAG = "bundle_hash"
"""Model version tag holding the bundle hash, set at registration (`registry.log_and_register`)."""
RUN_HASH_TAG = "img2spec.bundle_hash"
"""The same hash as a tag of the publish run (for `runs:/` URIs)."""
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
        _check_dvc_md5(fs, path, tmp, label)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %s into %s", label, dest)
    return dest, {"source": "dvc", "uri": label, "rev": rev or "HEAD", "repo": str(repo)}


def dvc_dir_md5(root: Path) -> str:
    """DVC's md5 of a directory (`<md5>.dir`, as dvc.lock records it), computed with dvc-data's own tree."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for file in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h = hashlib.md5()
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        tree.add(file.relative_to(root).parts, Meta(size=file.stat().st_size), HashInfo("md5", h.hexdigest()))
    tree.digest()
    return str(tree.hash_info.value)


def _check_dvc_md5(fs, path: str, local: Path, label: str) -> None:
    """The fetched directory must have the md5 that dvc.lock (or `<path>.dvc`) records at that revision."""
    info = fs.info(path)
    recorded = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not recorded:
        # not a DVC output at that revision: the files came from git, which checks its own content
        log.warning("%s: not tracked by DVC at that revision; no dvc.lock md5 to check it against", label)
        return
    got = dvc_dir_md5(local)
    if got != recorded:
        raise BundleError(
            f"{label}: the fetched files hash to md5 {got}, but dvc.lock at that revision records {recorded}; "
            "the DVC cache or remote holds a different or corrupt bundle"
        )


def resolve_registry_version(uri: str) -> dict[str, str]:
    """For `models:/name@alias` or `models:/name/N`: the registered name, version number and bundle hash tag."""
    import mlflow

    m = _MODELS_URI.match(uri)
    if not m:
        return {}
    client = mlflow.MlflowClient()
    if m["alias"]:
        mv = client.get_model_version_by_alias(m["name"], m["alias"])
    else:
        mv = client.get_model_version(m["name"], m["version"])
    out = {"registry_name": mv.name, "registry_version": str(mv.version)}
    if (mv.tags or {}).get(REGISTRY_HASH_TAG):
        out["registry_bundle_hash"] = str(mv.tags[REGISTRY_HASH_TAG])
    return out


def _recorded_mlflow_hash(uri: str, info: dict[str, str]) -> tuple[str | None, str]:
    """(hash recorded where `uri` points, where it was recorded); BundleError if a registry entry lacks it."""
    import mlflow

    if info.get("registry_version"):
        where = f"MLflow model version {info['registry_name']}/{info['registry_version']} tag {REGISTRY_HASH_TAG!r}"
        if not info.get("registry_bundle_hash"):
            raise BundleError(f"{uri}: {where} is missing; cannot verify the bundle (publish it again)")
        return info["registry_bundle_hash"], where
    m = _RUNS_URI.match(uri)
    if m:
        where = f"MLflow run {m['run_id']} tag {RUN_HASH_TAG!r}"
        tag = mlflow.MlflowClient().get_run(m["run_id"]).data.tags.get(RUN_HASH_TAG)
        if not tag:
            raise BundleError(f"{uri}: {where} is missing; cannot verify the bundle")
        return tag, where
    log.warning("%s: no registry record to check the bundle against (use models:/NAME@ALIAS)", uri)
    return None, ""


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
        expected, where = _recorded_mlflow_hash(uri, info)
        verify_bundle(bundle, expected_hash=expected, expected_from=where)
        rel = bundle.relative_to(tmp)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %s into %s", uri, dest)
    info.pop("registry_bundle_hash", None)
    return dest / rel, {"source": "mlflow", "uri": uri, **info}
