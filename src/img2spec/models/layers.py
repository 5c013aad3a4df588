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
