"""Keras callbacks of one trial, built afresh for every trial (never shared)."""

from __future__ import annotations

import math
from typing import Any, Callable

import keras
import optuna
from optuna_integration import KerasPruningCallback

#: The default Keras log key reported to the pruner.
MONITOR = "val_loss"
#: The VAE study's pruning key (its objective is the representation score): val chi2/P + KL/P, the negative ELBO at KL weight 1.
#: The trained loss weights KL by the tuned kl_weight, so it would favour the smallest weight.
NEG_ELBO_KEY = "val_neg_elbo"
#: The CNN's pruning key: val mean D_i, comparable across loss choices (val_loss is not).
DEVIATION_KEY = "val_mean_deviation"


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch's Keras logs (loss, val_loss, ...) to the active MLflow run."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import mlflow

        values = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if finite:
            mlflow.log_metrics(finite, step=epoch)


class ValNegElbo(keras.callbacks.Callback):
    """Add val_chi2 + val_kl (the VAE's logged terms) to the epoch's logs as NEG_ELBO_KEY."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and "val_chi2" in logs and "val_kl" in logs:
            logs[NEG_ELBO_KEY] = float(logs["val_chi2"]) + float(logs["val_kl"])


class ValDeviation(keras.callbacks.Callback):
    """Put the validation mean D_i of the model in training into the epoch's logs, so the
    epoch logger records it and the pruning callback (which runs after it) can use it."""

    def __init__(self, deviation: Callable[[Any], float]) -> None:
        super().__init__()
        self._deviation = deviation

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            # fit() runs a CNNTrainer (loss wrapper); D_i is of the image network inside it, whose
            # outputs (latents, and the redshift head) are what predict_spectra reads
            logs[DEVIATION_KEY] = float(self._deviation(getattr(self.model, "cnn", self.model)))


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def trial_callbacks(
    trial: optuna.Trial, monitor: str = MONITOR
) -> tuple[MlflowEpochLogger, KerasPruningCallback]:
    """(epoch logger, pruning callback) for one trial; the logger goes first so a pruned
    trial still has its last epoch logged."""
    return MlflowEpochLogger(), KerasPruningCallback(trial, monitor)
