"""Turn a params.yaml search space into Optuna suggestions and validated model params."""

from __future__ import annotations

from typing import Any

import optuna

from ..config.models import CNNParams, VAEParams
from ..config.tune import CNNSpace, CNNStudyParams, Choice, Dimension, Range, VAESpace, VAEStudyParams


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
        **{key: suggest(trial, key, dim) for key, dim in (("architecture", space.architecture),
                                                          ("input_pool", space.input_pool)) if dim is not None},
    }


def _caps(base, study) -> dict[str, int]:
    """Epochs and patience of a trial: the section's own (full fidelity) unless the study caps them."""
    return {"epochs": min(base.epochs, study.max_epochs or base.epochs),
            "patience": min(base.patience, study.max_patience or base.patience)}


def trial_epochs(base, study) -> int:
    """The epoch count every trial of `study` trains for at most (the pruner's maximum resource)."""
    return _caps(base, study)["epochs"]


def trial_vae_params(base: VAEParams, updates: dict[str, Any], study: VAEStudyParams) -> VAEParams:
    """Params for one trial: the proposal plus the tune-specific epoch/patience caps."""
    caps = _caps(base, study)
    caps["kl_warmup_epochs"] = min(base.kl_warmup_epochs, max(caps["epochs"] - 1, 0))
    return _section_update(base, {**updates, **caps}, VAEParams)


def trial_cnn_params(base: CNNParams, updates: dict[str, Any], study: CNNStudyParams) -> CNNParams:
    """Params for one trial: the proposal plus the tune-specific epoch/patience caps."""
    return _section_update(base, {**updates, **_caps(base, study)}, CNNParams)


# ----------------------------------------------------------------------------- the default trial
DEFAULT_ATTR = "default_config"
"""User attribute of the enqueued trial that trains the params.yaml configuration."""


def _contains(dim: Dimension | None, value: Any) -> bool:
    if dim is None:
        return False
    if isinstance(dim, Choice):
        return value in dim.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and dim.low <= value <= dim.high


def default_section(part: str, base: VAEParams | CNNParams) -> dict[str, Any]:
    """The keys a trial of `part` sets, at their params.yaml values (what the default trial trains)."""
    if part == "vae":
        return {"latent_dim": base.latent_dim, "encoder_units": list(base.encoder_units),
                "decoder_units": list(base.decoder_units), "kl_weight": base.kl_weight,
                "learning_rate": base.learning_rate}
    return {"filters": list(base.filters), "kernel_size": base.kernel_size, "dense_units": base.dense_units,
            "dropout": base.dropout, "learning_rate": base.learning_rate, "loss": base.loss,
            "architecture": base.architecture, "input_pool": base.input_pool}


def default_trial_params(part: str, base: VAEParams | CNNParams, space: VAESpace | CNNSpace) -> dict[str, Any]:
    """Optuna parameters of the params.yaml configuration, for `study.enqueue_trial`.

    Values the search space cannot express (outside a range, not among the choices,
    filters that do not double per block) are left out: the sampler proposes them, and
    the objective trains the exact params.yaml values anyway (`default_section`)."""
    if part == "vae":
        values = {"latent_dim": base.latent_dim, "kl_weight": base.kl_weight, "learning_rate": base.learning_rate}
        enc, dec = tuple(base.encoder_units), tuple(base.decoder_units)
        if len(enc) == 2 and dec == enc[::-1]:
            values.update(outer_units=enc[0], inner_units=enc[1])
    else:
        filters = tuple(base.filters)
        values = {"kernel_size": base.kernel_size, "dense_units": base.dense_units, "dropout": base.dropout,
                  "learning_rate": base.learning_rate, "loss": base.loss, "architecture": base.architecture,
                  "input_pool": base.input_pool}
        if filters and filters == tuple(filters[0] * 2**b for b in range(len(filters))):
            values.update(n_blocks=len(filters), base_filters=filters[0])
    return {k: v for k, v in values.items() if _contains(getattr(space, k, None), v)}
