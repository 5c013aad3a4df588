"""Photo-z: the metric functions on known inputs, the colour-kNN photo-z, and the CNN's
redshift head learning z from images that encode it (saved, reloaded, predicted)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from img2spec.config.models import CNNParams
from img2spec.evaluate.redshift import OUTLIER_THRESHOLD, knn_photoz, photoz_metrics, redshift_metrics
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import write_synthetic_processed

Z_PATTERN = np.array([1.0, -0.5, -1.0, -0.5, 1.0])
"""Per-band pattern (orthogonal to the synthetic colour slope) whose amplitude encodes z."""
Z_CNN = CNNParams(filters=(8, 16), dense_units=32, epochs=10, patience=10, batch_size=32, loss="latent",
                  redshift_weight=1.0, dropout=0.0, train_pca=False, bn_momentum=0.9)
"""Tiny data: few steps per epoch, so the BatchNorm moving statistics need a short memory."""


def test_photoz_metrics_known_values():
    z_true = np.array([0.1, 0.1, 0.1, 0.1, 0.1, np.nan])
    dz = np.array([0.0, 0.011, -0.011, 0.022, 0.11, 0.0])
    m = photoz_metrics(z_true + dz, z_true)
    assert m["n"] == 5
    # dz/(1+z) = 0, 0.01, -0.01, 0.02, 0.1; median dz = 0.011 -> |dz - med| = .011 0 .022 .011 .099
    assert m["sigma_nmad"] == pytest.approx(1.4826 * 0.011 / 1.1)
    assert m["bias"] == pytest.approx(np.mean(dz[:5] / 1.1))
    assert m["outlier_fraction"] == pytest.approx(1 / 5)  # only 0.1 > OUTLIER_THRESHOLD
    assert OUTLIER_THRESHOLD == 0.05
    perfect = photoz_metrics(z_true, z_true)
    assert perfect["sigma_nmad"] == 0 and perfect["bias"] == 0 and perfect["outlier_fraction"] == 0
    assert photoz_metrics(np.array([np.nan]), np.array([0.1]))["n"] == 0
    with pytest.raises(ValueError, match="shape"):
        photoz_metrics(np.zeros(2), np.zeros(3))


def test_knn_photoz_follows_colours_and_skips_missing():
    rng = np.random.default_rng(0)
    n = 400
    z = rng.uniform(0.02, 0.2, n)
    mags = {b: 17.0 + c * z * 10 + rng.normal(0, 0.01, n) for b, c in zip("grizy", (2.0, 1.0, 0.5, 0.2, 0.0))}
    cat = pd.DataFrame({"z": z, **{f"mag_{b}": v for b, v in mags.items()}})
    cat.loc[n - 1, "mag_g"] = np.nan
    train, test = np.arange(300), np.arange(300, n)
    pred, info = knn_photoz(cat, train, test, k=5, use_magnitude=False)
    assert info["n_no_colours"] == 1 and np.isnan(pred[-1])
    m = photoz_metrics(pred, z[test])
    assert m["n"] == len(test) - 1
    assert m["sigma_nmad"] < 0.01  # colours determine z here
    out = redshift_metrics(None, cat, train, test, 5, False)
    assert "cnn" not in out and out["knn_colour"]["n"] == m["n"]


@pytest.fixture(scope="module")
def z_data(tmp_path_factory) -> ProcessedData:
    """Synthetic processed data whose images carry z in a band pattern."""
    root = write_synthetic_processed(tmp_path_factory.mktemp("zproc") / "processed", n=400, size=16, seed=4)
    data = ProcessedData.open(root)
    z = data.catalog["z"].to_numpy()
    zs = (z - 0.075) / 0.025  # -1 .. 1 over the synthetic range
    images = np.load(root / "images.npy")
    images = images * (1.0 + 0.4 * zs[:, None, None, None] * Z_PATTERN[None, None, None, :])
    np.save(root / "images.npy", images.astype(np.float32))
    return ProcessedData.open(root)


@pytest.mark.slow  # a learning claim: trains until the head beats a constant z (~40 s on 2 busy cores)
def test_redshift_head_learns_z_from_images(z_data, tmp_path):
    from img2spec.models.inference import load_models, predict_spectra
    from img2spec.models.pca import fit_pca
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn

    data = z_data
    train, test = data.indices("train"), data.indices("test")
    pca = fit_pca(data.flux[train], data.ivar[train], 2, seed=0)
    coeffs = pca.project(data.flux, data.ivar)
    lat = Latents(coeffs, np.full_like(coeffs, -4.0))
    result = train_cnn(Z_CNN, data, lat, pca.decoder(), out_dir=tmp_path / "cnn")
    assert result.info["redshift_head"] and "val_z_nll" in result.history
    assert result.model.output_shape[-1] == 2 * 2 + 2

    pca.decoder().save(tmp_path / "cnn" / "decoder.keras")
    loaded = load_models(tmp_path / "cnn", tmp_path / "cnn")
    pred = predict_spectra(loaded.cnn, loaded.decoder, data.images[test], sigma_method="none")
    z_true = data.catalog["z"].to_numpy()[test]
    assert pred.z.shape == z_true.shape and (pred.z_err > 0).all()
    mae_cnn = np.mean(np.abs(pred.z - z_true))
    mae_median = np.mean(np.abs(np.median(data.catalog["z"].to_numpy()[train]) - z_true))
    assert mae_cnn < 0.3 * mae_median, (mae_cnn, mae_median)
    # the evaluate stage's summary carries both methods
    out = redshift_metrics(pred.z, data.catalog, train, test, 5, True)
    assert out["cnn"]["n"] == len(test) and out["knn_colour"]["n"] == len(test)
    assert out["cnn"]["sigma_nmad"] < out["knn_colour"]["sigma_nmad"]  # colours here carry no z


def test_cnn_without_redshift_head_predicts_no_z(tmp_path):
    """redshift_weight 0 (and models made before the head existed): z stays absent."""
    from img2spec.models.cnn import build_cnn, has_redshift_head
    from img2spec.models.inference import predict_spectra
    from img2spec.models.vae import build_decoder

    params = CNNParams(filters=(4,), dense_units=8)
    plain = build_cnn((8, 8, 5), 2, params, np.zeros(2), np.ones(2))
    with_z = build_cnn((8, 8, 5), 2, params, np.zeros(2), np.ones(2), redshift_mean=0.1, redshift_std=0.02)
    assert not has_redshift_head(plain) and has_redshift_head(with_z)
    dec = build_decoder(6, 2, (4,))
    images = np.random.default_rng(0).random((3, 8, 8, 5)).astype(np.float32)
    a = predict_spectra(plain, dec, images, sigma_method="none")
    assert a.z is None and a.z_err is None
    b = predict_spectra(with_z, dec, images, sigma_method="none")
    # an untrained head starts at the train mean with the train scatter
    np.testing.assert_allclose(b.z, 0.1, atol=1e-6)
    np.testing.assert_allclose(b.z_err, 0.02, rtol=1e-4)
    assert a.flux.shape == b.flux.shape
