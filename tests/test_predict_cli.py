"""The command line's exit paths and the small things users hit:
`img2spec predict` with every input bad, `--sigma bogus`, `validate-params` on bad files,
`--version`, `--mags` as a deprecated alias, `--help` at 80 columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from img2spec.cli import app
from img2spec.config import params_from_dict
from img2spec.io.ps1_cutout import write_cutout
from img2spec.paths import Paths
from test_predict_support import SIZE, build_project, galaxy_cutout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root, n=4)
    build_bundle(params_from_dict({"publish": {"registry": False}}), Paths(root))
    return root, facts


def _predict(*args: str):
    return CliRunner().invoke(app, ["predict", *args])


def test_every_input_bad_exits_1_with_a_full_summary(project, tmp_path):
    root, _ = project
    bad = tmp_path / "bad"
    bad.mkdir()
    rng = np.random.default_rng(1)
    cut = galaxy_cutout(1, rng)
    del cut.data["y"]
    write_cutout(bad / "no_y.fits", cut)
    write_cutout(bad / "big.fits", galaxy_cutout(2, rng, size=SIZE + 8))
    (bad / "junk.fits").write_bytes(b"SIMPLE  = not really a FITS file")
    (bad / "notes.txt").write_text("not a cutout")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = _predict(str(bad), str(bad / "notes.txt"), str(tmp_path / "absent.fits"), str(tmp_path / "empty"),
                      "--model", str(root / "models" / "img2spec"), "--out", str(out),
                      "--params", str(tmp_path / "none.yaml"))
    assert result.exit_code == 1, result.output  # nothing predicted: a failure, but no traceback
    assert "Traceback" not in result.output
    report = json.loads((out / "summary.json").read_text())
    assert report["n_predicted"] == 0 and report["n_inputs"] == report["n_skipped"] == 6
    junk = next(s for s in report["skipped"] if s["file"].endswith("junk.fits"))
    assert report["skipped_by_reason"] == {"missing_band": 1, "wrong_shape": 1, "not_found": 1,
                                           "not_a_cutout": 1, "empty_directory": 1, junk["reason"]: 1}
    assert junk["reason"] in ("unreadable_cutout", "corrupt_image", "corrupt_file") and junk["detail"]
    assert not list(out.glob("spec-pred-*"))


def test_sigma_bogus_is_a_usage_error(project, tmp_path):
    root, facts = project
    result = _predict(str(facts["files"][0]), "--model", str(root / "models" / "img2spec"),
                      "--out", str(tmp_path / "o"), "--sigma", "bogus")
    assert result.exit_code == 2
    assert "'bogus'" in result.output and "linearised" in result.output and "sampled" in result.output
    assert not (tmp_path / "o").exists()  # refused before any work


def test_bad_catalogue_and_missing_bundle_exit_2(project, tmp_path):
    root, facts = project
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"id": [1]}).to_csv(cat, index=False)
    result = _predict(str(facts["files"][0]), "--model", str(root / "models" / "img2spec"),
                      "--out", str(tmp_path / "o"), "--catalogue", str(cat), "--params", str(tmp_path / "none.yaml"))
    assert result.exit_code == 2 and "objid" in result.output and "Traceback" not in result.output
    missing = _predict(str(facts["files"][0]), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2"))
    assert missing.exit_code == 2 and "bundle directory not found" in missing.output


def test_mags_is_a_deprecated_alias_of_catalogue(project, tmp_path):
    root, facts = project
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [facts["cutouts"][0].objid], "rKronMag": [16.5]}).to_csv(cat, index=False)
    result = _predict(str(facts["files"][0]), "--model", str(root / "models" / "img2spec"), "--out", str(tmp_path / "o"),
                      "--mags", str(cat), "--params", str(tmp_path / "none.yaml"))
    assert result.exit_code == 0, result.output
    assert "--mags is deprecated" in result.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["n_flux_calibrated"] == 1


@pytest.mark.parametrize("text, expected", [
    ("vae:\n  epochs: [oops\n", "not valid YAML"),
    ("vae:\n  epochz: 3\n", "vae.epochz: unknown key"),
    ("vae:\n  epochs: -3\n", "vae.epochs"),
    ("- a\n- b\n", "mapping"),
    (None, "not found"),
])
def test_validate_params_on_bad_files(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    result = CliRunner().invoke(app, ["validate-params", "--params", str(path)])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output


def test_validate_params_accepts_the_repo_file(repo_root):
    result = CliRunner().invoke(app, ["validate-params", "--params", str(repo_root / "params.yaml")])
    assert result.exit_code == 0 and "OK" in result.output


def test_version_flag():
    from img2spec import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"img2spec {__version__}"


@pytest.mark.parametrize("command", [[], ["predict"], ["validate-params"]])
def test_help_fits_80_columns(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert not any(ch in result.output for ch in "╭│╰")  # no boxed tables
    if command == ["predict"]:
        assert "--catalogue" in result.output and "--mags" not in result.output


@pytest.mark.parametrize("args, expected", [
    (["--model", "NOWHERE"], "bundle directory not found"),
    (["--table", "all.parquet"], "must end in .fits or .csv"),
    (["--no-per-object"], "nothing to write"),
    (["--catalogue", "missing.csv"], "--catalogue missing.csv: no such file"),
])
def test_predict_argument_errors_come_before_tensorflow(tmp_path, args, expected):
    """A mistyped option is refused in a fresh process that never imported TensorFlow (~10 s saved)."""
    import subprocess
    import sys

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    argv = ["predict", "x.fits", "--model", str(bundle), "--out", str(tmp_path / "o"), *args]
    code = ("import sys; from typer.testing import CliRunner; from img2spec.cli import app; "
            f"r = CliRunner().invoke(app, {argv!r}); print(r.exit_code, 'tensorflow' in sys.modules); print(r.output)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    first, _, output = run.stdout.partition("\n")
    assert first == "2 False", run.stdout + run.stderr
    assert expected in output and "Traceback" not in output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [[], ["predict"], ["survey"], ["tune"]])
def test_short_help_option(command):
    short = CliRunner().invoke(app, [*command, "-h"])
    assert short.exit_code == 0, short.output
    assert short.output == CliRunner().invoke(app, [*command, "--help"]).output and "Usage:" in short.output
