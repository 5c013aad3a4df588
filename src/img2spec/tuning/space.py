"""Turn a params.yaml search space into Optuna suggestions and validated model params."""

from __future__ import annotations

from typing import Any

import optuna

from ..config.models import CNNParams, VAEParams
from ..config.tune import CNNStudyParams, Choice, Dimension, Range, VAEStudyParams


def suggest(trial: optuna.Trial, name: str, dim: Dimension) -> Any:
    """One Optuna suggestion for dimension `name`."""
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.choices))
    if isinstance(dim, Range):
        if dim.is_int:
            return trial.suggest_int(name, dim.low, dim.high, step=dim.step or 1, log=dim.log)
        return trial.suggest_float(name, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
    raise TypeError(f"tune: unknown search dimension {name}: {dim!r}")


def _section_update(base, updates: dict[str, Any], cls):
    """Validate `base` with `updates` through the section's pydantic model."""
    return cls.model_validate({**base.model_dump(), **updates})


def vae_updates(trial: optuna.Trial, study: VAEStudyParams) -> dict[str, Any]:
    """The `vae:` keys a trial proposes (what `--apply` writes to params.yaml)."""
    space = study.space
    outer = suggest(trial, "outer_units", space.outer_units)
    inner = suggest(trial, "inner_units", space.inner_units)
    return {
        "latent_dim": suggest(trial, "latent_dim", space.latent_dim),
        "encoder_units": [outer, inner],
        "decoder_units": [inner, outer],
        "kl_weight": suggest(trial, "kl_weight", space.kl_weight),
        "learning_rate": suggest(trial, "learning_rate", space.learning_rate),
    }


def cnn_updates(trial: optuna.Trial, study: CNNStudyParams) -> dict[str, Any]:
    """The `cnn:` keys a trial proposes (what `--apply` writes to params.yaml)."""
    space = study.space
    n_blocks = suggest(trial, "n_blocks", space.n_blocks)
    base_filters = suggest(trial, "base_filters", space.base_filters)
    return {
        "filters": [int(base_filters) * 2**b for b in range(int(n_blocks))],
        "kernel_size": suggest(trial, "kernel_size", space.kernel_size),
        "dense_units": suggest(trial, "dense_units", space.dense_units),
        "dropout": suggest(trial, "dropout", space.dropout),
        "learning_rate": suggest(trial, "learning_rate", space.learning_rate),
        "loss": suggest(trial, "loss", space.loss),
    }


def trial_vae_params(base: VAEParams, updates: dict[str, Any], study: VAEStudyParams) -> VAEParams:
    """Params for one trial: the proposal plus the tune-specific epoch/patience caps."""
    caps = {"epochs": min(base.epochs, study.max_epochs), "patience": min(base.patience, study.max_patience)}
    caps["kl_warmup_epochs"] = min(base.kl_warmup_epochs, max(caps["epochs"] - 1, 0))
    return _section_update(base, {**updates, **caps}, VAEParams)


def trial_cnn_params(base: CNNParams, updates: dict[str, Any], study: CNNStudyParams) -> CNNParams:
    """Params for one trial: the proposal plus the tune-specific epoch/patience caps."""
    caps = {"epochs": min(base.epochs, study.max_epochs), "patience": min(base.patience, study.max_patience)}
    return _section_update(base, {**updates, **caps}, CNNParams)
