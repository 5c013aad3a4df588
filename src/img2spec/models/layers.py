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
