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
    """Run the studies of `part` (vae, cnn or all) and write `reports/tune.json`."""
    from ..config import load_params
    from ..io.atomic import write_json
    from ..paths import Paths
    from .runner import run_study

    params = load_params(params_file)
    paths = Paths(Path(root))
    report = {}
    for name in _parts(part):
        report[name] = run_study(name, params, paths, storage=storage, n_trials=n_trials, worker=worker)
    write_json(paths.reports / REPORT_NAME, report)
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
    return apply_best(params_file, studies)


__all__ = ["run_tune", "apply_tuned"]
