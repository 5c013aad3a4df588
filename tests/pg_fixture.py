"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests (initdb + pg_ctl in a tmp dir).

Skips, with the reason, when the server binaries are missing or the cluster cannot
start. PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` system user (`runuser`). CI installs the binaries with scripts/ci_postgres.sh.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

START_TIMEOUT_S = 60


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    # Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<major>/bin.
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{binary}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL: running as root and `runuser` is missing (postgres refuses root)")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres_url():
    """URL of a fresh PostgreSQL database, stopped and deleted after the module."""
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/ci_postgres.sh")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL: running as root and no `postgres` system user to run the server")
    base = Path(tempfile.mkdtemp(prefix="img2spec-pg-"))
    if os.geteuid() == 0:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, port = base / "data", _free_port()
    try:
        run = lambda cmd: subprocess.run(_as_user(cmd), capture_output=True, text=True, timeout=START_TIMEOUT_S)  # noqa: E731
        init = run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        if init.returncode != 0:
            pytest.skip(f"PostgreSQL: initdb failed: {init.stderr.strip()[-500:]}")
        opts = f"-h 127.0.0.1 -p {port} -k {base} -F"
        start = run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "server.log"), "-w", "-t", str(START_TIMEOUT_S), "start"])
        if start.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            pytest.skip(f"PostgreSQL: server did not start: {start.stderr.strip()[-300:]} {log[-300:]}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
