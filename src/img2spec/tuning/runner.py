"""Run one study (vae | cnn): claim trials under the budget, train, log, tag the best."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Params
from ..paths import Paths
from . import mlruns
from .budget import TrialBudget
from .factories import make_pruner, make_sampler, make_storage, storage_url
from .space import DEFAULT_ATTR, default_trial_params, trial_epochs

log = logging.getLogger(__name__)

PARTS = ("vae", "cnn")


def open_study(part: str, params: Params, url: str, worker: int = 0) -> optuna.Study:
    """Create or load (resume) the study of `part` on storage `url`."""
    cfg = getattr(params.tune, part)
    return optuna.create_study(
        study_name=cfg.study_name,
        storage=make_storage(url, params.tune),
        sampler=make_sampler(params.tune, worker),
        pruner=make_pruner(params.tune, trial_epochs(getattr(params, part), cfg)),
        direction="minimize",
        load_if_exists=True,
    )


def default_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial of `study` that trains the params.yaml configuration (the latest, if re-enqueued)."""
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DEFAULT_ATTR)]
    return found[-1] if found else None


def enqueue_default(study: optuna.Study, part: str, params: Params, budget: TrialBudget) -> bool:
    """Make the params.yaml configuration the study's next trial unless it already has one
    (a failed one is retried). Under the budget lock, so parallel workers enqueue it once."""
    budget._acquire()
    try:
        existing = default_trial(study)
        if existing is not None and existing.state != TrialState.FAIL:
            return False
        space = getattr(params.tune, part).space
        study.enqueue_trial(default_trial_params(part, getattr(params, part), space),
                            user_attrs={DEFAULT_ATTR: True}, skip_if_exists=False)
        log.info("tune %s: the params.yaml configuration is enqueued as the next trial", part)
        return True
    finally:
        budget.release()


def default_vs_best(study: optuna.Study, min_improvement: float) -> dict[str, Any]:
    """`default_value` and `best_value` on the study's objective, and whether the best is a
    measured improvement (below the default's value by more than `min_improvement`)."""
    out: dict[str, Any] = {"default_trial": None, "default_value": None, "best_value": None, "improved": False}
    default = default_trial(study)
    if default is not None and default.state == TrialState.COMPLETE:
        out.update(default_trial=default.number, default_value=float(default.value))
    try:
        best = study.best_trial
    except ValueError:
        return out
    out.update(best_trial=best.number, best_value=float(best.value))
    if out["default_value"] is not None:
        dv = out["default_value"]
        out["improvement"] = dv - out["best_value"]
        out["relative_improvement"] = (dv - out["best_value"]) / abs(dv) if dv else float("nan")
        out["improved"] = bool(best.number != out["default_trial"]
                               and out["best_value"] < dv - min_improvement * abs(dv))
    return out


def build_objective(part: str, params: Params, paths: Paths) -> Callable[[optuna.Trial], float]:
    """The objective of `part`, with its data loaded once per worker."""
    from ..io.processed import ProcessedData
    from .objective import CNNObjective, VAEObjective

    data = ProcessedData.open(paths.processed)
    if part == "vae":
        return VAEObjective(params, params.tune.vae, data)
    if part == "cnn":
        from .inputs import load_cnn_inputs

        latents, decoder, fingerprint = load_cnn_inputs(paths)
        return CNNObjective(params, params.tune.cnn, data, latents, decoder,
                            extra_attrs={"decoder_sha1": fingerprint})
    raise ValueError(f"tune: unknown part {part!r}; expected one of {PARTS}")


def run_study(
    part: str,
    params: Params,
    paths: Paths,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    worker: int = 0,
    objective: Callable[[optuna.Trial], float] | None = None,
) -> dict[str, Any]:
    """Top the study of `part` up to `n_trials` total trials (default `tune.<part>.n_trials`)
    within `timeout_s` seconds of this call; returns a report of what happened."""
    if part not in PARTS:
        raise ValueError(f"tune: unknown part {part!r}; expected one of {PARTS}")
    cfg = getattr(params.tune, part)
    url = storage_url(params.tune, storage)
    total = n_trials or cfg.n_trials
    budget_s = timeout_s or cfg.timeout_s
    study = open_study(part, params, url, worker)
    objective = objective or build_objective(part, params, paths)
    fingerprint = getattr(objective, "extra_attrs", {}).get("decoder_sha1")
    if fingerprint:
        from .inputs import warn_if_other_decoder

        warn_if_other_decoder(study, fingerprint)
    budget = TrialBudget(url, cfg.study_name, total)
    if budget.used(study) < total:
        enqueue_default(study, part, params, budget)
    log.info("tune %s: study %s on %s, %d/%d trials used", part, cfg.study_name,
             mlruns.redact(url), budget.used(study), total)

    def guarded(trial: optuna.Trial) -> float:
        budget.release()  # the trial exists now: let the next worker claim its own
        return objective(trial)

    ran: list[FrozenTrial] = []
    failures = 0
    start = time.monotonic()
    with mlruns.study_run(cfg.study_name, url, params, paths.root) as parent:
        try:
            while time.monotonic() - start < budget_s:
                if not budget.acquire_if_left(study):
                    break
                try:
                    study.optimize(guarded, n_trials=1, catch=(Exception,), gc_after_trial=True,
                                   callbacks=[lambda _s, t: ran.append(t)])
                finally:
                    budget.release()
                last = ran[-1]
                log.info("tune %s: trial %d %s value=%s params=%s", part, last.number, last.state.name,
                         last.value, last.params)
                failures = failures + 1 if last.state == TrialState.FAIL else 0
                if failures >= params.tune.max_consecutive_failures:
                    raise RuntimeError(
                        f"tune {part}: {failures} consecutive trials failed (last: trial {last.number}, "
                        f"{last.user_attrs.get('fail_reason') or last.system_attrs.get('fail_reason', 'see log')}); "
                        "stopping this worker"
                    )
        finally:
            budget.close()
            summary = mlruns.finish_study(study, parent.info.run_id)
    summary.update(
        part=part,
        storage=mlruns.redact(url),
        n_trials_target=total,
        ran_here={s.name: sum(t.state == s for t in ran) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
        ran_numbers=[t.number for t in ran],
        seconds=round(time.monotonic() - start, 1),
        mlflow_parent_run=parent.info.run_id,
        trial_epochs=trial_epochs(getattr(params, part), cfg),
        **default_vs_best(study, cfg.min_improvement),
    )
    if summary["ran_here"]["FAIL"]:
        log.warning("tune %s: %d trial(s) failed here (see the FAIL runs in MLflow)", part, summary["ran_here"]["FAIL"])
    return summary
