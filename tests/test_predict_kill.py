"""kill -9 of `predict --table --plot` with writer processes: the writers die with
it, and the next run removes the temporaries it left (table, FITS, PNG) and finishes the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from img2spec.config import params_from_dict
from img2spec.paths import Paths
from test_predict_support import build_project

pytestmark = pytest.mark.slow  # two predict processes (TensorFlow start-up each): 1-4 min on 2 shared cores
N = 24
DEADLINE_S = 240.0
ORPHAN_WAIT_S = 10.0

# run_predict with the writer pool forced on for a small input (the CLI starts it above 64 inputs)
DRIVER = """
import sys
import img2spec.predict.runner as runner
from img2spec.predict import Predictor, RunOptions, run_predict
runner.WRITER_POOL_MIN = 0
images, bundle, out = sys.argv[1:4]
run_predict(Predictor.from_path(bundle), [images],
            RunOptions(out_dir=out, table=f"{out}/all.fits", plot=True, n_writers=2, batch_size=4))
"""


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name) if out.is_dir() else []


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # exited (or a zombie) meanwhile
        return ""


def test_kill_9_leaves_no_orphans_and_the_rerun_cleans_up(tmp_path):
    from img2spec.predict.bundle import build_bundle

    root = tmp_path / "proj"
    build_project(root, n=N)
    build_bundle(params_from_dict({"publish": {"registry": False}}), Paths(root))
    images, bundle, out = root / "data" / "raw" / "images", root / "models" / "img2spec", tmp_path / "out"
    env = {**os.environ, "IMG2SPEC_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(images), str(bundle), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    try:
        t0 = time.monotonic()
        children: list[psutil.Process] = []
        # wait until the writers run and the table is being written (its temporary exists)
        while time.monotonic() - t0 < DEADLINE_S:
            children = [c for c in parent.children(recursive=True) if "spawn_main" in _cmdline(c)]
            if len(children) >= 2 and any(n.startswith(".all.fits") for n in _temps(out)) \
                    and list(out.glob("spec-pred-*.png")):
                break
            assert proc.poll() is None, "predict ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("writer processes never started")
        all_children = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    gone, alive = psutil.wait_procs(all_children, timeout=ORPHAN_WAIT_S)
    assert not alive, f"orphans after kill -9: {[(p.pid, _cmdline(p)) for p in alive]}"
    assert any(n.startswith(".all.fits") for n in _temps(out)), "the kill left the table's temporary"
    assert not (out / "all.fits").exists() and not (out / "summary.json").exists()

    rerun = subprocess.run([sys.executable, "-c", DRIVER, str(images), str(bundle), str(out)], env=env,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _temps(out) == []
    report = json.loads((out / "summary.json").read_text())
    assert report["n_predicted"] == N and report["stale_temporaries_removed"] >= 1
    assert len(list(out.glob("spec-pred-*.fits"))) == N and len(list(out.glob("spec-pred-*.png"))) == N
    assert (out / "all.fits").is_file()
