"""vae.frame: rest: the decoder decodes a rest-frame spectrum and redshifts it explicitly
(differentiably) onto the observed grid; trained with the true z, decoded at the CNN's
predicted z or the user's; saved models reload; observed stays the default."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.models import CNNParams, VAEParams
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import LINE_REST, write_synthetic_processed

REST_VAE = VAEParams(frame="rest", latent_dim=3, encoder_units=(32,), decoder_units=(32,), epochs=3,
                     kl_warmup_epochs=1, patience=3, batch_size=32)
REST_CNN = CNNParams(filters=(4, 8), dense_units=16, epochs=2, patience=2, batch_size=32, loss="spectrum",
                     redshift_weight=1.0, train_pca=False)


def test_redshift_layer_moves_a_line_and_has_a_z_gradient():
    import tensorflow as tf

    from img2spec.models.layers import RedshiftToObserved
    from img2spec.models.vae import rest_grid

    obs = np.geomspace(3800.0, 9200.0, 400)
    start, step, n = rest_grid(obs, 0.0, 0.3)
    rest_wave = np.exp(start + step * np.arange(n))
    rest = np.exp(-0.5 * ((rest_wave - LINE_REST) / 8.0) ** 2)[None].astype(np.float32)
    layer = RedshiftToObserved(start, step, n, np.log(obs))
    for z in (0.0, 0.1, 0.25):
        cond = np.array([[0.0, 0.0, z]], np.float32)
        out = np.asarray(layer([rest, cond]))[0]
        assert obs[np.argmax(out)] == pytest.approx(LINE_REST * (1 + z), rel=2 * (obs[1] / obs[0] - 1))
    cond = tf.Variable([[0.0, 0.0, 0.1]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        flux = layer([tf.constant(rest), cond])
        loss = tf.reduce_sum(flux * tf.constant(obs[None], tf.float32))  # moves with the line's position
    grad = tape.gradient(loss, cond).numpy()
    assert grad[0, 2] > 0 and np.all(grad[0, :2] == 0)  # a higher z moves flux to redder pixels


@pytest.fixture(scope="module")
def rest_models(tmp_path_factory):
    from img2spec.models.inference import encode_spectra
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn, train_vae

    root = tmp_path_factory.mktemp("rest")
    data = ProcessedData.open(write_synthetic_processed(root / "processed", n=80))
    vae = train_vae(REST_VAE, data, out_dir=root / "vae")
    mu, logvar = encode_spectra(vae.model.encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy())
    cnn = train_cnn(REST_CNN, data, Latents(mu, logvar), vae.model.decoder, out_dir=root / "cnn")
    return root, data, vae, cnn


def test_rest_frame_vae_and_cnn_train_save_and_reload(rest_models):
    from img2spec.models.inference import decode, decoder_input, is_conditioned, load_models, predict_spectra

    root, data, vae, cnn = rest_models
    assert np.isfinite(vae.best_val_loss) and np.isfinite(cnn.best_val_loss)
    assert is_conditioned(vae.model.decoder, REST_VAE.latent_dim)
    loaded = load_models(root / "vae", root / "cnn")
    assert is_conditioned(loaded.decoder, REST_VAE.latent_dim)
    a = predict_spectra(cnn.model, vae.model.decoder, data.images, batch_size=32)
    b = predict_spectra(loaded.cnn, loaded.decoder, data.images, batch_size=9)
    np.testing.assert_allclose(a.flux, b.flux, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.rest_flux, b.rest_flux, rtol=1e-4, atol=1e-5)
    assert a.z is not None and a.latent_mu.shape[1] == REST_VAE.latent_dim
    assert a.rest_flux.shape == (len(data), len(a.rest_wave)) and not a.z_given.any()
    # given z, the observed-frame prediction is the decoder at (latent mean, z)
    at_z = predict_spectra(loaded.cnn, loaded.decoder, data.images, z=a.z)
    assert at_z.z_given.all()
    np.testing.assert_allclose(at_z.flux, decode(loaded.decoder, decoder_input(loaded.decoder, a.latent_mu, a.z)),
                               rtol=1e-4, atol=5e-5)  # float64 shift vs the float32 layer
    # without z it is the rest-frame prediction averaged over N(z, z_err): smoother than at one z
    assert np.abs(np.diff(a.flux, axis=1)).sum() < np.abs(np.diff(at_z.flux, axis=1)).sum()
    with pytest.raises(ValueError, match="needs z"):
        decoder_input(loaded.decoder, a.latent_mu)


def test_user_redshift_replaces_the_predicted_one(rest_models):
    from img2spec.models.inference import decode, decoder_input, predict_spectra

    _, data, vae, cnn = rest_models
    images = data.images[:6]
    z_user = np.array([0.07, np.nan, 0.2, np.nan, 0.05, 0.09])
    base = predict_spectra(cnn.model, vae.model.decoder, images)
    given = predict_spectra(cnn.model, vae.model.decoder, images, z=z_user)
    z_used = np.where(np.isfinite(z_user), z_user, base.z)
    known = np.isfinite(z_user)
    exact = decode(vae.model.decoder, decoder_input(vae.model.decoder, base.latent_mu, z_used))
    np.testing.assert_allclose(given.flux[known], exact[known], rtol=1e-4, atol=5e-5)
    np.testing.assert_array_equal(given.z_given, known)
    np.testing.assert_allclose(given.z_used, z_used, rtol=1e-6)
    unknown = ~known
    np.testing.assert_allclose(given.flux[unknown], base.flux[unknown], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(given.rest_flux, base.rest_flux, rtol=1e-6, atol=1e-7)  # z never changes the rest frame
    # a known z carries no redshift uncertainty: at the same z, the spread over z leaves sigma
    same = predict_spectra(cnn.model, vae.model.decoder, images, z=np.where(unknown, np.nan, base.z))
    assert np.mean(same.sigma[known] ** 2) < np.mean(base.sigma[known] ** 2)
    np.testing.assert_allclose(same.sigma[unknown], base.sigma[unknown], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(given.z, base.z)  # the reported photo-z is still the CNN's


def test_rest_decoder_needs_the_redshift_head(rest_models):
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn

    _, data, vae, _ = rest_models
    lat = Latents(np.zeros((len(data), 3), np.float32), np.zeros((len(data), 3), np.float32))
    with pytest.raises(ValueError, match="redshift_weight"):
        train_cnn(REST_CNN.model_copy(update={"redshift_weight": 0.0}), data, lat, vae.model.decoder)
    assert VAEParams().frame == "observed"


def test_given_z_rows_take_their_own_sigma_factor(rest_models):
    from img2spec.models.inference import predict_spectra

    _, data, vae, cnn = rest_models
    images = data.images[:4]
    z = np.array([0.07, np.nan, 0.09, np.nan])
    raw = predict_spectra(cnn.model, vae.model.decoder, images, z=z)
    scaled = predict_spectra(cnn.model, vae.model.decoder, images, z=z, sigma_scale=2.0, sigma_scale_given_z=3.0)
    known = np.isfinite(z)
    np.testing.assert_allclose(scaled.sigma[known], 3.0 * raw.sigma[known], rtol=1e-6)
    np.testing.assert_allclose(scaled.sigma[~known], 2.0 * raw.sigma[~known], rtol=1e-6)
    np.testing.assert_allclose(scaled.rest_sigma, 3.0 * raw.rest_sigma, rtol=1e-6)  # no redshift term in it
