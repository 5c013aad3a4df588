"""Models: masked pixels, augmentation, training API, save/load, inference determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.config.models import CNNParams, VAEParams
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import write_synthetic_processed

TINY_VAE = VAEParams(latent_dim=3, encoder_units=(32,), decoder_units=(32,), epochs=3, kl_warmup_epochs=1,
                     patience=2, batch_size=32)
TINY_CNN = CNNParams(filters=(4, 8), dense_units=16, epochs=2, patience=2, batch_size=32, shift_pixels=0.3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ProcessedData:
    return ProcessedData.open(write_synthetic_processed(tmp_path_factory.mktemp("proc") / "processed", n=80))


@pytest.fixture(scope="module")
def vae(data, tmp_path_factory):
    from img2spec.models.train import train_vae

    out = tmp_path_factory.mktemp("vae")
    return train_vae(TINY_VAE, data, out_dir=out), out


def test_chi2_ignores_masked_pixels():
    from img2spec.models.losses import chi2_per_pixel

    flux = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    pred = np.array([[1.5, 2.0, 3.0, 4.0]], np.float32)
    ivar = np.array([[4.0, 1.0, 0.0, 1.0]], np.float32)
    base = float(np.asarray(chi2_per_pixel(pred, flux, ivar))[0])
    assert base == pytest.approx(0.5 * 4.0 * 0.25 / 4)
    # Anything (even NaN/inf) under a mask changes nothing.
    for junk in (1e6, np.nan, np.inf):
        bad = flux.copy()
        bad[0, 2] = junk
        assert float(np.asarray(chi2_per_pixel(pred, bad, ivar))[0]) == pytest.approx(base)


def test_encoder_ignores_masked_values():
    from img2spec.models.vae import build_encoder

    enc = build_encoder(6, 2, (8,))
    flux = np.linspace(1, 2, 6, dtype=np.float32)[None]
    ivar = np.array([[1, 1, 0, 1, 1, 0]], np.float32)
    junk = flux.copy()
    junk[0, [2, 5]] = [1e5, np.nan]
    a = [np.asarray(t) for t in enc([flux, ivar])]
    b = [np.asarray(t) for t in enc([junk, ivar])]
    np.testing.assert_allclose(a[0], b[0])
    assert np.isfinite(b[1]).all()


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_augmentation_keeps_flux(shift):
    import tensorflow as tf

    from img2spec.models.augment import augment_batch

    rng = np.random.default_rng(1)
    images = rng.random((16, 12, 12, 5)).astype(np.float32)
    out = augment_batch(tf.constant(images), tf.constant([3, 7], tf.int64), shift).numpy()
    np.testing.assert_allclose(out.sum(axis=(1, 2)), images.sum(axis=(1, 2)), rtol=1e-5)
    assert not np.allclose(out, images)  # something was transformed
    if shift == 0.0:  # pure D4: the same pixel values, rearranged
        np.testing.assert_allclose(np.sort(out.reshape(16, -1), axis=1), np.sort(images.reshape(16, -1), axis=1))


def test_train_vae_result_and_artefacts(vae, data):
    result, out = vae
    assert np.isfinite(result.best_val_loss)
    assert result.best_val_loss == pytest.approx(min(result.history["val_loss"][TINY_VAE.kl_warmup_epochs:]))
    for name in ("encoder.keras", "decoder.keras", "vae.json", "wave.npy"):
        assert (out / name).exists()
    # The grid frame is the one prepare recorded (meta.json wave.frame), not a missing key's None.
    assert json.loads((out / "vae.json").read_text())["frame"] == data.meta["wave"]["frame"] == "observed"
    assert result.model.decoder.output_shape[-1] == data.flux.shape[1]


def test_cnn_latent_and_spectrum_losses_save_load(vae, data, tmp_path):
    from img2spec.models.inference import encode_spectra, load_models, predict_spectra
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn

    result, vae_dir = vae
    mu, logvar = encode_spectra(result.model.encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy())
    assert np.isfinite(mu).all()
    for loss in ("latent", "spectrum"):
        params = TINY_CNN.model_copy(update={"loss": loss})
        cnn = train_cnn(params, data, Latents(mu, logvar), result.model.decoder, out_dir=tmp_path / loss)
        assert np.isfinite(cnn.best_val_loss)
        assert cnn.model.output_shape[-1] == 2 * TINY_VAE.latent_dim
    loaded = load_models(vae_dir, tmp_path / "spectrum")
    a = predict_spectra(cnn.model, result.model.decoder, data.images, n_samples=6, batch_size=32, seed=3)
    b = predict_spectra(loaded.cnn, loaded.decoder, data.images, n_samples=6, batch_size=7, seed=3)
    np.testing.assert_allclose(a.flux, b.flux, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-4, atol=1e-6)  # independent of batch size
    assert a.flux.shape == (len(data), data.flux.shape[1]) and (a.sigma > 0).all()


def test_train_cnn_rejects_misaligned_latents(data):
    from img2spec.models.train import train_cnn

    with pytest.raises(ValueError, match="rows"):
        train_cnn(TINY_CNN, data, (np.zeros((3, 2)), np.zeros((3, 2))), None)


def test_untrained_pixels_are_interpolated_and_reload(tmp_path):
    import keras

    from img2spec.models.inference import decode
    from img2spec.models.train import with_filled_pixels
    from img2spec.models.vae import build_decoder

    dec = build_decoder(10, 2, (8,))
    trained = np.ones(10, bool)
    trained[[0, 4, 5, 9]] = False  # an edge, a two-pixel gap, the other edge
    filled = with_filled_pixels(dec, trained)
    z = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    raw, out = decode(dec, z), decode(filled, z)
    np.testing.assert_allclose(out[:, trained], raw[:, trained], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0], raw[:, 1], rtol=1e-6)
    np.testing.assert_allclose(out[:, 9], raw[:, 8], rtol=1e-6)
    np.testing.assert_allclose(out[:, 4], raw[:, 3] + (raw[:, 6] - raw[:, 3]) / 3, rtol=1e-5, atol=1e-6)
    filled.save(tmp_path / "decoder.keras")
    again = keras.saving.load_model(tmp_path / "decoder.keras", compile=False)
    np.testing.assert_allclose(decode(again, z), out, rtol=1e-6)
    assert with_filled_pixels(dec, np.ones(10, bool)) is dec
