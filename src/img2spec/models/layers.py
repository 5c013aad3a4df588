"""Custom Keras layers that are part of saved models (registered for `.keras` loading)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="img2spec")
class MaskedFlux(keras.layers.Layer):
    """(flux, ivar) -> concat(flux where ivar > 0 else 0, good-pixel mask): the encoder
    never sees the values under a mask (which may be anything, even non-finite)."""

    def call(self, inputs):
        flux, ivar = inputs
        good = ivar > 0
        clean = ops.where(good, flux, ops.zeros_like(flux))
        return ops.concatenate([clean, ops.cast(good, flux.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        shape[-1] = None if shape[-1] is None else 2 * shape[-1]
        return tuple(shape)


@keras.saving.register_keras_serializable(package="img2spec")
class FillPixels(keras.layers.Layer):
    """Replace pixels the VAE never saw unmasked in training (fixed sky-line masks, grid
    edges) by linear interpolation between the nearest trained pixels: their raw decoder
    output is unconstrained by the likelihood. out[p] = (1 - w[p]) y[left[p]] + w[p] y[right[p]];
    trained pixels have left = right = p, so they pass through unchanged."""

    linear_map = True
    """out is a linear, bias-free function of y, so its Jacobian-vector product is the layer
    applied to the tangent (`models.inference.linearised_sigma` relies on this)."""

    def __init__(self, left, right, weight, **kwargs):
        super().__init__(**kwargs)
        self.left = [int(v) for v in left]
        self.right = [int(v) for v in right]
        self.weight = [float(v) for v in weight]
        # Only the few filled pixels are gathered: a gather over all P columns of a wide
        # batch costs more than the decoder's output layer itself.
        left_a, right_a = np.asarray(self.left, np.int32), np.asarray(self.right, np.int32)
        filled = np.flatnonzero((left_a != np.arange(left_a.size)) | (right_a != np.arange(right_a.size)))
        self._n_filled = int(filled.size)
        self._left_f, self._right_f = left_a[filled], right_a[filled]
        self._w_f = np.asarray(self.weight, np.float32)[filled]
        self._keep = np.ones(left_a.size, np.float32)
        self._keep[filled] = 0.0
        self._scatter = np.zeros((filled.size, left_a.size), np.float32)
        self._scatter[np.arange(filled.size), filled] = 1.0

    def call(self, y):
        if not self._n_filled:
            return y
        w = ops.convert_to_tensor(self._w_f, dtype=y.dtype)
        a = ops.take(y, ops.convert_to_tensor(self._left_f), axis=-1)
        b = ops.take(y, ops.convert_to_tensor(self._right_f), axis=-1)
        filled = (1.0 - w) * a + w * b  # (..., n_filled): the same arithmetic for every filled pixel
        # Trained pixels: y * 1 + 0 (exact); filled pixels: y * 0 + filled (exact for finite y).
        keep = ops.convert_to_tensor(self._keep, dtype=y.dtype)
        return y * keep + ops.matmul(filled, ops.convert_to_tensor(self._scatter, dtype=y.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "left": self.left, "right": self.right, "weight": self.weight}


def fill_indices(trained: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """(left, right, weight) of `FillPixels` for a boolean (P,) mask of trained pixels."""
    trained = np.asarray(trained, bool)
    idx = np.arange(trained.size)
    good = idx[trained]
    if good.size == 0:
        raise ValueError("no pixel of the grid has unmasked training data")
    pos = np.searchsorted(good, idx)
    left = good[np.clip(pos - 1, 0, good.size - 1)]
    right = good[np.clip(pos, 0, good.size - 1)]
    left = np.where(trained, idx, np.where(idx < good[0], right, left))
    right = np.where(trained, idx, np.where(idx > good[-1], left, right))
    span = np.maximum(right - left, 1)
    weight = np.where(right == left, 0.0, (idx - left) / span)
    return left.tolist(), right.tolist(), weight.tolist()


@keras.saving.register_keras_serializable(package="img2spec")
class Columns(keras.layers.Layer):
    """x[..., start:stop]: the latent part of a redshift-conditioned decoder's input."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="img2spec")
