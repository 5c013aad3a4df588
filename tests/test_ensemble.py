"""Seed ensembles (`cnn.ensemble`): one network of the single network's layout, the members' mixture."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from img2spec.config import params_from_dict
from img2spec.config.models import CNNParams
from img2spec.io.processed import ProcessedData
from img2spec.paths import Paths
from img2spec.prep.synthetic import write_synthetic_processed
from test_predict_support import LATENT, SIZE, build_project

HYBRID = CNNParams(filters=(4,), dense_units=8, photometry=True, photometry_units=(8,), redshift_weight=1.0)


def _mixture(outputs: list[np.ndarray], means: list[int], logvars: list[int]) -> np.ndarray:
    """The equal-weight mixture written out in NumPy: every column averaged, each log-variance
    column log(mean of the variances + variance of the means)."""
    x = np.stack(outputs).astype(np.float64)
    out = x.mean(axis=0)
    out[:, logvars] = np.log(np.exp(x[:, :, logvars]).mean(axis=0) + x[:, :, means].var(axis=0))
    return out


def _members(n: int, params: CNNParams = HYBRID):
    """`n` hybrid CNNs with a redshift head, built from different seeds (random weights everywhere)."""
    import keras

    from img2spec.models.cnn import build_cnn

    members = []
    for k in range(n):
        keras.utils.set_random_seed(k)
        cnn = build_cnn((SIZE, SIZE, 5), LATENT, params, np.zeros(LATENT), np.ones(LATENT), 0.08, 0.02,
                        np.zeros(5), np.ones(5))
        for layer in cnn.layers:  # zero-initialised heads would make every member say the same
            if layer.weights and layer.name.startswith(("z_", "latent", "logvar")):
                layer.set_weights([np.random.default_rng(k).normal(0, 0.3, w.shape).astype(np.float32)
                                   for w in layer.get_weights()])
        members.append(cnn)
    return members


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"images": rng.normal(size=(n, SIZE, SIZE, 5)).astype(np.float32),
            "photometry": np.column_stack([rng.normal(size=(n, 5)), np.zeros(n)]).astype(np.float32)}


def test_gaussian_mixture_layer_is_the_equal_weight_mixture():
    """Means averaged; variance = mean variance + variance of the means; one member unchanged;
    columns in any order."""
    from img2spec.models.ensemble import GaussianMixture

    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 10)).astype(np.float32)
    b = a.copy()
    b[:, :4] += 2.0  # means 2 apart: the variance grows by 1
    b[:, 4:8] += np.log(3.0)  # member b has 3x the variance
    b[:, 8] += 0.2
    means, logvars = [0, 1, 2, 3, 8], [4, 5, 6, 7, 9]
    got = np.asarray(GaussianMixture(means, logvars)([a, b]))
    np.testing.assert_allclose(got[:, :4], a[:, :4] + 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(got[:, 4:8]), 2.0 * np.exp(a[:, 4:8]) + 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(got[:, 9]), np.exp(a[:, 9]) + 0.01, rtol=1e-4)
    np.testing.assert_allclose(got, _mixture([a, b], means, logvars), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(GaussianMixture(means, logvars)([a])), a, rtol=1e-5, atol=1e-6)
    shuffled = [2, 9, 0, 4, 1, 5, 3, 6, 7, 8]  # same pairs, columns permuted
    got2 = np.asarray(GaussianMixture([shuffled.index(c) for c in means],
                                      [shuffled.index(c) for c in logvars])([a[:, shuffled], b[:, shuffled]]))
    np.testing.assert_allclose(got2, got[:, shuffled], rtol=1e-5, atol=1e-6)


def test_cnn_ensemble_keeps_the_single_network_contract(tmp_path):
    """Same inputs and output layout, the redshift head and the photometry input still found, the output
    the members' mixture (latents and z alike), and the same after save and load."""
    import keras

    from img2spec.models.cnn import has_redshift_head, uses_photometry
    from img2spec.models.ensemble import cnn_ensemble, gaussian_columns

    members = _members(2)
    x = _inputs(7)
    outs = [np.asarray(m(x, training=False)) for m in members]
    assert not np.allclose(outs[0], outs[1])
    ens = cnn_ensemble(members, redshift=True)
    assert has_redshift_head(ens) and uses_photometry(ens)
    assert [t.name for t in ens.inputs] == ["images", "photometry"] and ens.output_shape == members[0].output_shape
    want = _mixture(outs, *gaussian_columns(outs[0].shape[1], redshift=True))
    np.testing.assert_allclose(np.asarray(ens(x, training=False)), want, rtol=1e-4, atol=1e-5)
    ens.save(tmp_path / "cnn.keras")
    back = keras.saving.load_model(tmp_path / "cnn.keras", compile=False)
    np.testing.assert_allclose(np.asarray(back(x, training=False)), want, rtol=1e-4, atol=1e-5)
    assert cnn_ensemble(members[:1], redshift=True) is members[0]


