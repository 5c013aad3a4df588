"""Kill a real fetch_spectra stage process part-way, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fake_services import FakeServices, make_catalogue  # noqa: E402

from img2spec.paths import Paths  # noqa: E402
from img2spec.sources.sdss import stages  # noqa: E402

N_OBJECTS = 40
LATENCY_S = 0.05  # 40 objects / 2 connections * 50 ms: about 1 s of fetching to interrupt


def _outputs(paths: Paths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(paths.spectra_dir.iterdir())}


def test_killed_fetch_resumes_to_identical_outputs(repo_root, tmp_path):
    with FakeServices(make_catalogue(N_OBJECTS), latency_s=LATENCY_S) as svc:
        params = svc.params(http={"connections": 2})
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))

        reference = Paths(tmp_path / "reference")
        stages.select(params, reference)
        stages.fetch_spectra(params, reference)

        killed = Paths(tmp_path / "killed")
        stages.select(params, killed)
        env = {**os.environ, "PYTHONPATH": str(repo_root / "src"), "IMG2SPEC_NO_PROGRESS": "1"}
        proc = subprocess.Popen(
            [sys.executable, str(repo_root / "pipeline" / "fetch_spectra.py"),
             "--params", str(params_file), "--root", str(killed.root)],
            cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if killed.spectra_dir.is_dir() and len(list(killed.spectra_dir.glob("spec-*.fits"))) >= 8:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"stage finished before it could be killed: {proc.stderr.read()!r}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        n_before = len(list(killed.spectra_dir.glob("spec-*.fits")))
        assert 8 <= n_before < N_OBJECTS

        report = stages.fetch_spectra(params, killed)
        assert report["failed"] == 0
        assert report["present"] == n_before and report["fetched"] == N_OBJECTS - n_before
        assert _outputs(killed) == _outputs(reference)  # byte-identical, no temporaries left
        assert len(_outputs(killed)) == N_OBJECTS
