"""`make ui` prints the comparison view's link only once the server answers (a link printed
before the server is up leads to a browser error page)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_DELAY_S = 3.0
"""The fake MLflow UI opens its port this long after it starts (the real one takes ~5-15 s)."""

FAKE_MLFLOW = f"""#!{sys.executable}
import sys, time, http.server
port = int(sys.argv[sys.argv.index("--port") + 1])
time.sleep({START_DELAY_S})
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0, reason="no make")
def test_link_printed_only_when_the_server_answers(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mlflow").write_text(FAKE_MLFLOW)
    (bin_dir / "mlflow").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: `setup` has nothing to do
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    t0 = time.monotonic()
    make = subprocess.Popen(["make", "-s", "-C", str(REPO), "ui", f"BIN={bin_dir}", f"STAMP={stamp}",
                             f"MLFLOW_PORT={port}", "UI_WAIT_S=30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        line = make.stdout.readline()
        waited = time.monotonic() - t0
        assert line.startswith(f"compare pipeline runs: http://127.0.0.1:{port}"), line + make.stderr.read()
        assert waited >= START_DELAY_S and _answers(port)
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=10)
