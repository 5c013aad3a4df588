"""The ceiling's best-fit latents: refinement reaches the decoder's chi-square minimum and does not
depend on the batching."""

from __future__ import annotations

import keras
import numpy as np

from img2spec.models.refine import refine_latents
from img2spec.models.vae import build_decoder

L, P = 3, 40


def _linear_decoder():
    keras.utils.set_random_seed(0)
    return build_decoder(P, L, [])  # flux = W latents + b: the best fit is weighted least squares


def _data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    dec = _linear_decoder()
    truth = rng.normal(size=(n, L)).astype(np.float32)
    ivar = rng.uniform(0.5, 2.0, (n, P)).astype(np.float32)
    ivar[:, :4] = 0.0  # masked pixels weigh nothing
    flux = np.asarray(dec(truth)) + rng.normal(size=(n, P)).astype(np.float32) / np.sqrt(np.maximum(ivar, 0.5))
    flux[:, :4] = 1e6  # garbage under the mask
    return dec, flux, ivar


def test_refinement_reaches_the_weighted_least_squares_fit():
    dec, flux, ivar = _data()
    W = np.asarray(dec.layers[-1].kernel, np.float64)  # (L, P)
    b = np.asarray(dec.layers[-1].bias, np.float64)
    expected = np.stack([np.linalg.solve((W * w) @ W.T, (W * w) @ (np.where(w > 0, f, 0) - b))
                         for f, w in zip(flux.astype(np.float64), ivar.astype(np.float64))])
    start = np.zeros((len(flux), L), np.float32)
    got = refine_latents(dec, start, flux, ivar, steps=800, learning_rate=0.05)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.abs(start - expected).max() > 0.3  # the start was far from it


def test_no_steps_is_the_encoder_and_batches_do_not_matter():
    dec, flux, ivar = _data(n=7)
    start = np.random.default_rng(1).normal(size=(7, L)).astype(np.float32)
    np.testing.assert_array_equal(refine_latents(dec, start, flux, ivar, steps=0, learning_rate=0.05), start)
    whole = refine_latents(dec, start, flux, ivar, steps=50, learning_rate=0.05)
    split = refine_latents(dec, start, flux, ivar, steps=50, learning_rate=0.05, batch_size=3)
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-5)
    assert np.abs(whole - start).max() > 0.1
