"""img2spec.tuning: Optuna studies of the VAE and the CNN, every trial logged to MLflow.

`run_tune` is what `img2spec tune` / `make tune` call: it tops each study up to its
trial budget (resumable, shareable by many workers on one database) and writes a
report; `apply_tuned` writes the winners into params.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_NAME = "tune.json"


def _parts(part: str) -> tuple[str, ...]:
    from .runner import PARTS

    if part == "all":
        return PARTS
    if part not in PARTS:
        raise ValueError(f"--part must be one of vae, cnn, all (got {part!r})")
    return (part,)


def run_tune(
    params_file: str | Path = "params.yaml",
    *,
    part: str = "all",
    n_trials: int | None = None,
    storage: str | None = None,
    worker: int = 0,
    root: str | Path = ".",
) -> dict[str, Any]:
    """Run the studies of `part` (vae, cnn or all) and write `reports/tune.json`.

    On a machine with several GPUs this starts one pinned worker per GPU (`devices`)
    on the same storage and reports from the storage once all have finished."""
    from ..config import load_params
    from ..io.atomic import write_json
    from ..paths import Paths
    from .devices import list_gpus, plan_workers
    from .runner import run_study

    params = load_params(params_file)
    paths = Paths(Path(root))
    gpus = list_gpus()
    if gpus:
        params = gpu_params(params)
    slots = plan_workers(gpus, params.tune.gpu_workers, worker)
    if len(slots) > 1:
        report = _run_gpu_workers(slots, params, params_file, part, n_trials, storage, paths)
    else:
        report = {}
        for name in _parts(part):
            report[name] = run_study(name, params, paths, storage=storage, n_trials=n_trials, worker=worker)
            report[name]["gpu"] = slots[0].gpu
    write_json(paths.reports / REPORT_NAME, report)
    return report


def gpu_params(params):
    """Params of a GPU worker: each study's `gpu_space` and `gpu_n_trials` where given."""
    tune = params.tune
    studies = {}
    for name in ("vae", "cnn"):
        cfg = getattr(tune, name)
        update = {}
        if cfg.gpu_space is not None:
            update["space"] = cfg.gpu_space
        if cfg.gpu_n_trials is not None:
            update["n_trials"] = cfg.gpu_n_trials
        studies[name] = cfg.model_copy(update=update)
    return params.model_copy(update={"tune": tune.model_copy(update=studies)})


def _run_gpu_workers(slots, params, params_file, part, n_trials, storage, paths) -> dict[str, Any]:
    """One `img2spec tune` process per GPU on the shared storage; the report from the storage."""
    import optuna

    from .devices import run_workers, with_storage, worker_command
    from .factories import make_storage, storage_url
    from .runner import default_vs_best

    url = storage_url(params.tune, storage)
    slots = [with_storage(s, url) for s in slots]  # the URL (maybe with a password) stays off command lines
    codes = run_workers(slots, [worker_command(s, part, str(params_file), n_trials) for s in slots],
                        cwd=str(paths.root))
    report: dict[str, Any] = {}
    for name in _parts(part):
        cfg = getattr(params.tune, name)
        study = optuna.load_study(study_name=cfg.study_name, storage=make_storage(url, params.tune))
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        report[name] = {"study": cfg.study_name, "trials": {s: states.count(s) for s in sorted(set(states))},
                        "workers": [{"index": s.index, "gpu": s.gpu, "exit_code": c} for s, c in zip(slots, codes)],
                        **default_vs_best(study, cfg.min_improvement)}
    failed = [c for c in codes if c != 0]
    if failed:
        log.warning("tune: %d of %d GPU workers exited with errors (codes %s)", len(failed), len(codes), failed)
    return report


def apply_tuned(
    params_file: str | Path = "params.yaml", *, part: str = "all", storage: str | None = None
) -> dict[str, Any]:
    """Write the best complete trial of each study of `part` into `params_file`."""
    import optuna

    from ..config import load_params
    from .apply import apply_best
    from .factories import make_storage, storage_url

    params = load_params(params_file)
    url = storage_url(params.tune, storage)
    studies = {}
    for name in _parts(part):
        study_name = getattr(params.tune, name).study_name
        try:
            studies[name] = optuna.load_study(study_name=study_name, storage=make_storage(url, params.tune))
        except KeyError:
            raise LookupError(f"tune --apply: no study {study_name!r} in the storage; run `img2spec tune` first") from None
    return apply_best(params_file, studies,
                      {name: getattr(params.tune, name).min_improvement for name in studies})


__all__ = ["run_tune", "apply_tuned"]
