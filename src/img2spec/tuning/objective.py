"""The two objectives: VAE validation loss, CNN validation mean D_i through the decoder.

Both train through the models package's public API (`img2spec.models.train`) with
callbacks built afresh for every trial, on the train split with the val split for
early stopping, pruning and the objective. The test split is never read here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..config import Params
from ..config.tune import CNNStudyParams, VAEStudyParams
from . import mlruns
from .callbacks import DEVIATION_KEY, NEG_ELBO_KEY, ValDeviation, ValNegElbo, trial_callbacks
from .space import DEFAULT_ATTR, cnn_updates, default_section, trial_cnn_params, trial_vae_params, vae_updates

log = logging.getLogger(__name__)


def _updates(part: str, trial: optuna.Trial, propose, base) -> dict[str, Any]:
    """The trial's section keys: the sampler's proposal, or for the default trial exactly
    the params.yaml values (the proposal still registers the parameters with the sampler)."""
    updates = propose()
    if trial.user_attrs.get(DEFAULT_ATTR):
        updates = default_section(part, base)
    return updates


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        # A diverged trial: FAIL it (with the reason) rather than feed NaN to the sampler.
        raise FloatingPointError(f"{what} is {value}: the trial diverged")
    return value


@dataclass
class VAEObjective:
    """Minimise what users get from the representation: `representation.representation_score` of its
    val reconstructions (D and the NMAD of EW(Halpha), Dn4000, Hdelta_A, each as a ratio to the colour
    kNN's). The ELBO rewards smooth reconstructions without lines, so it is only kept (user attribute
    and MLflow metric), as the per-epoch value the pruner compares between trials."""

    params: Params
    study: VAEStudyParams
    data: Any  # ProcessedData

    def __call__(self, trial: optuna.Trial) -> float:
        from ..models.train import train_vae

        updates = _updates("vae", trial, lambda: vae_updates(trial, self.study), self.params.vae)
        trial.set_user_attr("section", "vae")
        trial.set_user_attr("section_params", updates)
        vae_params = trial_vae_params(self.params.vae, updates, self.study)
        with mlruns.trial_run(trial, self.study.study_name, vae_params.model_dump()):
            import mlflow

            logger, pruner = trial_callbacks(trial, monitor=NEG_ELBO_KEY)
            start = time.perf_counter()
            result = train_vae(vae_params, self.data, callbacks=[ValNegElbo(), logger, pruner])
            warm = min(vae_params.kl_warmup_epochs, max(vae_params.epochs - 1, 0))
            elbo = _finite(_at_best_epoch(logger.history, NEG_ELBO_KEY, warm), "VAE validation -ELBO")
            rep = self._score(result)
            value = _finite(rep["score"], "VAE representation score")
            trial.set_user_attr("val_neg_elbo", elbo)
            trial.set_user_attr("representation_ratios", rep["ratios"])
            val_loss = float(result.best_val_loss)
            seconds = time.perf_counter() - start
            epochs = len(logger.history.get("loss", []))
            trial.set_user_attr("val_loss", val_loss)
            trial.set_user_attr("epochs", epochs)
            mlflow.log_metrics({"representation_score": value, "best_val_neg_elbo": elbo, "best_val_loss": val_loss,
                                "train_seconds": seconds, "epochs_run": epochs,
                                **{f"ratio_{k}": v for k, v in rep["ratios"].items()}})
            return value

    def _score(self, result) -> dict:
        from ..models.train import with_filled_pixels
        from .representation import representation_score

        decoder = with_filled_pixels(result.model.decoder, result.info["trained_pixels"])
        ep = self.params.evaluate
        return representation_score(result.model.encoder, decoder, self.data, self.params.measure,
                                    k=ep.knn_neighbours, use_magnitude=ep.knn_use_magnitude)


def _at_best_epoch(history: dict[str, list[float]], key: str, start: int) -> float:
    """`key` at the epoch of lowest val_loss from `start` on (the weights early stopping keeps)."""
    losses = history.get("val_loss", [])
    values = history.get(key, [])
    epochs = [e for e in range(start, min(len(losses), len(values))) if math.isfinite(losses[e])]
    if not epochs:
        return float("nan")
    return values[min(epochs, key=lambda e: losses[e])]


@dataclass
class CNNObjective:
    """Minimise the CNN's validation mean D_i (SDSS error units) through the fixed decoder;
    its validation loss is kept as a user attribute and an MLflow metric."""

    params: Params
    study: CNNStudyParams
    data: Any  # ProcessedData
    latents: Any  # what `train_cnn` expects (see load_cnn_inputs)
    decoder: Any  # keras.Model: latents -> normalised flux
    extra_attrs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> float:
        from ..models.validation import validation_deviation
        from ..models.train import train_cnn

        updates = _updates("cnn", trial, lambda: cnn_updates(trial, self.study), self.params.cnn)
        trial.set_user_attr("section", "cnn")
        trial.set_user_attr("section_params", updates)
        for key, value in self.extra_attrs.items():
            trial.set_user_attr(key, value)
        cnn_params = trial_cnn_params(self.params.cnn, updates, self.study)
        with mlruns.trial_run(trial, self.study.study_name, cnn_params.model_dump()):
            import mlflow

            deviation_cb = ValDeviation(lambda model: validation_deviation(model, self.decoder, self.data))
            logger, pruner = trial_callbacks(trial, monitor=DEVIATION_KEY)
            start = time.perf_counter()
            result = train_cnn(cnn_params, self.data, self.latents, self.decoder,
                               callbacks=[deviation_cb, logger, pruner], measure_params=self.params.measure)
            val_loss = float(result.best_val_loss)
            trial.set_user_attr("val_loss", val_loss)
            deviation = _finite(validation_deviation(result.model, self.decoder, self.data), "CNN val mean D_i")
            seconds = time.perf_counter() - start
            epochs = len(logger.history.get("loss", []))
            trial.set_user_attr("epochs", epochs)
            mlflow.log_metrics({"best_val_loss": val_loss, "val_mean_deviation": deviation,
                                "train_seconds": seconds, "epochs_run": epochs})
            return deviation
