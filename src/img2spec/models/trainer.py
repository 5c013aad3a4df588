"""`CNNTrainer`: the training-time wrapper around the image CNN (its loss, not its graph).

- loss = latent: Gaussian NLL of the VAE posterior N(mu, var) under the predicted
  N(mean, exp(logvar)) (mean and variance heads trained together).
- loss = spectrum: ivar-weighted chi-square of decoder(predicted mean) against the observed
  spectrum through the frozen decoder (what the metric measures), plus the latent NLL with
  the mean held fixed, so the variance head still learns its calibration.
- measurement term (`measure_weight` > 0, spectrum mode): plus measure_weight x `measure_loss`
  (a `measure_loss.MeasureTerm`) of the decoder input, against targets "measures" /
  "measures_ok": the lines and indices of the decoded rest-frame spectrum. At 0 it is never
  computed: the loss is the one without it, bit for bit.
- class term (`class_weight` > 0, with the measurement term): plus class_weight x `class_loss`
  (a `class_loss.ClassTerm`) of the same measurements, against targets "measure_classes": the
  star-forming / quiescent and BPT decisions as smooth functions of the decoded lines.
- redshift head (`redshift_weight` > 0): plus redshift_weight x the Gaussian NLL of the
  spectroscopic z under the predicted N(z mean, exp(z logvar)); objects without a finite z
  (target column 1 = 0) contribute nothing.
- hypotheses (a CNN built with `cnn.hypotheses` = K > 1): each term above is computed for each of
  the K latent hypotheses; the best fitting one per object takes the loss (relaxed
  winner-takes-all, `hypothesis_relax`) and a cross-entropy teaches the logits to name it.
The inputs are what the CNN takes: images, or {"images", "photometry"} for a hybrid CNN.
"""

from __future__ import annotations

import keras
from keras import ops

from .cnn import hypothesis_count, hypothesis_view
from .losses import chi2_per_pixel, gaussian_nll