def test_ensemble_bundle_exports_to_onnx_equal_to_keras(tmp_path):
    """A bundle whose CNN is an ensemble exports one ONNX graph that predicts what Keras predicts."""
    from img2spec.models.ensemble import cnn_ensemble
    from img2spec.models.train import photometry_inputs
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle
    from test_predict import EXPORT_ATOL

    facts = build_project(tmp_path)
    data = ProcessedData.open(tmp_path / "data" / "processed")
    cnn_ensemble(_members(2), redshift=True).save(tmp_path / "models" / "cnn" / "cnn.keras")
    _, stats = photometry_inputs(data, np.arange(len(data)))
    (tmp_path / "models" / "cnn" / "cnn.json").write_text(json.dumps({"latent_dim": LATENT,
                                                                      "training": {"photometry": stats}}))
    build_bundle(params_from_dict({"publish": {"batch_size": 5, "registry": False}}), Paths(tmp_path))
    onnx = Predictor.from_path(tmp_path / "models" / "img2spec")
    assert onnx.runtime == "onnx"
    tf_run = Predictor.from_path(onnx.bundle_dir, runtime="tensorflow")
    a, b = onnx.predict_batch(facts["images"][:5]), tf_run.predict_batch(facts["images"][:5])
    for name in ("z", "z_err", "flux", "sigma"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=EXPORT_ATOL, err_msg=name)
    # a fresh process that imports nothing of the ensemble's own loads it through the package's loader
    np.save(tmp_path / "images.npy", facts["images"][:5])
    code = ("import sys, numpy as np\nfrom img2spec.predict import Predictor\n"
            "p = Predictor.from_path(sys.argv[1], runtime='tensorflow')\n"
            "np.save(sys.argv[3], p.predict_batch(np.load(sys.argv[2])).z)\n")
    subprocess.run([sys.executable, "-c", code, str(onnx.bundle_dir), str(tmp_path / "images.npy"),
                    str(tmp_path / "z.npy")], check=True, capture_output=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), b.z, rtol=0, atol=EXPORT_ATOL)


def test_direct_ensemble_mixes_quantities_and_averages_class_probabilities():
    from img2spec.models.direct import (LOGVAR_OUT, MEAN_OUT, QUANTITIES, SCHEMES, build_direct, direct_ensemble,
                                        fusion_heads)

    members = [build_direct(m, HYBRID) for m in _members(2)]
    x = _inputs(6, seed=1)
    outs = [m(x, training=False) for m in members]
    ens = direct_ensemble(members)
    got = ens(x, training=False)
    Q = len(QUANTITIES)
    pairs = [np.concatenate([np.asarray(o[MEAN_OUT]), np.asarray(o[LOGVAR_OUT])], axis=1) for o in outs]
    want = _mixture(pairs, list(range(Q)), list(range(Q, 2 * Q)))
    np.testing.assert_allclose(np.concatenate([np.asarray(got[MEAN_OUT]), np.asarray(got[LOGVAR_OUT])], axis=1),
                               want, rtol=1e-4, atol=1e-5)
    heads = np.asarray(fusion_heads(ens)(x, training=False))
    np.testing.assert_allclose(heads[:, :2 * Q], want, rtol=1e-4, atol=1e-5)
    start = 2 * Q
    for col in SCHEMES:
        probs = np.asarray(got[col])
        np.testing.assert_allclose(probs, (np.asarray(outs[0][col]) + np.asarray(outs[1][col])) / 2, rtol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(heads[:, start:start + probs.shape[1]], probs, rtol=1e-5)
        start += probs.shape[1]
    assert heads.shape[1] == start


def test_train_cnn_ensemble_trains_one_member_per_seed(tmp_path):
    """`cnn.ensemble: 2`: members seeded seed and seed + 1 (they differ), the saved network is their
    mixture, and cnn.json lists every member."""
    import keras

    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn_ensemble

    data = ProcessedData.open(write_synthetic_processed(tmp_path / "p", n=60))
    rng = np.random.default_rng(0)
    lat = Latents(rng.normal(size=(len(data), 2)).astype(np.float32), np.full((len(data), 2), -1.0, np.float32))
    p = CNNParams(filters=(4,), dense_units=8, epochs=1, patience=1, batch_size=32, ensemble=2, seed=5)
    result = train_cnn_ensemble(p, data, lat, out_dir=tmp_path / "cnn")
    info = json.loads((tmp_path / "cnn" / "cnn.json").read_text())
    assert info["training"]["ensemble"]["seeds"] == [5, 6]
    assert len(info["training"]["ensemble"]["best_val_loss"]) == 2
    model = keras.saving.load_model(tmp_path / "cnn" / "cnn.keras", compile=False)
    images = np.asarray(data.images[:8], np.float32)
    outs = [np.asarray(model.get_layer(f"cnn_member{k}")(images, training=False)) for k in range(2)]
    assert not np.allclose(outs[0], outs[1])
    np.testing.assert_allclose(np.asarray(model(images, training=False)), _mixture(outs, [0, 1], [2, 3]),
                               rtol=1e-4, atol=1e-5)
    assert result.info["epochs_run"] == sum(info["training"]["ensemble"]["epochs_run"])


def test_ensemble_param_is_validated():
    with pytest.raises(ValueError, match="ensemble"):
        CNNParams(ensemble=0)
