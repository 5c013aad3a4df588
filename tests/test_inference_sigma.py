"""The predicted uncertainty: linearised (delta-method) sigma, its fast paths, and FillPixels."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from img2spec.models import inference
from img2spec.models.inference import linearised_sigma, predict_spectra
from img2spec.models.layers import FillPixels, fill_indices
from img2spec.models.train import with_filled_pixels
from img2spec.models.vae import build_decoder

L, P = 4, 60


def _decoder(units=(16, 32), seed=0, fill=True, skip=False):
    keras.utils.set_random_seed(seed)
    dec = build_decoder(P, L, list(units), skip=skip)
    if fill:
        trained = np.ones(P, bool)
        trained[[0, 1, 17, 18, 19, 40, P - 1]] = False  # an edge, a gap, a single pixel, the far edge
        dec = with_filled_pixels(dec, trained)
    return dec


def _fd_sigma(decoder, mu, std, step=1e-2):
    """Central finite differences in float64 around mu, step x std per direction."""
    cols = []
    for l in range(mu.shape[1]):
        dz = np.zeros_like(mu)
        dz[:, l] = step * std[:, l]
        hi = np.asarray(decoder(mu + dz), np.float64)
        lo = np.asarray(decoder(mu - dz), np.float64)
        cols.append((hi - lo) / (2 * step))  # derivative along l, times std_l
    return np.sqrt(np.sum(np.square(cols), axis=0))


def _latents(n=6, seed=1):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, L)).astype(np.float32)
    std = rng.uniform(0.05, 0.5, (n, L)).astype(np.float32)
    return mu, std


def test_linear_decoder_sigma_is_exact():
    dec = _decoder(units=(), fill=False)  # z -> W z + b
    mu, std = _latents()
    kernel = np.asarray(dec.layers[-1].kernel, np.float64)  # (L, P)
    expected = np.sqrt(np.einsum("nl,lp->np", np.square(std.astype(np.float64)), np.square(kernel)))
    got = linearised_sigma(dec, mu, std)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("fill", [True, False])
def test_linearised_sigma_matches_finite_differences(fill):
    dec = _decoder(fill=fill)
    body, tail = inference._linear_split(dec)  # the fast path: only the gelu body is differentiated
    assert [type(t).__name__ for t in tail] == (["Dense", "FillPixels"] if fill else ["Dense"])
    assert len(body) == 2
    mu, std = _latents()
    got = linearised_sigma(dec, mu, std)
    np.testing.assert_allclose(got, _fd_sigma(dec, mu, std), rtol=2e-3, atol=1e-6)
    if fill:  # filled pixels interpolate their neighbours' sigma too, not left at 0
        assert np.all(got[:, [0, 18, P - 1]] > 0)


def test_skip_decoder_is_mlp_plus_linear_map_and_keeps_the_fast_sigma(tmp_path):
    """`vae.decoder_skip`: the output layer reads the latents beside the hidden features; the decoder
    stays a chain (one layer for the body), survives a save/load, and its sigma is still exact."""
    dec = _decoder(fill=False, skip=True)
    out = dec.layers[-1]
    assert out.kernel.shape == (32 + L, P)  # hidden features and latents
    mu, std = _latents()
    hidden = np.asarray(dec.layers[1](mu))
    np.testing.assert_allclose(hidden[:, 32:], mu)  # the latents pass through unchanged
    body, tail = inference._linear_split(dec)
    assert [type(t).__name__ for t in body] == ["HiddenWithInput"] and [type(t).__name__ for t in tail] == ["Dense"]
    dec.save(tmp_path / "decoder.keras")
    again = keras.models.load_model(tmp_path / "decoder.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(again(mu)), np.asarray(dec(mu)))
    np.testing.assert_allclose(linearised_sigma(again, mu, std), _fd_sigma(dec, mu, std), rtol=2e-3, atol=1e-6)


def test_nonlinear_output_falls_back_to_the_whole_decoder():
    keras.utils.set_random_seed(2)
    z = keras.Input((L,))
    out = keras.layers.Dense(P, activation="softplus")(keras.layers.Dense(16, activation="gelu")(z))
    dec = keras.Model(z, out)
    assert inference._linear_split(dec) is None
    mu, std = _latents()
    np.testing.assert_allclose(linearised_sigma(dec, mu, std), _fd_sigma(dec, mu, std), rtol=2e-3, atol=1e-6)


def test_linearised_agrees_with_sampling_for_small_latent_spread():
    """For a narrow latent posterior the decoder is locally linear: both methods agree."""
    dec = _decoder()
    keras.utils.set_random_seed(3)
    x = keras.Input((8, 8, 5))
    flat = keras.layers.Flatten()(x)
    head = keras.layers.Dense(2 * L)(flat)
    cnn = keras.Model(x, head)
    images = 0.01 * np.random.default_rng(4).normal(size=(5, 8, 8, 5)).astype(np.float32)
    # Push the predicted log-variance very negative so the spread is small (std ~ 0.05).
    cnn.layers[-1].bias.assign(np.r_[np.zeros(L), np.full(L, -6.0)].astype(np.float32))
    lin = predict_spectra(cnn, dec, images, sigma_method="linearised")
    smp = predict_spectra(cnn, dec, images, sigma_method="sampled", n_samples=4000, seed=0)
    np.testing.assert_array_equal(lin.flux, smp.flux)
    ratio = lin.sigma / smp.sigma
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    assert np.all(np.abs(ratio - 1) < 0.08)  # Monte Carlo error of a std from 4000 draws: ~1%
    none = predict_spectra(cnn, dec, images, sigma_method="none")
    assert np.isnan(none.sigma).all()
    np.testing.assert_array_equal(none.flux, lin.flux)


def test_sigma_does_not_depend_on_batch_size_and_rejects_unknown_method():
    dec = _decoder()
    keras.utils.set_random_seed(5)
    x = keras.Input((8, 8, 5))
    cnn = keras.Model(x, keras.layers.Dense(2 * L)(keras.layers.Flatten()(x)))
    images = np.random.default_rng(6).normal(size=(9, 8, 8, 5)).astype(np.float32)
    a = predict_spectra(cnn, dec, images, batch_size=9)
    b = predict_spectra(cnn, dec, images, batch_size=4)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_method"):
        predict_spectra(cnn, dec, images, sigma_method="bootstrap")


def test_fill_pixels_matches_interpolation_formula_bitwise():
    trained = np.ones(50, bool)
    trained[[0, 10, 11, 12, 30, 49]] = False
    left, right, weight = fill_indices(trained)
    layer = FillPixels(left, right, weight)
    y = np.random.default_rng(7).normal(size=(13, 50)).astype(np.float32)
    w = np.asarray(weight, np.float32)
    expected = (np.float32(1) - w) * y[:, left] + w * y[:, right]
    got = np.asarray(layer(y))
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(got[:, trained], y[:, trained])


def test_decoder_layers_take_the_seeded_draws_in_call_order():
    """The initial weights a seed gives depend on the order layers are made: the first hidden layer
    takes the first draw (a refactor that built the output layer first changed every trained model)."""
    keras.utils.set_random_seed(0)
    first = keras.layers.Dense(16, activation="gelu")
    first.build((None, L))
    keras.utils.set_random_seed(0)
    dec = build_decoder(P, L, [16, 32])
    np.testing.assert_array_equal(np.asarray(dec.get_layer("dec_dense0").kernel), np.asarray(first.kernel))


def _rest_like_decoder(width=5, latent=4, seed=0):
    """concat(latents, z) -> a Columns selection of the latents -> gelu, tanh Dense -> linear output
    (the rest-frame decoder's layout: z does not enter its body)."""
    from img2spec.models.layers import Columns

    keras.utils.set_random_seed(seed)
    inp = keras.Input((width,))
    x = Columns(0, latent)(inp)
    x = keras.layers.Dense(16, activation="gelu")(x)
    x = keras.layers.Dense(12, activation="tanh")(x)
    return keras.Model(inp, keras.layers.Dense(P)(x))


def test_dense_chain_jacobian_equals_vectorised_forward_mode_and_finite_differences(monkeypatch):
    """The body's tangents by kernels x activation slopes (one derivative per object) equal forward
    mode vectorised over the directions, and both give the finite-difference sigma; the last input
    (z) is no direction."""
    dec = _rest_like_decoder()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 5)).astype(np.float32)
    std = rng.uniform(0.05, 0.5, (5, 4)).astype(np.float32)
    body, tail = inference._linear_split(dec)
    assert inference._dense_part(body) is not None and len(tail) == 1
    fast = linearised_sigma(dec, x, std)
    ref = _fd_sigma(dec, x, np.concatenate([std, np.zeros((5, 1), np.float32)], axis=1))
    np.testing.assert_allclose(fast, ref, rtol=2e-3, atol=1e-6)
    monkeypatch.setattr(inference, "_dense_part", lambda body: None)
    again = _rest_like_decoder()  # a new model: its split is built afresh without the Dense-chain path
    np.testing.assert_allclose(linearised_sigma(again, x, std), fast, rtol=1e-5, atol=1e-7)


