"""MLflow for tuning: one parent run per study, one nested run per trial, best trial tagged."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna

from .. import tracking
from ..logs import redact_text
from ..config import Params

log = logging.getLogger(__name__)

STAGE = "tune"
EXPERIMENT = f"{tracking.EXPERIMENT_PREFIX}/{STAGE}"
SECTIONS = ("tune", "data", "vae", "cnn")
"""Params a study depends on (logged to its parent run, credentials masked)."""
TAG_STUDY = "img2spec.tune.study"
TAG_STORAGE = "img2spec.tune.storage"
TAG_ROLE = "img2spec.tune.role"
TAG_TRIAL = "optuna.trial_number"
TAG_STATE = "optuna.state"
TAG_BEST = "img2spec.tune.best"
TAG_BEST_RUN = "img2spec.tune.best_run_id"
ATTR_RUN_ID = "mlflow_run_id"


redact = redact_text
"""Storage URLs without their password (the project's one redaction, `logs.redact_text`)."""


def _find_parent(exp_id: str, study_name: str, storage: str) -> str | None:
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_ROLE}` = 'study'",
        order_by=["attributes.start_time ASC"],
    )
    for run in runs:
        if run.data.tags.get(TAG_STORAGE) == storage:
            return run.info.run_id
    return None


@contextlib.contextmanager
def study_run(study_name: str, storage_url: str, params: Params, root: str | Path = ".") -> Iterator[Any]:
    """The study's parent run: reopened if this study (name + storage) already has one."""
    import mlflow

    storage = redact(storage_url)
    exp_id = tracking.experiment(EXPERIMENT, root)
    parent = _find_parent(exp_id, study_name, storage)
    if parent is not None:
        log.info("tune: resuming MLflow parent run %s of study %s", parent, study_name)
        with mlflow.start_run(run_id=parent) as run:
            yield run
        return
    tags = {TAG_STUDY: study_name, TAG_STORAGE: storage, TAG_ROLE: "study"}
    with tracking.start_run(STAGE, params, run_name=study_name, root=root, tags=tags,
                            sections=SECTIONS, experiment_name=EXPERIMENT) as run:
        yield run


@contextlib.contextmanager
def trial_run(trial: optuna.Trial, study_name: str, section_params: dict[str, Any]) -> Iterator[Any]:
    """A nested run for one trial: its suggestions, the section params it trains with and
    its final state (COMPLETE, PRUNED or FAIL) as a tag."""
    import mlflow

    tags = {TAG_STUDY: study_name, TAG_ROLE: "trial", TAG_TRIAL: str(trial.number)}
    run = mlflow.start_run(run_name=f"{study_name}-trial-{trial.number}", nested=True, tags=tags)
    # Ended by hand, not by `with`: a pruned trial is KILLED (stopped early), not FAILED.
    status = "FINISHED"
    try:
        trial.set_user_attr(ATTR_RUN_ID, run.info.run_id)
        mlflow.log_params({f"trial.{k}": v for k, v in trial.params.items()})
        mlflow.log_params({k: (str(v) if isinstance(v, (list, tuple)) else v) for k, v in section_params.items()})
        yield run
    except optuna.TrialPruned:
        status = "KILLED"
        mlflow.set_tag(TAG_STATE, "PRUNED")
        raise
    except BaseException as exc:
        status = "FAILED"
        mlflow.set_tag(TAG_STATE, "FAIL")
        mlflow.set_tag("img2spec.tune.error", redact_text(f"{type(exc).__name__}: {exc}")[:5000])
        raise
    else:
        mlflow.set_tag(TAG_STATE, "COMPLETE")
    finally:
        mlflow.end_run(status=status)


def finish_study(study: optuna.Study, parent_run_id: str) -> dict[str, Any]:
    """Tag the best trial's run, log best values and Optuna's figures to the parent run."""
    import mlflow

    client = mlflow.MlflowClient()
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in optuna.trial.TrialState}
    summary: dict[str, Any] = {"study": study.study_name, "trials": counts}
    for state, n in counts.items():
        client.log_metric(parent_run_id, f"n_{state.lower()}", n)
    try:
        best = study.best_trial
    except ValueError:
        log.warning("tune: study %s has no complete trial yet; nothing to tag", study.study_name)
        return summary
    summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                   best_section=best.user_attrs.get("section_params"))
    client.log_metric(parent_run_id, "best_value", float(best.value))
    client.set_tag(parent_run_id, "img2spec.tune.best_trial", str(best.number))
    best_run = best.user_attrs.get(ATTR_RUN_ID)
    previous = client.get_run(parent_run_id).data.tags.get(TAG_BEST_RUN)
    if previous and previous != best_run:
        _safe_tag(client, previous, TAG_BEST, "false")
    if best_run:
        _safe_tag(client, best_run, TAG_BEST, "true")
        client.set_tag(parent_run_id, TAG_BEST_RUN, best_run)
    with tempfile.TemporaryDirectory() as tmp:
        best_file = Path(tmp) / "best_trial.json"
        best_file.write_text(json.dumps({k: summary[k] for k in summary if k != "trials"}, indent=2, default=str))
        client.log_artifact(parent_run_id, str(best_file))
        for png in _figures(study, Path(tmp)):
            client.log_artifact(parent_run_id, str(png), artifact_path="figures")
            summary.setdefault("figures", []).append(png.name)
    return summary


def _safe_tag(client, run_id: str, key: str, value: str) -> None:
    # The best trial may have been run by a worker logging to another MLflow store.
    try:
        client.set_tag(run_id, key, value)
    except Exception as exc:  # noqa: BLE001 - report and go on: tagging is cosmetic
        log.warning("tune: cannot tag MLflow run %s (%s): is it in another tracking store?", run_id, exc)


def _figures(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNG (matplotlib backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    if len(complete) >= 2:  # importances need at least two finished trials
        plots["param_importances.png"] = ovm.plot_param_importances
    else:
        log.info("tune: %d complete trial(s): parameter importances need 2, skipped", len(complete))
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # Optuna flags its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
            made.append(out / name)
        except Exception as exc:  # noqa: BLE001 - a figure must not lose the study's results
            log.warning("tune: figure %s failed: %s", name, exc)
    return made
