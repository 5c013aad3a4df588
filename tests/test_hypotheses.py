"""Latent hypotheses (`cnn.hypotheses` > 1): the selection, the winner-takes-all loss, training,
save/load and the exported graph."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.models import CNNParams
from img2spec.io.processed import ProcessedData
from img2spec.prep.synthetic import write_synthetic_processed

L, K = 3, 3
TINY = CNNParams(filters=(4, 8), dense_units=16, epochs=2, patience=2, batch_size=32, hypotheses=K,
                 hypothesis_relax=0.1)


def test_the_most_probable_hypothesis_is_selected():
    from img2spec.models.cnn import SelectHypothesis

    rng = np.random.default_rng(0)
    means, logvars = rng.normal(size=(5, K * L)), rng.normal(size=(5, K * L))
    logits = rng.normal(size=(5, K))
    logits[4] = [0.3, 0.3, -1.0]  # an exact tie: the two averaged
    mean, logvar = (np.asarray(a) for a in SelectHypothesis(K)([means, logvars, logits]))
    k = logits.argmax(axis=1)
    np.testing.assert_allclose(mean[:4], means.reshape(5, K, L)[np.arange(4), k[:4]], rtol=1e-6)
    np.testing.assert_allclose(logvar[:4], logvars.reshape(5, K, L)[np.arange(4), k[:4]], rtol=1e-6)
    np.testing.assert_allclose(mean[4], means.reshape(5, K, L)[4, :2].mean(axis=0), rtol=1e-6)


def test_one_hypothesis_builds_the_network_as_before():
    from img2spec.models.cnn import build_cnn, hypothesis_count, hypothesis_view

    cnn = build_cnn((8, 8, 5), L, CNNParams(filters=(4,)), np.zeros(L), np.ones(L))
    names = {layer.name for layer in cnn.layers}
    assert {"z_mean", "z_logvar"} <= names and "hypothesis_logits" not in names
    assert hypothesis_count(cnn) == 1 and hypothesis_view(cnn) is cnn


def test_the_winner_takes_the_loss_and_the_logits_learn_its_name():
    """Latent mode, hand-made network output: loss = sum_k share_k NLL_k + CE(logits, winner)."""
    import keras

    from img2spec.models.cnn import build_cnn
    from img2spec.models.losses import gaussian_nll
    from img2spec.models.trainer import CNNTrainer

    cnn = build_cnn((8, 8, 5), L, CNNParams(filters=(4,), hypotheses=K), np.zeros(L), np.ones(L))
    trainer = CNNTrainer(cnn, L, "latent", hypothesis_relax=0.1)
    rng = np.random.default_rng(1)
    n = 6
    means, logvars, logits = rng.normal(size=(n, K, L)), 0.1 * rng.normal(size=(n, K, L)), rng.normal(size=(n, K))
    y = {"mu": rng.normal(size=(n, L)).astype(np.float32), "var": np.full((n, L), 0.2, np.float32)}
    published = np.zeros((n, 2 * L))  # not read by the loss: the hypotheses after it are
    y_pred = np.concatenate([published, means.reshape(n, -1), logvars.reshape(n, -1), logits], axis=1)
    got = float(np.asarray(trainer.compute_loss(y=y, y_pred=keras.ops.convert_to_tensor(y_pred, "float32"))))

    nll = np.stack([np.asarray(gaussian_nll(means[:, k], logvars[:, k], y["mu"], y["var"])) for k in range(K)], 1)
    win = nll.argmin(axis=1)
    share = np.where(np.arange(K) == win[:, None], 0.9, 0.1 / (K - 1))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.mean((share * nll).sum(axis=1) - log_p[np.arange(n), win])
    assert got == pytest.approx(expected, rel=1e-5)
    assert len(set(win)) > 1  # the check covers more than one winner


class _SquaredMeasure:
    """A stand-in measurement term: the latents themselves, compared by their mean squared difference."""

    def measure(self, latents):
        return latents

    def compare(self, measured, target, ok):
        import keras

        return keras.ops.mean(keras.ops.square(measured - target) * ok, axis=-1)


def test_a_winner_on_the_measurements_shares_out_only_their_term():
    """Spectrum mode: loss = mean_k (chi2_k + NLL_k) + sum_k share_k w M_k + CE(logits, argmin_k M_k)."""
    import keras

    from img2spec.models.cnn import build_cnn
    from img2spec.models.losses import chi2_per_pixel, gaussian_nll
    from img2spec.models.trainer import CNNTrainer

    n, P, w = 6, 10, 3.0
    keras.utils.set_random_seed(0)  # the decoder's weights: the last check depends on them
    cnn = build_cnn((8, 8, 5), L, CNNParams(filters=(4,), hypotheses=K), np.zeros(L), np.ones(L))
    inp = keras.Input((L,))
    decoder = keras.Model(inp, keras.layers.Dense(P)(inp))
    with pytest.raises(ValueError, match="hypothesis_winner"):
        CNNTrainer(cnn, L, "spectrum", decoder, hypothesis_winner="measurements")
    trainer = CNNTrainer(cnn, L, "spectrum", decoder, measure_loss=_SquaredMeasure(), measure_weight=w,
                         hypothesis_relax=0.1, hypothesis_winner="measurements")
    rng = np.random.default_rng(3)
    means, logvars, logits = rng.normal(size=(n, K, L)), 0.1 * rng.normal(size=(n, K, L)), rng.normal(size=(n, K))
    y = {"mu": rng.normal(size=(n, L)).astype(np.float32), "var": np.full((n, L), 0.2, np.float32),
         "flux": rng.normal(size=(n, P)).astype(np.float32), "ivar": np.full((n, P), 2.0, np.float32),
         "measures": rng.normal(size=(n, L)).astype(np.float32), "measures_ok": np.ones((n, L), np.float32)}
    y_pred = np.concatenate([np.zeros((n, 2 * L)), means.reshape(n, -1), logvars.reshape(n, -1), logits], axis=1)
    got = float(np.asarray(trainer.compute_loss(y=y, y_pred=keras.ops.convert_to_tensor(y_pred, "float32"))))

    m32 = means.astype(np.float32)
    fit = np.stack([np.asarray(chi2_per_pixel(decoder(m32[:, k]), y["flux"], y["ivar"]))
                    + np.asarray(gaussian_nll(m32[:, k], logvars[:, k].astype(np.float32), y["mu"], y["var"]))
                    for k in range(K)], 1)
    term = ((means - y["measures"][:, None, :]) ** 2).mean(axis=-1)
    win = term.argmin(axis=1)
    share = np.where(np.arange(K) == win[:, None], 0.9, 0.1 / (K - 1))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.mean(fit.mean(axis=1) + (share * w * term).sum(axis=1) - log_p[np.arange(n), win])
    assert got == pytest.approx(expected, rel=1e-5)
    assert not np.array_equal(win, (fit + w * term).argmin(axis=1))  # the whole loss would pick otherwise


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_cnn

    root = tmp_path_factory.mktemp("hypotheses")
    data = ProcessedData.open(write_synthetic_processed(root / "processed", n=64))
    rng = np.random.default_rng(2)
    lat = Latents(rng.normal(size=(len(data), L)).astype(np.float32), np.full((len(data), L), -2.0, np.float32))
    return train_cnn(TINY, data, lat, None, out_dir=root / "cnn"), data, root


def test_trained_network_publishes_its_most_probable_hypothesis(trained):
    import keras

    from img2spec.models.cnn import hypothesis_count, hypothesis_view

    result, data, root = trained
    assert "hypothesis_ce" in result.history and np.all(np.isfinite(result.history["val_loss"]))
    cnn = result.model
    x = np.asarray(data.images[:32], np.float32)
    out = np.asarray(cnn(x))
    assert out.shape == (32, 2 * L)
    full = np.asarray(hypothesis_view(cnn)(x))
    means = full[:, 2 * L:2 * L + K * L].reshape(32, K, L)
    logvars = full[:, 2 * L + K * L:2 * L + 2 * K * L].reshape(32, K, L)
    k = full[:, -K:].argmax(axis=1)
    np.testing.assert_array_equal(out[:, :L], means[np.arange(32), k])
    np.testing.assert_array_equal(out[:, L:], logvars[np.arange(32), k])
    cnn.save(root / "again.keras")
    again = keras.saving.load_model(root / "again.keras", compile=False)
    assert hypothesis_count(again) == K
    np.testing.assert_array_equal(np.asarray(again(x)), out)


def test_exported_graph_equals_keras(trained):
    import onnxruntime as ort

    from img2spec.models.export import _cnn_function, _to_onnx

    result, data, root = trained
    x = np.asarray(data.images[:16], np.float32)
    _to_onnx(_cnn_function(result.model), root / "cnn.onnx")
    session = ort.InferenceSession(str(root / "cnn.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(result.model(x)), rtol=1e-5, atol=1e-5)
