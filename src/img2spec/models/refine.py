"""Best-fit latents: the encoder's estimate refined by gradient steps on each spectrum's chi-square.

The encoder is amortised inference: one network guesses every spectrum's latents at once, and
its guess is not the decoder's best fit (the amortisation gap). What a prediction through the
decoder can at best reach is the decoder's best fit to the observed spectrum, so the ceiling
is scored on refined latents. Each object's latents move on its own chi-square alone (Adam is
element-wise and the loss a sum over objects), so the result does not depend on the batching.
"""

from __future__ import annotations

import numpy as np

from .data import clean_flux


def refine_latents(decoder, mu: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray | None = None, *,
                   steps: int, learning_rate: float, batch_size: int = 1024) -> np.ndarray:
    """(N, L) latents minimising sum_p ivar (decoder(latents[, z]) - flux)^2 per object, from `mu`
    by `steps` Adam steps; a rest-frame decoder needs `z`. `steps` 0 returns `mu`."""
    mu = np.asarray(mu, np.float32)
    if steps <= 0 or len(mu) == 0:
        return mu.copy()
    import keras
    import tensorflow as tf

    flux, ivar = clean_flux(flux, ivar)
    zcol = None if z is None else np.asarray(z, np.float32).reshape(-1, 1)
    out = np.empty_like(mu)
    for start in range(0, len(mu), batch_size):
        sl = slice(start, min(start + batch_size, len(mu)))
        latents = tf.Variable(mu[sl])
        cond = None if zcol is None else tf.constant(zcol[sl])
        target, weight = tf.constant(flux[sl]), tf.constant(ivar[sl])
        opt = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                x = latents if cond is None else tf.concat([latents, cond], axis=1)
                loss = tf.reduce_sum(weight * tf.square(decoder(x, training=False) - target))
            opt.apply_gradients([(tape.gradient(loss, latents), latents)])

        for _ in range(int(steps)):
            step()
        out[sl] = latents.numpy()
    return out
