"""On-the-fly image augmentation for training (never at validation or inference).

Every element of the dihedral group D4 (the sky has no up and no handedness) from three
independent coin flips per image: transpose, flip rows, flip columns. Optional sub-pixel
shifts by bilinear interpolation between the image and its one-pixel cyclic roll, which
conserves the summed flux exactly. Randomness is stateless, seeded by (seed, batch
counter), so a run is reproducible.
"""

from __future__ import annotations

import tensorflow as tf


def _where(flag, a, b):
    return tf.where(tf.reshape(flag, (-1, 1, 1, 1)), a, b)


def _shift_axis(x, frac, axis: int):
    """Bilinear shift by `frac` in [-1, 1] pixels (per image) along `axis` (1 rows, 2 cols)."""
    fwd = tf.roll(x, 1, axis=axis)
    back = tf.roll(x, -1, axis=axis)
    neighbour = _where(frac >= 0, fwd, back)
    w = tf.reshape(tf.abs(frac), (-1, 1, 1, 1))
    return (1.0 - w) * x + w * neighbour


def augment_batch(images: tf.Tensor, seed: tf.Tensor, shift_pixels: float = 0.0) -> tf.Tensor:
    """Random D4 transform (+ optional shift up to `shift_pixels`) of each image in a
    (B, H, W, C) batch; `seed` is a shape-(2,) int tensor for the stateless RNG."""
    batch = tf.shape(images)[0]
    u = tf.random.stateless_uniform((batch, 5), seed=seed)
    x = images
    if images.shape[1] == images.shape[2]:  # transposing needs square cutouts
        x = _where(u[:, 0] < 0.5, tf.transpose(x, (0, 2, 1, 3)), x)
    x = _where(u[:, 1] < 0.5, tf.reverse(x, axis=[1]), x)
    x = _where(u[:, 2] < 0.5, tf.reverse(x, axis=[2]), x)
    if shift_pixels > 0:
        x = _shift_axis(x, (2.0 * u[:, 3] - 1.0) * shift_pixels, axis=1)
        x = _shift_axis(x, (2.0 * u[:, 4] - 1.0) * shift_pixels, axis=2)
    return x