def test_split_decoder_columns_equal_the_whole_spectrum_on_those_pixels():
    """Flux and sigma of a pixel subset equal those pixels of the full decode (float32 rounding)."""
    dec = _decoder(fill=True)
    mu, std = _latents()
    split = inference.split_decoder(dec)
    cols = np.array([0, 3, 17, 18, 30, P - 1])
    np.testing.assert_allclose(split.flux(mu, cols), split.flux(mu)[:, cols], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(split.sigma(mu, std, cols), split.sigma(mu, std)[:, cols], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.flux(mu), np.asarray(dec(mu)), rtol=1e-5, atol=1e-6)  # the folded tail


@pytest.mark.parametrize("chain", [True, False])
def test_vector_jacobian_products_equal_the_contracted_jacobian(monkeypatch, chain):
    """The fusion's few measurement gradients pulled back in reverse mode (Dense chain, or a tape over
    any body) equal the forward-mode Jacobian contracted with them; as many covectors as directions
    take the forward-mode path."""
    if not chain:
        monkeypatch.setattr(inference, "_dense_part", lambda body: None)
    split = inference.split_decoder(_rest_like_decoder(seed=int(chain)))
    assert split.body_vjp is not None
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 5)).astype(np.float32)
    std = rng.uniform(0.05, 0.5, (5, 4)).astype(np.float32)
    cols = np.array([1, 7, 8, 30, P - 1])
    jac = split.jacobian(x, std, cols)
    for q in (2, 4):
        w = rng.normal(size=(5, q, len(cols))).astype(np.float32)
        got = split.jacobian_dot(x, std, cols, w)
        assert got.shape == (5, q, 4)
        np.testing.assert_allclose(got, np.einsum("bqc,bdc->bqd", w, jac), rtol=1e-4, atol=1e-6)
    # a decoder without a linear tail: its body's output is the spectrum, both modes agree on it
    from dataclasses import replace

    hidden = np.asarray(split.body(x)).shape[1]
    bare = replace(split, kernel=None, bias=None, width=hidden)
    hcols = np.array([0, 3, hidden - 1])
    w = rng.normal(size=(5, 2, len(hcols))).astype(np.float32)
    forward_only = replace(bare, body_vjp=None)
    np.testing.assert_allclose(bare.jacobian_dot(x, std, hcols, w), forward_only.jacobian_dot(x, std, hcols, w),
                               rtol=1e-4, atol=1e-6)
