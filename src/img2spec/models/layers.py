"""Custom Keras layers that are part of saved models (registered for `.keras` loading)."""

from __future__ import annotations

import keras
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

    def __init__(self, left, right, weight, **kwargs):
        super().__init__(**kwargs)
        self.left = [int(v) for v in left]
        self.right = [int(v) for v in right]
        self.weight = [float(v) for v in weight]

    def call(self, y):
        w = ops.convert_to_tensor(self.weight, dtype=y.dtype)
        a = ops.take(y, ops.convert_to_tensor(self.left, dtype="int32"), axis=-1)
        b = ops.take(y, ops.convert_to_tensor(self.right, dtype="int32"), axis=-1)
        return (1.0 - w) * a + w * b

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "left": self.left, "right": self.right, "weight": self.weight}


def fill_indices(trained: "np.ndarray") -> tuple[list[int], list[int], list[float]]:
    """(left, right, weight) of `FillPixels` for a boolean (P,) mask of trained pixels."""
    import numpy as np

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
