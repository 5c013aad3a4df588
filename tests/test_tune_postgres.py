"""Two worker processes share one study on a real PostgreSQL server: the study gets
exactly N trials, numbered 0..N-1, each run once (one MLflow trial run each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg_fixture import postgres_url  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # two worker processes on a real PostgreSQL: ~2 min

N_TRIALS = 8
WORKER_TIMEOUT_S = 300


def _worker(storage: str, root: Path, index: int) -> None:
    """One worker, as on its own machine: its own MLflow store, the shared study."""
    import optuna

    from img2spec.paths import Paths
    from img2spec.tuning.runner import run_study
    from test_tune_support import tiny_params, toy_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = tiny_params(storage, n_trials=N_TRIALS, sampler="tpe")
    name = params.tune.vae.study_name
    report = run_study("vae", params, Paths(root), worker=index, objective=toy_objective(name, epochs=15))
    (root / f"worker{index}.json").write_text(json.dumps(report, default=str))


def test_two_workers_share_one_study(postgres_url, tmp_path):  # noqa: F811
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from img2spec.tuning import mlruns

    procs = []
    for index in (1, 2):
        root = tmp_path / f"machine{index}"
        root.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, __file__, postgres_url, str(root), str(index)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=WORKER_TIMEOUT_S)
        assert proc.returncode == 0, out[-3000:]

    study = optuna.load_study(study_name="img2spec-vae", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))  # none lost, none extra
    assert all(t.state == TrialState.COMPLETE for t in trials)

    reports = [json.loads((tmp_path / f"machine{i}" / f"worker{i}.json").read_text()) for i in (1, 2)]
    ran = [r["ran_numbers"] for r in reports]
    assert all(ran), f"both workers should have run trials: {ran}"
    assert sorted(ran[0] + ran[1]) == list(range(N_TRIALS))  # each trial run exactly once

    logged = []
    for i in (1, 2):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / f'machine{i}' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("img2spec/tune")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{mlruns.TAG_ROLE}` = 'trial'")
        logged += [int(r.data.tags[mlruns.TAG_TRIAL]) for r in runs]
    assert sorted(logged) == list(range(N_TRIALS))


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
