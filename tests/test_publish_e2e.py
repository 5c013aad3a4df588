"""End to end (slow, ~5 min on 2 cores): `dvc repro publish` on a tiny mock survey in a copy of
the repo, then `img2spec predict` on the raw test cutouts reproduces the evaluate stage's D_i."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
TINY = {
    "mock": {"n_galaxies": 80},
    "data": {"cutout_size": 16},
    "vae": {"epochs": 2},
    "cnn": {"epochs": 2, "filters": [8, 16]},
}


def _copy_repo(src: Path, dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=src, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)


def test_repro_publish_then_predict_matches_evaluate(repo_root, tmp_path):
    work = tmp_path / "repo"
    _copy_repo(repo_root, work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "IMG2SPEC_NO_PROGRESS": "1", "IMG2SPEC_CACHE": str(tmp_path / "cache"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the copy's own mlflow.db
    run = lambda *cmd: subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0
    if not (work / ".dvc").is_dir():
        assert run(sys.executable, "-m", "dvc", "init", "-q").returncode == 0
    done = run(sys.executable, "-m", "dvc", "repro", "publish")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((work / "reports" / "publish.json").read_text())
    assert report["registry"]["version"] == "1"
    cat = pd.read_parquet(work / "data" / "processed" / "catalog.parquet")
    test = cat[cat.split == "test"]
    files = [str(work / "data" / "raw" / "images" / f"{o}.fits") for o in test.objid]
    out = tmp_path / "pred"
    pred = run(sys.executable, "-m", "img2spec.cli", "predict", *files, "--model", "models:/img2spec@champion",
               "--out", str(out), "--mags", "data/raw/photometry.csv")
    assert pred.returncode == 0, pred.stderr[-3000:]

    from img2spec.io.processed import ProcessedData
    from img2spec.io.sdss_spectrum import read_spectrum

    data = ProcessedData.open(work / "data" / "processed")
    evaluated = pd.read_csv(work / "reports" / "evaluate_objects.csv").set_index("objid")
    for idx, row in test.iterrows():
        spec = read_spectrum(out / f"spec-pred-{row.objid}.fits")
        good = data.ivar[idx] > 0
        d_i = np.mean(np.abs(spec.flux[good] / row.norm - data.flux[idx][good]) * np.sqrt(data.ivar[idx][good]))
        assert d_i == pytest.approx(evaluated.loc[row.objid, "D_cnn"], rel=1e-4)
