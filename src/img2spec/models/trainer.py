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
The inputs are what the CNN takes: images, or {"images", "photometry"} for a hybrid CNN.
"""

from __future__ import annotations

import keras
from keras import ops

from .losses import chi2_per_pixel, gaussian_nll


class CNNTrainer(keras.Model):
    def __init__(self, cnn: keras.Model, latent_dim: int, loss_mode: str = "latent",
                 decoder: keras.Model | None = None, redshift_weight: float = 0.0,
                 measure_loss=None, measure_weight: float = 0.0, class_loss=None, class_weight: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
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
        self.cnn = cnn
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
        mean, logvar = y_pred[:, :L], y_pred[:, L:2 * L]
        if self.loss_mode == "latent":
            nll = gaussian_nll(mean, logvar, y["mu"], y["var"])
            self.nll_tracker.update_state(nll)
            total = nll
        else:
            nll = gaussian_nll(ops.stop_gradient(mean), logvar, y["mu"], y["var"])
            if self.conditioned:  # rest-frame decoder: redshifted with the true z, as in VAE training
                mean = ops.concatenate([mean, y["z"][:, 0:1]], axis=-1)
            chi2 = chi2_per_pixel(self.decoder(mean, training=False), y["flux"], y["ivar"])
            self.nll_tracker.update_state(nll)
            self.chi2_tracker.update_state(chi2)
            total = chi2 + nll
            if self.measure_loss is not None:
                measured = self.measure_loss.measure(mean)
                term = self.measure_loss.compare(measured, y["measures"], y["measures_ok"])
                self.measure_tracker.update_state(term)
                total = total + self.measure_weight * term
                if self.class_loss is not None:
                    cls = self.class_loss(measured, y["measure_classes"])
                    self.class_tracker.update_state(cls)
                    total = total + self.class_weight * cls
        if self.z_tracker is not None:
            z_nll = self._redshift_nll(y_pred[:, 2 * L:2 * L + 2], y["z"])
            self.z_tracker.update_state(z_nll)
            total = total + self.redshift_weight * z_nll
        return ops.mean(total)

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
        return [*super().metrics, *extra]
