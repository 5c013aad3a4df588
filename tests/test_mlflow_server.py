"""Team tracking: `make mlflow-server`'s script on the PostgreSQL the suite starts (tests/pg_fixture.py),
a tiny pipeline logging to it through MLFLOW_TRACKING_URI, artifacts proxied, no password leaked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pg_fixture import postgres_url  # noqa: F401  (fixture)
from test_mlflow_ui import free_port, stop_server
from tracking_fixture import SECRET, run_tiny_pipeline

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 300


def _psql(url: str, sql: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(sql))
    engine.dispose()


def _start(env: dict, log: Path) -> subprocess.Popen:
    import time
    import urllib.request

    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "mlflow_server.sh")], env=env, cwd=env["WORKDIR"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{env['MLFLOW_PORT']}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"server not healthy after {SERVER_START_S} s: {log.read_text()[-3000:]}")


def test_pipeline_logs_to_team_server(postgres_url, tmp_path, monkeypatch):  # noqa: F811
    import mlflow
    from sqlalchemy.engine import make_url

    from img2spec import tracking

    pg = make_url(postgres_url)
    _psql(postgres_url, f"CREATE ROLE mlflow LOGIN PASSWORD '{SECRET}'")
    _psql(postgres_url, "CREATE DATABASE mlflow OWNER mlflow")
    port = free_port()
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": "mlflow", "PGDATABASE": "mlflow",
           "PGPASSWORD": SECRET, "MLFLOW_PORT": str(port), "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
           "MLFLOW_WORKERS": "1", "WORKDIR": str(tmp_path)}
    env.pop("MLFLOW_BACKEND_STORE_URI", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "server.log"
    server = _start(env, log)
    try:
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        root = tmp_path / "project"
        root.mkdir()
        result = run_tiny_pipeline(root, publish=True)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.get_experiment_by_name(tracking.PIPELINE_EXPERIMENT)
        runs = client.search_runs([exp.experiment_id])
        parent = next(r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "pipeline")
        assert parent.data.metrics["mean_deviation_cnn"] == pytest.approx(
            result["evaluate"]["mean_deviation"]["cnn"]["mean"])
        stages = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
        assert stages == ["evaluate", "publish", "train_cnn", "train_vae"]
        version = client.get_model_version("img2spec", result["publish"]["registry"]["version"])
        assert "mean_deviation_cnn" in version.description
        # Artifacts went through the server's proxy into its destination, not a client-side path.
        evaluate = next(r for r in runs if r.info.run_name == "evaluate")
        assert evaluate.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert list(artifacts.rglob("evaluate.json"))
        # The backend password stays out of the server's output, argv and the store.
        assert SECRET not in log.read_text()
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline
        assert "postgresql+psycopg2://mlflow@" in log.read_text()
    finally:
        stop_server(server)
