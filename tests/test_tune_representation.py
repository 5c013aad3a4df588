"""The VAE study's objective scores what users get from a representation (val split only)."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config import params_from_dict
from img2spec.config.models import VAEParams
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import write_synthetic_processed

TINY = VAEParams(frame="rest", latent_dim=3, encoder_units=(32,), decoder_units=(32,), epochs=3, kl_warmup_epochs=1,
                 patience=3, batch_size=32)


def _score(root, poison=None):
    from img2spec.models.train import train_vae, with_filled_pixels
    from img2spec.tuning.representation import representation_score

    data = ProcessedData.open(write_synthetic_processed(root, n=90, n_pix=1200, poison_test=poison))
    result = train_vae(TINY, data)
    decoder = with_filled_pixels(result.model.decoder, result.info["trained_pixels"])
    return representation_score(result.model.encoder, decoder, data, params_from_dict({}).measure, k=3,
                                use_magnitude=True)


def test_score_is_the_mean_ratio_to_the_colour_knn_and_never_reads_test_rows(tmp_path):
    clean = _score(tmp_path / "clean")
    assert {"D", "halpha_ew"} <= set(clean["ratios"])
    for key, ratio in clean["ratios"].items():
        assert ratio == pytest.approx(clean["ceiling"][key] / clean["knn_colour"][key])
    assert clean["score"] == pytest.approx(np.mean(list(clean["ratios"].values())))
    poisoned = _score(tmp_path / "poisoned", poison=1e4)
    assert poisoned["score"] == pytest.approx(clean["score"], rel=1e-6)
