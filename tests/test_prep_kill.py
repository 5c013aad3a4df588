"""A real kill -9 of `prepare` and of the mock survey's worker pool: no orphans, the rerun cleans up."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from test_io_processes import kill_and_check_orphans

from img2spec.config import Params
from img2spec.config.data import DataParams
from img2spec.paths import Paths
from img2spec.prep.match import match
from img2spec.prep.prepare import prepare
from img2spec.prep.synthetic import synthetic_objects, write_files, write_tables

N = 12
SIZE = 32


def _params(**prep) -> Params:
    base = Params().model_copy(update={"data": DataParams(cutout_size=SIZE)})
    return base.model_copy(update={"prepare": base.prepare.model_copy(update=prep)})


# Each object takes an extra 0.5 s in the workers, so the stage is surely killed mid-way.
_PREPARE_SCRIPT = textwrap.dedent("""
    import sys, time
    from img2spec.config import Params
    from img2spec.config.data import DataParams
    from img2spec.paths import Paths
    from img2spec.prep import prepare as stage, worker

    slow = worker.process_object
    def process_object(*args):
        time.sleep(0.5)
        return slow(*args)
    worker.process_object = process_object
    base = Params().model_copy(update={"data": DataParams(cutout_size=int(sys.argv[2]))})
    params = base.model_copy(update={"prepare": base.prepare.model_copy(update={"n_workers": 2, "chunk_size": 1})})
    from pathlib import Path
    stage.prepare(params, Paths(Path(sys.argv[1])))
""")


def test_killed_prepare_leaves_no_orphans_and_rerun_cleans(tmp_path):
    paths = Paths(tmp_path)
    objects = synthetic_objects(N, seed=5)
    write_files(paths, objects, size=SIZE, seed=5)
    write_tables(paths, objects)
    match(_params(), paths)

    proc = subprocess.Popen([sys.executable, "-c", _PREPARE_SCRIPT, str(tmp_path), str(SIZE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = paths.processed.with_name(f".{paths.processed.name}.tmp-{proc.pid}")
    pids, survivors = kill_and_check_orphans(proc, min_children=2, ready=lambda: (staging / "flux.npy").exists())
    assert survivors == [], f"orphaned prepare workers {survivors} of {pids}"
    assert staging.is_dir()  # what the kill left behind

    report = prepare(_params(n_workers=1), paths)
    assert report["stale_temporaries_removed"] == 1 and report["n_out"] == N
    assert not staging.exists()
    assert sorted(p.name for p in paths.processed.parent.iterdir() if p.name.startswith(".")) == []


_MOCK_POOL_SCRIPT = textwrap.dedent("""
    import time
    from img2spec.sources.mock.parallel import run_chunks

    def work(state, chunk):
        time.sleep(60)
        return len(chunk)

    for _ in run_chunks(work, 8, 2, 2, init=dict):
        pass
""")


def test_killed_mock_pool_leaves_no_orphans():
    proc = subprocess.Popen([sys.executable, "-c", _MOCK_POOL_SCRIPT], stderr=subprocess.PIPE)
    pids, survivors = kill_and_check_orphans(proc, min_children=2)
    assert survivors == [], f"orphaned mock workers {survivors} of {pids}"