class RedshiftToObserved(keras.layers.Layer):
    """Rest-frame spectrum on a log-uniform rest grid -> the observed grid at redshift z.

    Inputs `[rest_flux (B, R), conditioning (B, L + 1)]`; z is the conditioning's last
    column. Observed pixel p samples the rest spectrum at ln(lambda_p) - ln(1 + z) by
    linear interpolation between the two nearest rest pixels (clamped at the grid ends),
    so the output is differentiable in the rest flux and, through the interpolation
    weights, in z (spender's explicit redshifting). Flux density is not rescaled by
    (1 + z): spectra here are normalised by the object's own photometry.
    """

    def __init__(self, rest_ln_start: float, rest_ln_step: float, n_rest: int, obs_ln_wave, **kwargs):
        super().__init__(**kwargs)
        self.rest_ln_start = float(rest_ln_start)
        self.rest_ln_step = float(rest_ln_step)
        self.n_rest = int(n_rest)
        self.obs_ln_wave = [float(v) for v in np.asarray(obs_ln_wave, np.float64)]
        self._obs = np.asarray(self.obs_ln_wave, np.float32)

    def call(self, inputs):
        rest, cond = inputs
        z = cond[..., -1:]
        pos = (ops.convert_to_tensor(self._obs, dtype=rest.dtype)[None, :] - ops.log1p(z) - self.rest_ln_start) \
            / self.rest_ln_step
        pos = ops.clip(pos, 0.0, float(self.n_rest - 1))
        left = ops.minimum(ops.floor(pos), float(self.n_rest - 2))
        w = pos - left
        i0 = ops.cast(left, "int32")
        a = ops.take_along_axis(rest, i0, axis=-1)
        b = ops.take_along_axis(rest, i0 + 1, axis=-1)
        return (1.0 - w) * a + w * b

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(self.obs_ln_wave))

    def get_config(self):
        return {**super().get_config(), "rest_ln_start": self.rest_ln_start, "rest_ln_step": self.rest_ln_step,
                "n_rest": self.n_rest, "obs_ln_wave": self.obs_ln_wave}


@keras.saving.register_keras_serializable(package="img2spec")
class ObservedToRest(keras.layers.Layer):
    """(flux, ivar, z) on the observed grid -> concat(flux, good-pixel mask) on a rest grid.

    Rest pixel k samples the observed spectrum at ln(lambda_k) + ln(1 + z) by linear
    interpolation; it is good only when both observed neighbours are unmasked and it falls on
    the observed grid (else flux 0, mask 0), so the encoder of a rest-frame VAE sees every
    galaxy's lines in the same pixels whatever its redshift, and never reads under a mask.
    The output has `MaskedFlux`'s layout (values, then mask).
    """

    def __init__(self, obs_ln_start: float, obs_ln_step: float, n_obs: int, rest_ln_wave, **kwargs):
        super().__init__(**kwargs)
        self.obs_ln_start = float(obs_ln_start)
        self.obs_ln_step = float(obs_ln_step)
        self.n_obs = int(n_obs)
        self.rest_ln_wave = [float(v) for v in np.asarray(rest_ln_wave, np.float64)]
        self._rest = np.asarray(self.rest_ln_wave, np.float32)

    def call(self, inputs):
        flux, ivar, z = inputs
        z = ops.reshape(ops.cast(z, flux.dtype), (-1, 1))
        rest = ops.convert_to_tensor(self._rest, dtype=flux.dtype)[None, :]
        pos = (rest + ops.log1p(z) - self.obs_ln_start) / self.obs_ln_step
        inside = ops.cast((pos >= 0.0) & (pos <= float(self.n_obs - 1)), flux.dtype)
        pos = ops.clip(pos, 0.0, float(self.n_obs - 1))
        left = ops.minimum(ops.floor(pos), float(self.n_obs - 2))
        w = pos - left
        i0 = ops.cast(left, "int32")
        good = ivar > 0
        clean = ops.where(good, flux, ops.zeros_like(flux))
        mask = ops.cast(good, flux.dtype)
        ok = ops.take_along_axis(mask, i0, axis=-1) * ops.take_along_axis(mask, i0 + 1, axis=-1) * inside
        values = (1.0 - w) * ops.take_along_axis(clean, i0, axis=-1) + w * ops.take_along_axis(clean, i0 + 1, axis=-1)
        return ops.concatenate([values * ok, ok], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2 * len(self.rest_ln_wave))

    def get_config(self):
        return {**super().get_config(), "obs_ln_start": self.obs_ln_start, "obs_ln_step": self.obs_ln_step,
                "n_obs": self.n_obs, "rest_ln_wave": self.rest_ln_wave}


@keras.saving.register_keras_serializable(package="img2spec")
class HiddenWithInput(keras.layers.Layer):
    """concat(MLP(x), x): a decoder's hidden features with its latents beside them, so the
    output layer after it is an MLP plus a linear map of the latents (a skip path). One layer,
    so the decoder stays a chain that `inference` can split into a body and a linear tail."""

    def __init__(self, units, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(n) for n in units)
        self.activation = activation
        self.dense = [keras.layers.Dense(n, activation=activation, name=f"dense{i}") for i, n in enumerate(self.units)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense:
            layer.build(shape)
            shape = (*shape[:-1], layer.units)

    def call(self, x):
        h = x
        for layer in self.dense:
            h = layer(h)
        return ops.concatenate([h, x], axis=-1)

    def compute_output_shape(self, input_shape):
        width = self.units[-1] if self.units else 0
        return (*input_shape[:-1], width + input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": list(self.units), "activation": self.activation}