class CNNTrainer(keras.Model):
    def __init__(self, cnn: keras.Model, latent_dim: int, loss_mode: str = "latent",
                 decoder: keras.Model | None = None, redshift_weight: float = 0.0,
                 measure_loss=None, measure_weight: float = 0.0, class_loss=None, class_weight: float = 0.0,
                 hypothesis_relax: float = 0.0, hypothesis_winner: str = "loss", **kwargs):
        super().__init__(**kwargs)
        self.hypotheses = hypothesis_count(cnn)
        self.hypothesis_relax = float(hypothesis_relax)
        if hypothesis_winner not in ("loss", "measurements"):
            raise ValueError(f"cnn.hypothesis_winner: expected 'loss' or 'measurements', got {hypothesis_winner!r}")
        if hypothesis_winner == "measurements" and self.hypotheses > 1 and not measure_weight > 0:
            raise ValueError("cnn.hypothesis_winner = measurements needs the measurement term (cnn.measure_weight > 0)")
        self.hypothesis_winner = hypothesis_winner
        if loss_mode not in ("latent", "spectrum"):
            raise ValueError(f"cnn.loss: expected 'latent' or 'spectrum', got {loss_mode!r}")
        if loss_mode == "spectrum" and decoder is None:
            raise ValueError("cnn.loss = spectrum needs the VAE decoder")
        self.measure_weight = float(measure_weight)
        if self.measure_weight > 0 and (loss_mode != "spectrum" or measure_loss is None):
            raise ValueError("cnn.measure_weight > 0 needs cnn.loss = spectrum and the measurement term")
        self.measure_loss = measure_loss if self.measure_weight > 0 else None
        self.measure_tracker = keras.metrics.Mean(name="measure_huber") if self.measure_loss is not None else None
        self.class_weight = float(class_weight)
        if self.class_weight > 0 and (self.measure_loss is None or class_loss is None):
            raise ValueError("cnn.measure_class_weight > 0 needs the measurement term (cnn.measure_weight > 0)")
        self.class_loss = class_loss if self.class_weight > 0 else None
        self.class_tracker = keras.metrics.Mean(name="class_bce") if self.class_loss is not None else None
        self.cnn = hypothesis_view(cnn)  # the same layers; with K hypotheses, all of them in the output
        self.pick_tracker = keras.metrics.Mean(name="hypothesis_ce") if self.hypotheses > 1 else None
        self.latent_dim = int(latent_dim)
        self.loss_mode = loss_mode
        self.decoder = decoder
        if decoder is not None:
            decoder.trainable = False
        self.nll_tracker = keras.metrics.Mean(name="latent_nll")
        # Only tracked in spectrum mode, so the latent mode's history has no dead column.
        self.chi2_tracker = keras.metrics.Mean(name="chi2") if loss_mode == "spectrum" else None
        self.redshift_weight = float(redshift_weight)
        self.conditioned = decoder is not None and int(decoder.input_shape[-1]) == self.latent_dim + 1
        self.z_tracker = keras.metrics.Mean(name="z_nll") if self.redshift_weight > 0 else None

    def call(self, inputs, training=False):
        return self.cnn(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        L = self.latent_dim
        if self.hypotheses == 1:
            parts = self._fit_parts(y_pred[:, :L], y_pred[:, L:2 * L], y)
            self._track(parts)
            total = self._total(parts)
        else:
            total = self._hypotheses_loss(y_pred, y)
        if self.z_tracker is not None:
            z_nll = self._redshift_nll(y_pred[:, 2 * L:2 * L + 2], y["z"])
            self.z_tracker.update_state(z_nll)
            total = total + self.redshift_weight * z_nll
        return ops.mean(total)

    def _fit_parts(self, mean, logvar, y) -> dict:
        """Per-object terms of one latent prediction: "nll" [, "chi2" [, "measure" [, "class"]]]."""
        if self.loss_mode == "latent":
            return {"nll": gaussian_nll(mean, logvar, y["mu"], y["var"])}
        parts = {"nll": gaussian_nll(ops.stop_gradient(mean), logvar, y["mu"], y["var"])}
        if self.conditioned:  # rest-frame decoder: redshifted with the true z, as in VAE training
            mean = ops.concatenate([mean, y["z"][:, 0:1]], axis=-1)
        parts["chi2"] = chi2_per_pixel(self.decoder(mean, training=False), y["flux"], y["ivar"])
        if self.measure_loss is not None:
            measured = self.measure_loss.measure(mean)
            parts["measure"] = self.measure_loss.compare(measured, y["measures"], y["measures_ok"])
            if self.class_loss is not None:
                parts["class"] = self.class_loss(measured, y["measure_classes"])
        return parts

    def _total(self, parts: dict):
        return parts["nll"] + parts.get("chi2", 0.0) + self._measurement_terms(parts)

    def _measurement_terms(self, parts: dict):
        """The weighted measurement and class terms of `parts` (0.0 without them)."""
        terms = 0.0
        if "measure" in parts:
            terms = terms + self.measure_weight * parts["measure"]
        if "class" in parts:
            terms = terms + self.class_weight * parts["class"]
        return terms

    def _track(self, parts: dict) -> None:
        trackers = {"nll": self.nll_tracker, "chi2": self.chi2_tracker, "measure": self.measure_tracker,
                    "class": self.class_tracker}
        for name, value in parts.items():
            trackers[name].update_state(value)

    def _hypotheses_loss(self, y_pred, y):
        """Relaxed winner-takes-all over the K hypotheses (after the network's own output): the best
        fitting one takes 1 - relax of its loss, the others relax / (K - 1) each, and a cross-entropy
        teaches the logits to name the winner. The trackers follow the most probable hypothesis, the
        one the network publishes."""
        L, K = self.latent_dim, self.hypotheses
        view = y_pred[:, -(2 * K * L + K):]  # the hypotheses' block ends the training view's output
        means, logvars, logits = view[:, :K * L], view[:, K * L:2 * K * L], view[:, 2 * K * L:]
        each = [self._fit_parts(means[:, k * L:(k + 1) * L], logvars[:, k * L:(k + 1) * L], y) for k in range(K)]
        parts = {name: ops.stack([p[name] for p in each], axis=-1) for name in each[0]}
        if self.hypothesis_winner == "loss":
            shared, common = self._total(parts), 0.0
        else:  # the terms on the measurements are shared out; chi2 and NLL taken by every hypothesis
            shared = self._measurement_terms(parts)
            common = ops.mean(parts["nll"] + parts["chi2"], axis=-1)
        winner = ops.one_hot(ops.argmin(ops.stop_gradient(shared), axis=-1), K)
        share = winner * (1.0 - self.hypothesis_relax) + (1.0 - winner) * (self.hypothesis_relax / (K - 1))
        pick = -ops.sum(winner * ops.log_softmax(logits, axis=-1), axis=-1)
        self.pick_tracker.update_state(pick)
        published = ops.one_hot(ops.argmax(logits, axis=-1), K)
        self._track({name: ops.sum(published * value, axis=-1) for name, value in parts.items()})
        return ops.sum(share * shared, axis=-1) + common + pick

    @staticmethod
    def _redshift_nll(z_pred, z_target):
        """Per-object Gaussian NLL of z (0 where the target has no finite z)."""
        ok = z_target[:, 1:2]
        nll = gaussian_nll(z_pred[:, 0:1], z_pred[:, 1:2], z_target[:, 0:1])
        return nll * ok[:, 0]

    @property
    def metrics(self):
        extra = [self.nll_tracker] + ([self.chi2_tracker] if self.chi2_tracker is not None else [])
        extra += [self.measure_tracker] if self.measure_tracker is not None else []
        extra += [self.class_tracker] if self.class_tracker is not None else []
        extra += [self.z_tracker] if self.z_tracker is not None else []
        extra += [self.pick_tracker] if self.pick_tracker is not None else []
        return [*super().metrics, *extra]
