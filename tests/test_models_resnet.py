"""cnn.architecture: resnet builds residual blocks, trains through the same API, saves and
reloads to identical predictions; plain stays the default."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.models import CNNParams
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import write_synthetic_processed

RESNET = CNNParams(architecture="resnet", filters=(4, 8), dense_units=16, epochs=2, patience=2, batch_size=32,
                   loss="latent", train_pca=False, redshift_weight=0.5)


def test_resnet_blocks_have_shortcuts_and_plain_is_default():
    from img2spec.models.cnn import build_cnn

    assert CNNParams().architecture == "plain"
    res = build_cnn((16, 16, 5), 2, RESNET, np.zeros(2), np.ones(2))
    plain = build_cnn((16, 16, 5), 2, RESNET.model_copy(update={"architecture": "plain"}), np.zeros(2), np.ones(2))
    names = [layer.name for layer in res.layers]
    assert "res0_add" in names and "res1_add" in names and "res1_proj" in names
    assert not any(n.startswith("res") for n in (layer.name for layer in plain.layers))
    assert res.output_shape == plain.output_shape == (None, 4)


def test_resnet_trains_saves_and_reloads(tmp_path):
    from img2spec.models.inference import load_models, predict_spectra
    from img2spec.models.latents import Latents
    from img2spec.models.pca import fit_pca
    from img2spec.models.train import train_cnn

    data = ProcessedData.open(write_synthetic_processed(tmp_path / "processed", n=60))
    train = data.indices("train")
    pca = fit_pca(data.flux[train], data.ivar[train], 2, seed=0)
    coeffs = pca.project(data.flux, data.ivar)
    result = train_cnn(RESNET, data, Latents(coeffs, np.full_like(coeffs, -4.0)), pca.decoder(),
                       out_dir=tmp_path / "cnn")
    assert np.isfinite(result.best_val_loss) and result.info["redshift_head"]
    pca.decoder().save(tmp_path / "cnn" / "decoder.keras")
    loaded = load_models(tmp_path / "cnn", tmp_path / "cnn")
    a = predict_spectra(result.model, loaded.decoder, data.images, sigma_method="none")
    b = predict_spectra(loaded.cnn, loaded.decoder, data.images, sigma_method="none", batch_size=7)
    np.testing.assert_allclose(a.flux, b.flux, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.z, b.z, rtol=1e-5)


def test_unknown_architecture_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="architecture"):
        CNNParams(architecture="vit")
