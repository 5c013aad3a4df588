"""A Keras callback that logs every epoch's metrics to the active MLflow run."""

from __future__ import annotations

import math

import keras


class MlflowMetrics(keras.callbacks.Callback):
    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        import mlflow

        values = {}
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                values[f"{self.prefix}{key}"] = value
        if values and mlflow.active_run() is not None:
            mlflow.log_metrics(values, step=epoch)


def member_prefix(k: int, prefix: str = "") -> str:
    """Metric prefix of ensemble member k: member 0 logs under the plain names, so the charts of a
    one-network run and of an ensemble's first member line up."""
    return prefix if k == 0 else f"{prefix}member{k}_"
