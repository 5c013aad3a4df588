"""One trial per GPU: which devices a tuning run uses and how its workers are pinned.

Without GPUs, `img2spec tune` runs one worker in its own process (what a 2-core laptop
can afford). With GPUs it starts one worker process per GPU, each with
`CUDA_VISIBLE_DEVICES` set to its GPU alone (so TensorFlow in that process sees one
device and never allocates memory on the others), all on the same Optuna storage:
the study's trial budget lock (`budget.TrialBudget`) keeps them from over-running it,
and each worker's sampler gets its own seed offset. The workers die with the parent
(a kill -9 of `img2spec tune` leaves no orphan training on a GPU).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Sequence

log = logging.getLogger(__name__)

CUDA_ENV = "CUDA_VISIBLE_DEVICES"
WORKER_MODULE = "img2spec.cli"
"""Each GPU worker runs `python -m img2spec.cli tune ...` (the same command, pinned)."""


@dataclass(frozen=True)
class WorkerSlot:
    """One tuning worker: its index (sampler seed offset) and the environment it runs with."""

    index: int
    gpu: str | None
    env: dict[str, str] = field(default_factory=dict)


def list_gpus() -> list[str]:
    """Ids of the GPUs this process may use, in CUDA_VISIBLE_DEVICES numbering.

    Asks TensorFlow (no memory is allocated by listing). Under an existing
    CUDA_VISIBLE_DEVICES the ids are the visible ones (e.g. "3,5" -> ["3", "5"]).
    """
    from ..logs import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    n = len(tf.config.list_physical_devices("GPU"))
    visible = os.environ.get(CUDA_ENV)
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return ids[:n]
    return [str(i) for i in range(n)]


def plan_workers(gpus: Sequence[str], max_workers: int = 0, first_index: int = 0) -> list[WorkerSlot]:
    """One slot per GPU (at most `max_workers` if > 0), each pinned to its GPU; one CPU slot
    (no pinning, this process) when there is no GPU or only one."""
    gpus = list(gpus)
    if max_workers > 0:
        gpus = gpus[:max_workers]
    if len(gpus) <= 1:
        return [WorkerSlot(first_index, gpus[0] if gpus else None, {})]
    return [WorkerSlot(first_index + i, gpu, {CUDA_ENV: gpu}) for i, gpu in enumerate(gpus)]


def worker_command(slot: WorkerSlot, part: str, params_file: str, n_trials: int | None) -> list[str]:
    """The command line of one pinned worker (the same `tune`, one device). The storage URL is
    not on it: it may hold a password, and every user of the machine can read command lines
    (`ps`); `with_storage` puts it in the worker's environment instead."""
    cmd = [sys.executable, "-m", WORKER_MODULE, "tune", "--part", part, "--worker", str(slot.index),
           "--params", str(params_file)]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    return cmd


def with_storage(slot: WorkerSlot, storage: str) -> WorkerSlot:
    """`slot` whose environment names the study storage (`OPTUNA_STORAGE`, read by the worker's `tune`)."""
    from .factories import STORAGE_ENV

    return replace(slot, env={**slot.env, STORAGE_ENV: storage})


def run_workers(slots: Sequence[WorkerSlot], commands: Sequence[list[str]], cwd: str | None = None) -> list[int]:
    """Start one process per slot with its pinned environment, wait for all; their exit codes.

    Children get the Linux parent-death signal, so they end with this process."""
    from ..io.processes import set_parent_death_signal

    procs = []
    try:
        for slot, cmd in zip(slots, commands):
            env = {**os.environ, **slot.env}
            log.info("tune: worker %d on GPU %s: %s", slot.index, slot.gpu, " ".join(cmd[2:]))
            procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, preexec_fn=set_parent_death_signal))
        return [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
