"""publish: the bundle (contents, hashes, idempotence), MLflow registry + alias, DVC revision load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from img2spec.config import Params, params_from_dict
from img2spec.paths import Paths
from test_predict_support import N_PIX, SIZE, build_project



@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root)
    return root, facts


def _params(**publish) -> Params:
    return params_from_dict({"publish": {"n_samples": 8, "batch_size": 4, **publish}})


def test_bundle_contents_hashes_and_card(project):
    from img2spec.predict.bundle import build_bundle, read_manifest, verify_bundle

    root, facts = project
    manifest = build_bundle(_params(registry=False), Paths(root))
    bundle = root / "models" / "img2spec"
    for name in ("cnn.keras", "decoder.keras", "image_scaling.json", "wave.npy", "params.yaml",
                 "metrics.json", "bundle.json", "README.md", "vae.json", "cnn.json"):
        assert (bundle / name).is_file(), name
    # the bundle hash is the sha256 of bundle.json itself, recorded outside it (sidecar, sha256sum format)
    assert read_manifest(bundle) == manifest and "bundle_hash" not in json.loads((bundle / "bundle.json").read_text())
    assert manifest["bundle_hash"] == hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest()
    assert (bundle / "bundle.sha256").read_text() == f"{manifest['bundle_hash']}  bundle.json\n"
    assert verify_bundle(bundle) == manifest["bundle_hash"]
    assert manifest["input"]["shape"] == [SIZE, SIZE, 5]
    assert manifest["output"]["n_pix"] == N_PIX
    assert manifest["normalisation"]["band"] == "r"
    assert manifest["normalisation"]["wavelength_A"] == pytest.approx(6201.2)
    # limits of validity come from the training split only
    import pandas as pd

    cat = pd.read_parquet(root / "data" / "processed" / "catalog.parquet")
    train = cat[cat.split == "train"]
    assert manifest["validity"]["z"]["max"] == pytest.approx(train.z.max())
    assert manifest["validity"]["mag"]["r"]["min"] == pytest.approx(train.mag_r.min())
    assert manifest["validity"]["n_train"] == len(train)
    card = (bundle / "README.md").read_text()
    assert f"{train.z.max():.3f}" in card and "kNN in PS1 colour space" in card
    assert manifest["metrics"]["cnn"]["mean"] == 1.5
    np.testing.assert_allclose(np.load(bundle / "wave.npy"), facts["wave"])


def test_rebuild_is_idempotent_and_corruption_is_caught(project, tmp_path):
    from img2spec.predict.bundle import BundleError, build_bundle, verify_bundle

    root, _ = project
    first = build_bundle(_params(registry=False), Paths(root), tmp_path / "b")
    second = build_bundle(_params(registry=False), Paths(root), tmp_path / "b")
    assert first["bundle_hash"] == second["bundle_hash"]
    assert not list(tmp_path.glob(".b.*")), "no temporary directories left behind"
    changed = build_bundle(_params(registry=False, n_samples=9), Paths(root), tmp_path / "c")
    assert changed["bundle_hash"] != first["bundle_hash"]  # params are part of the payload
    with open(tmp_path / "b" / "wave.npy", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="wave.npy"):
        verify_bundle(tmp_path / "b")


def test_edited_manifest_fails_to_load_and_changes_the_hash(project, tmp_path):
    """Editing inference.sigma_scale in bundle.json (0.496 -> 50) must not load silently."""
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import BundleError, build_bundle

    root, _ = project
    built = build_bundle(_params(registry=False), Paths(root), tmp_path / "b")
    manifest_file = tmp_path / "b" / "bundle.json"
    ok = Predictor.from_path(tmp_path / "b")
    assert ok.bundle_hash == built["bundle_hash"] and ok.header()["MODELHSH"][0] == built["bundle_hash"][:16]
    edited = json.loads(manifest_file.read_text())
    edited["inference"]["sigma_scale"] = 50.0
    manifest_file.write_text(json.dumps(edited, indent=2) + "\n")
    with pytest.raises(BundleError, match=r"bundle\.json.*bundle\.sha256"):
        Predictor.from_path(tmp_path / "b")
    # rewriting the sidecar too passes the local check, but the hash (MODELHSH) is no longer the published one
    sidecar = tmp_path / "b" / "bundle.sha256"
    sidecar.write_text(f"{hashlib.sha256(manifest_file.read_bytes()).hexdigest()}  bundle.json\n")
    forged = Predictor.from_path(tmp_path / "b")
    assert forged.bundle_hash != built["bundle_hash"] and forged.sigma_scale == 50.0
    # ...which a check against the recorded hash catches
    from img2spec.predict.bundle import verify_bundle

    with pytest.raises(BundleError, match="registry tag"):
        verify_bundle(tmp_path / "b", expected_hash=built["bundle_hash"], expected_from="registry tag")
    sidecar.unlink()
    with pytest.raises(BundleError, match="bundle.sha256: missing"):
        Predictor.from_path(tmp_path / "b")


def test_missing_model_names_the_file(project, tmp_path):
    from img2spec.predict.bundle import BundleError, build_bundle

    root, _ = project
    other = tmp_path / "proj"
    shutil.copytree(root, other)
    (other / "models" / "cnn" / "cnn.keras").unlink()
    with pytest.raises(BundleError, match="cnn.keras"):
        build_bundle(_params(registry=False), Paths(other))


def test_registry_alias_load_equals_local_bundle(project, mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    from img2spec.predict import Predictor
    from img2spec.predict.publish import publish

    root, facts = project
    monkeypatch.setenv("IMG2SPEC_CACHE", str(tmp_path / "cache"))
    params = _params()
    first = publish(params, Paths(root))
    assert first["registry"]["version"] == "1"
    second = publish(params, Paths(root))  # a rerun registers a new version and moves the alias
    assert second["registry"]["version"] == "2"
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias("img2spec", "champion").version) == "2"
    assert json.loads((root / "reports" / "publish.json").read_text())["registry"]["version"] == "2"

    local = Predictor.from_path(root / "models" / "img2spec")
    remote = Predictor.from_mlflow("models:/img2spec@champion")
    assert remote.provenance["registry_version"] == "2"
    assert remote.bundle_hash == local.bundle_hash
    assert remote.runtime == "onnx"  # the exported graphs are logged with the bundle (and hashed with it)
    # the registry records the hash of bundle.json at registration ...
    assert client.get_model_version("img2spec", "2").tags["bundle_hash"] == local.bundle_hash
    a, b = local.predict(facts["images"]), remote.predict(facts["images"])
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.sigma, b.sigma)

    # the plain pyfunc interface (what `mlflow models serve` would call) agrees too
    model = mlflow.pyfunc.load_model("models:/img2spec@champion")
    out = model.predict(facts["images"])
    np.testing.assert_allclose(out["flux"], a.flux, rtol=1e-6)
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] in ([-1, SIZE, SIZE, 5], (-1, SIZE, SIZE, 5))

    from typer.testing import CliRunner

    from img2spec.cli import app

    bad = CliRunner().invoke(app, ["predict", str(root / "data" / "raw" / "images"), "--model",
                                   "models:/img2spec@nope", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "cannot load model" in bad.output

    # ... and a bundle that does not match that record is refused, naming the record
    from img2spec.predict.bundle import BundleError

    client.set_model_version_tag("img2spec", "2", "bundle_hash", "0" * 64)
    with pytest.raises(BundleError, match=r"bundle\.json.*differs from 000000.*img2spec/2 tag 'bundle_hash'"):
        Predictor.from_mlflow("models:/img2spec@champion")
    client.delete_model_version_tag("img2spec", "2", "bundle_hash")
    with pytest.raises(BundleError, match="tag 'bundle_hash' is missing"):
        Predictor.from_mlflow("models:/img2spec/2")
    assert Predictor.from_mlflow("models:/img2spec/1").bundle_hash == local.bundle_hash  # untouched version
    unreg = CliRunner().invoke(app, ["predict", str(root / "data" / "raw" / "images"), "--model",
                                     "models:/img2spec/2", "--out", str(tmp_path / "o2")])
    assert unreg.exit_code == 2 and "bundle_hash" in unreg.output and not (tmp_path / "o2").exists()


def _git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_dvc_revision_load_equals_local_bundle(project, tmp_path):
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root, facts = project
    repo = tmp_path / "repo"
    repo.mkdir()
    build_bundle(_params(registry=False), Paths(root), repo / "models" / "img2spec")
    dvc = [sys.executable, "-m", "dvc"]
    _git(repo, "init", "-q")
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True, capture_output=True)
    subprocess.run([*dvc, "add", "-q", "models/img2spec"], cwd=repo, check=True, capture_output=True)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "bundle")
    _git(repo, "tag", "v0.1")
    shutil.rmtree(repo / "models" / "img2spec")  # only the DVC cache holds it now

    remote = Predictor.from_dvc("v0.1", repo=str(repo), cache_dir=tmp_path / "cache")
    build_bundle(_params(registry=False), Paths(root), tmp_path / "local")
    local = Predictor.from_path(tmp_path / "local")
    assert remote.provenance["source"] == "dvc" and remote.provenance["rev"] == "v0.1"
    assert remote.bundle_hash == local.bundle_hash
    np.testing.assert_array_equal(remote.predict(facts["images"]).flux, local.predict(facts["images"]).flux)

    # a DVC cache whose bundle.json differs from what the revision's .dvc/dvc.lock md5 records is refused
    from img2spec.predict.bundle import BundleError

    manifest = (tmp_path / "local" / "bundle.json").read_bytes()
    cached = repo / ".dvc" / "cache" / "files" / "md5"
    target = next(p for p in cached.rglob("*") if p.is_file() and p.read_bytes() == manifest)
    target.chmod(0o644)
    target.write_bytes(manifest.replace(b'"sigma_scale": 1.0', b'"sigma_scale": 50.0'))
    with pytest.raises(BundleError, match="dvc.lock at that revision records"):
        Predictor.from_dvc("v0.1", repo=str(repo), cache_dir=tmp_path / "cache2")


def test_publish_command_writes_the_bundle_and_names_a_missing_stage(project, tmp_path):
    from typer.testing import CliRunner

    from img2spec.cli import app

    root, _ = project
    params_file = tmp_path / "params.yaml"
    params_file.write_text("publish:\n  registry: false\n  n_samples: 4\n")
    result = CliRunner().invoke(app, ["publish", "--params", str(params_file), "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["registry"] is None
    assert json.loads((root / "reports" / "publish.json").read_text())["bundle_hash"] == \
        json.loads(result.output)["bundle_hash"]
    # nothing to publish from: a clear error, not a traceback
    empty = CliRunner().invoke(app, ["publish", "--params", str(params_file), "--root", str(tmp_path)])
    assert empty.exit_code == 2 and "prepare stage" in empty.output


@pytest.mark.slow  # the stage script in a fresh process (TensorFlow, MLflow): ~40 s on 2 busy cores
def test_publish_command_and_stage_script(project, tmp_path, repo_root):
    from typer.testing import CliRunner

    from img2spec.cli import app

    root, _ = project
    params_file = tmp_path / "params.yaml"
    params_file.write_text("publish:\n  registry: false\n  n_samples: 4\n")
    result = CliRunner().invoke(app, ["publish", "--params", str(params_file), "--root", str(root)])
    assert result.exit_code == 0, result.output
    first = json.loads((root / "models" / "img2spec" / "bundle.json").read_text())
    first_export = json.loads((root / "models" / "img2spec" / "onnx.json").read_text())
    script = subprocess.run(
        [sys.executable, str(repo_root / "pipeline" / "publish.py"), "--params", str(params_file), "--root", str(root)],
        capture_output=True, text=True,
    )
    assert script.returncode == 0, script.stderr
    second = json.loads((root / "models" / "img2spec" / "bundle.json").read_text())
    second_export = json.loads((root / "models" / "img2spec" / "onnx.json").read_text())
    # The same bundle, but for the export's recorded Keras-vs-ONNX difference: Keras' last bits depend
    # on the process's thread pools (on some CPUs the command and a fresh process differ).
    assert {k: (first[k], second.get(k)) for k in first
            if first[k] != second.get(k) and k not in ("files", "payload_hash")} == {}
    assert {f for f in first["files"] if first["files"][f] != second["files"].get(f)} <= {"onnx.json"}
    assert {k: v for k, v in first_export.items() if k != "max_abs_diff"} == \
        {k: v for k, v in second_export.items() if k != "max_abs_diff"}
    assert max(second_export["max_abs_diff"].values()) < 1e-4
    # the stage's report names the bundle it wrote (the manifest's sha256, as `read_manifest` hashes it)
    written = hashlib.sha256((root / "models" / "img2spec" / "bundle.json").read_bytes()).hexdigest()
    assert json.loads((root / "reports" / "publish.json").read_text())["bundle_hash"] == written


def test_bundle_carries_the_sigma_calibration(project, tmp_path):
    """metrics/evaluate.json's sigma_scale reaches the bundle and scales every predicted sigma."""
    from img2spec.models.inference import load_models, predict_spectra
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root, facts = project
    work = tmp_path / "proj"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("mlruns", "mlartifacts", "*.db"))
    metrics_file = work / "metrics" / "evaluate.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["sigma_scale"] = {"cnn": {"scale": 0.4, "sigma_method": "linearised", "fitted_on": "val"}}
    metrics_file.write_text(json.dumps(metrics))
    build_bundle(_params(registry=False), Paths(work))
    p = Predictor.from_path(work / "models" / "img2spec", runtime="tensorflow")  # bit-equal to Keras below
    assert p.sigma_scale == 0.4 and p.header()["SIGSCALE"][0] == 0.4
    assert "times 0.400" in (work / "models" / "img2spec" / "README.md").read_text()
    cnn, decoder = load_models(work / "models" / "vae", work / "models" / "cnn")[:2]
    raw = predict_spectra(cnn, decoder, facts["images"], batch_size=4)
    np.testing.assert_allclose(p.predict(facts["images"]).sigma, 0.4 * raw.sigma, rtol=1e-6)
    # another method gets no factor (it was fitted for linearised), per call or as the default
    sampled = predict_spectra(cnn, decoder, facts["images"], batch_size=4, sigma_method="sampled", n_samples=8)
    np.testing.assert_array_equal(p.predict(facts["images"], sigma_method="sampled").sigma, sampled.sigma)
    q = p.with_options(sigma_method="sampled")
    assert q.header()["SIGMETH"][0] == "sampled" and q.header()["SIGSCALE"][0] == 1.0 and p.sigma_scale == 0.4
    np.testing.assert_array_equal(q.predict(facts["images"]).sigma, sampled.sigma)
    # a scale fitted for another sigma method is not applied
    metrics["sigma_scale"]["cnn"]["sigma_method"] = "sampled"
    metrics_file.write_text(json.dumps(metrics))
    build_bundle(_params(registry=False), Paths(work))
    assert Predictor.from_path(work / "models" / "img2spec").sigma_scale == 1.0
