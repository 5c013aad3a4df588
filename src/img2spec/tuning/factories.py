"""Storage, sampler and pruner built from `params.yaml: tune`."""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings

import optuna

from ..config.tune import TuneParams

log = logging.getLogger(__name__)

STORAGE_ENV = "OPTUNA_STORAGE"
SCHEMA_RACE_TRIES = 5
"""Workers that start together on an empty database race to create Optuna's schema; the
loser gets a duplicate-object error and simply retries against the schema the winner made."""
SCHEMA_RACE_BACKOFF_S = 0.5


def storage_url(tune: TuneParams, override: str | None = None) -> str:
    """The study storage: `--storage`, else $OPTUNA_STORAGE, else `tune.storage`."""
    return override or os.environ.get(STORAGE_ENV) or tune.storage


def make_storage(url: str, tune: TuneParams) -> optuna.storages.RDBStorage:
    """An RDB storage with a heartbeat, so a killed worker's trial is failed and replaced."""
    if "://" not in url:
        raise ValueError(f"tune.storage / {STORAGE_ENV}: {url!r} is not a database URL (e.g. sqlite:///optuna.db)")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, SCHEMA_RACE_TRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is flagged experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=tune.heartbeat_s,
                    grace_period=2 * tune.heartbeat_s,
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                )
        except (IntegrityError, ProgrammingError) as exc:
            if attempt == SCHEMA_RACE_TRIES:
                raise
            log.info("optuna storage: schema created concurrently by another worker (%s); retrying",
                     type(getattr(exc, "orig", exc)).__name__)
            time.sleep(SCHEMA_RACE_BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def make_sampler(tune: TuneParams, worker_seed: int = 0) -> optuna.samplers.BaseSampler:
    """`tune.sampler`; `worker_seed` keeps parallel workers from proposing the same points."""
    seed = tune.seed + worker_seed
    if tune.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(tune.startup_trials, 1))
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise RuntimeError("tune.sampler: cmaes needs the `cmaes` package (pip install cmaes); use tpe or random")
        # CMA-ES handles only numeric dimensions; categorical ones fall back to random.
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=tune.startup_trials, warn_independent_sampling=False
        )
    raise ValueError(f"tune.sampler: unknown sampler {tune.sampler!r}")


def make_pruner(tune: TuneParams, max_epochs: int) -> optuna.pruners.BasePruner:
    """`tune.pruner`, scaled to the per-trial epoch cap."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs
        )
    if tune.pruner == "hyperband":
        # max_resource = the full epoch count: a surviving trial is judged where the default is.
        return optuna.pruners.HyperbandPruner(min_resource=min(tune.hyperband_min_epochs, max_epochs),
                                              max_resource=max_epochs,
                                              reduction_factor=tune.hyperband_reduction_factor)
    if tune.pruner == "threshold":
        return optuna.pruners.ThresholdPruner(upper=tune.prune_above, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner: unknown pruner {tune.pruner!r}")
