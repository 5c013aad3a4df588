"""The fusion of the CNN's latents with the direct model (`models.fusion`): the numpy measurements
and their gradients, the Levenberg-Marquardt pull, and a fusing bundle (exported direct heads,
predict on both runtimes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.config.measure import MeasureParams
from img2spec.measure import measure_spectra
from img2spec.measure.linear import LinearMeasures, measurement_weights
from img2spec.models.fusion import direct_quantities, fuse_latents
from img2spec.models.split import SplitDecoder

QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a", "log_oiii_hbeta", "log_nii_halpha")
HALPHA = 6564.6


def _grid() -> np.ndarray:
    return np.exp(np.arange(np.log(3600.0), np.log(7000.0), 1.5e-4))


def _spectra(wave: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Continua with a break and four emission lines of random strength."""
    rng = np.random.default_rng(seed)
    flux = 1.0 + 0.05 * rng.standard_normal((n, len(wave))) + 0.3 * (wave > 4000.0)
    for centre in (4862.7, 5008.2, HALPHA, 6585.3):
        flux += rng.uniform(0.5, 3.0, (n, 1)) * np.exp(-0.5 * ((wave - centre) / 2.0) ** 2)
    return flux


def test_linear_measures_equal_measure_spectra_and_their_gradients_finite_differences():
    """Values: the catalogue's `measure_spectra` on unmasked spectra; gradients: central differences."""
    mp = MeasureParams()
    wave = _grid()
    lm = LinearMeasures(measurement_weights(wave, mp), QUANTITIES)
    flux = _spectra(wave, 3)
    values, grads = lm.evaluate(flux[:, lm.columns])
    ref = measure_spectra(flux, wave, 0.0, mp, frame="rest")
    for k, q in enumerate(QUANTITIES):
        np.testing.assert_allclose(values[:, k], ref[q], rtol=1e-6, atol=1e-6, err_msg=q)
    f0, eps = flux[:, lm.columns], 1e-6
    for c in np.random.default_rng(1).choice(len(lm.columns), 40, replace=False):
        up, down = f0.copy(), f0.copy()
        up[:, c] += eps
        down[:, c] -= eps
        numeric = (lm.evaluate(up)[0] - lm.evaluate(down)[0]) / (2 * eps)
        np.testing.assert_allclose(grads[:, :, c], numeric, rtol=1e-5, atol=1e-6)


def test_linear_measures_refuse_an_unknown_quantity():
    with pytest.raises(ValueError, match="no differentiable form of 'oii_3727_flux'"):
        LinearMeasures(measurement_weights(_grid(), MeasureParams()), ("oii_3727_flux",))


def _line_decoder(wave: np.ndarray) -> SplitDecoder:
    """flux = 1 + x_0 * (a Halpha profile of 1 A per unit x_0): EW(Halpha) linear in latent 0."""
    profile = np.exp(-0.5 * ((wave - HALPHA) / 3.0) ** 2)
    profile /= profile.sum() * np.median(np.diff(wave))

    def body(x):
        return np.asarray(x[:, :1], np.float32)

    def body_jvp(x, std):
        out = np.zeros((len(x), std.shape[1], 1), np.float32)
        out[:, 0, 0] = std[:, 0]
        return out

    return SplitDecoder(body, body_jvp, profile[None, :].astype(np.float32), np.ones(len(wave), np.float32),
                        len(wave))


def test_fusion_pulls_the_measured_line_to_a_sharp_direct_prediction():
    """30 +- 0.5 A predicted under a wide latent prior (std 20): the fused spectrum measures ~30 A;
    with no finite target, or a weight of 0, the latents stay the CNN's."""
    mp = MeasureParams()
    wave = _grid()
    split = _line_decoder(wave)
    lm = LinearMeasures(measurement_weights(wave, mp), ("halpha_ew",))
    mu, std, z = np.zeros((3, 2), np.float32), np.full((3, 2), 20.0, np.float32), np.full(3, 0.05)
    target, sigma = np.array([[30.0], [10.0], [np.nan]]), np.array([[0.5], [0.5], [0.5]])
    fused = fuse_latents(split, lm, mu, std, z, target, sigma, weight=1.0, iterations=4)
    x = np.concatenate([fused, z[:, None].astype(np.float32)], axis=1)
    ew = measure_spectra(split.flux(x), wave, 0.0, mp, frame="rest")["halpha_ew"]
    # the prior pulls back by (x/std)^2: 30 A needs x ~ 30, whose prior term is (30/20)^2 against (dEW/0.5)^2
    assert abs(ew[0] - 30.0) < 0.2 and abs(ew[1] - 10.0) < 0.2
    np.testing.assert_array_equal(fused[2], mu[2])
    np.testing.assert_array_equal(fused[:, 1], mu[:, 1])  # latent 1 does not change the spectrum
    still = fuse_latents(split, lm, mu, std, z, target, sigma, weight=0.0, iterations=4)
    np.testing.assert_array_equal(still, mu)


def test_direct_quantities_are_destandardised_and_untrained_heads_nan():
    raw = np.array([[1.0, -1.0, 0.0, np.log(4.0)]])
    value, sigma = direct_quantities(raw, np.array([10.0, 1.5]), np.array([2.0, 0.1]), np.array([True, False]))
    np.testing.assert_allclose(value[0, 0], 12.0)
    np.testing.assert_allclose(sigma[0, 0], 2.0)  # exp(0.5 * 0) * 2
    assert np.isnan(value[0, 1]) and np.isnan(sigma[0, 1])


# ----------------------------------------------------------------------------- a fusing bundle
def _write_direct(root, images_shape) -> None:
    """A tiny direct model with the CNN's input: EW(Halpha) 45 +- 1 A for every image (the rest
    project's decoder draws ~30 A), the other quantities untrained; class probabilities
    `CLASS_PROBS` for every image, the BPT head untrained."""
    import keras

    from img2spec.measure import CLASS_COLUMNS
    from img2spec.models.direct import LOGVAR_OUT, MEAN_OUT, n_classes

    images = keras.Input(images_shape)
    x = keras.layers.GlobalAveragePooling2D()(images)
    q = len(QUANTITIES)
    out = {MEAN_OUT: keras.layers.Dense(q, name=MEAN_OUT, kernel_initializer="zeros",
                                        bias_initializer=keras.initializers.Constant([1.5] + [0.0] * (q - 1)))(x),
           LOGVAR_OUT: keras.layers.Dense(q, name=LOGVAR_OUT, kernel_initializer="zeros",
                                          bias_initializer=keras.initializers.Constant(np.log(0.01)))(x)}
    classes = {}
    for col, labels in CLASS_COLUMNS.items():
        k = n_classes(labels)
        bias = np.log(CLASS_PROBS.get(col, np.full(k, 1.0 / k)))
        out[col] = keras.layers.Dense(k, activation="softmax", name=col, kernel_initializer="zeros",
                                      bias_initializer=keras.initializers.Constant(bias))(x)
        classes[col] = {"n_train": [10 if col in CLASS_PROBS else 0] * k}
    direct = root / "models" / "direct"
    direct.mkdir(parents=True, exist_ok=True)
    keras.Model(images, out).save(direct / "direct.keras")
    (direct / "direct.json").write_text(json.dumps({"quantities": list(QUANTITIES), "mean": [30.0] + [0.0] * (q - 1),
                                                    "std": [10.0] + [1.0] * (q - 1), "n_train": [100] + [0] * (q - 1),
                                                    "classes": classes}))


CLASS_PROBS = {"sf_class": np.array([0.8, 0.2]), "agn_class": np.array([0.3, 0.7])}
"""The tiny direct model's class probabilities (its BPT head has no training targets)."""


@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory):
    from img2spec.config import params_from_dict
    from img2spec.paths import Paths
    from img2spec.predict.bundle import build_bundle
    from restframe_support import build_rest_project

    root = tmp_path_factory.mktemp("fused")
    facts = build_rest_project(root)
    _write_direct(root, facts["images"].shape[1:])
    metrics = root / "metrics" / "evaluate.json"
    m = json.loads(metrics.read_text())
    m.setdefault("notes", {})["fusion"] = {"quantities": ["halpha_ew"]}
    metrics.write_text(json.dumps(m))
    params = params_from_dict({"publish": {"batch_size": 5, "registry": False},
                               "fusion": {"quantities": ["halpha_ew"], "weight": 1.0}})
    build_bundle(params, Paths(root))
    return root / "models" / "img2spec", facts


def test_fusing_bundle_exports_the_direct_heads_equal_to_keras(fused_bundle):
    from img2spec.models.direct import load_direct_heads
    from img2spec.models.onnx_runtime import load_exported_direct
    from test_predict import EXPORT_ATOL

    bundle, facts = fused_bundle
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["inference"]["fusion"] == {"quantities": ["halpha_ew"], "weight": 1.0, "iterations": 2,
                                               "classes": True}
    assert {"direct.keras", "direct.json", "direct.onnx"} <= set(manifest["files"])
    images = facts["images"][:4]
    np.testing.assert_allclose(load_exported_direct(bundle)(images),
                               np.asarray(load_direct_heads(bundle).net(images, training=False)), atol=EXPORT_ATOL)
    assert "cnn_direct.onnx" in manifest["files"]


def test_the_joint_graph_gives_what_the_cnn_and_the_direct_heads_give_apart(fused_bundle):
    """The CNN and the direct heads exported as one graph give their two outputs side by side, bit
    for bit; a prediction through it equals one that runs them apart."""
    from dataclasses import replace

    from img2spec.models.onnx_runtime import load_exported, load_exported_direct, load_exported_joint
    from img2spec.predict import Predictor

    bundle, facts = fused_bundle
    images = facts["images"][:5]
    apart = np.concatenate([load_exported(bundle)[0](images), load_exported_direct(bundle)(images)], axis=1)
    np.testing.assert_array_equal(load_exported_joint(bundle)(images), apart)
    joint = Predictor.from_path(bundle)
    assert joint.fusion.joint is not None
    separate = replace(joint, fusion=replace(joint.fusion, joint=None))
    z = np.array([0.05, np.nan, 0.1, np.nan, 0.2])
    a, b = joint.predict_batch(images, z=z), separate.predict_batch(images, z=z)
    for name in ("latent_mu", "z", "flux", "sigma", "class_evidence"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_predict_with_a_fusing_bundle_moves_the_line_toward_the_direct_prediction(fused_bundle):
    """Both runtimes fuse (the same latents to float rounding); the fused rest spectrum measures
    closer to the direct model's 45 A than the CNN's own (the tiny decoder's latents barely touch
    the line, so by little), and the FITS header says it was fused."""
    from dataclasses import replace

    from img2spec.predict import Predictor

    bundle, facts = fused_bundle
    onnx = Predictor.from_path(bundle)
    keras = Predictor.from_path(bundle, runtime="tensorflow")
    assert onnx.runtime == "onnx" and onnx.fusion is not None and keras.fusion is not None
    images = facts["images"][:4]
    z = np.array([0.05, np.nan, 0.1, np.nan])
    a, b = onnx.predict_batch(images, z=z), keras.predict_batch(images, z=z)
    np.testing.assert_allclose(a.latent_mu, b.latent_mu, atol=1e-3)
    plain = replace(onnx, fusion=None).predict_batch(images, z=z)
    mp = onnx.measure_params
    ew = {name: measure_spectra(r.rest_flux, r.rest_wave, 0.0, mp, frame="rest")["halpha_ew"]
          for name, r in (("fused", a), ("plain", plain))}
    assert np.all(np.abs(ew["fused"] - 45.0) < np.abs(ew["plain"] - 45.0) - 1e-3)
    assert np.all(np.abs(a.latent_mu - plain.latent_mu).max(axis=1) > 1e-2)
    assert onnx.header()["FUSED"][0] == "halpha_ew" and replace(onnx, fusion=None).header()["FUSED"][0] == "none"


def test_a_fusing_bundle_weighs_its_class_draws_with_the_direct_classes(fused_bundle):
    """Both runtimes return the direct model's class probabilities beside the fused latents (NaN for
    its untrained BPT head); the class draws are weighed with them (`class_draws.weigh_draws`), and
    not without `fusion.classes`; an exported graph with the regression heads alone gives none."""
    from dataclasses import replace

    from img2spec.models.class_draws import draw_classes, evidence_slices, weigh_draws
    from img2spec.predict import Predictor

    bundle, facts = fused_bundle
    onnx = Predictor.from_path(bundle)
    keras = Predictor.from_path(bundle, runtime="tensorflow")
    images = facts["images"][:4]
    a, b = onnx.predict_batch(images), keras.predict_batch(images)
    sl = evidence_slices()
    assert a.class_evidence.shape == (4, 7)
    np.testing.assert_allclose(a.class_evidence, b.class_evidence, atol=1e-5)
    for col, p in CLASS_PROBS.items():
        np.testing.assert_allclose(a.class_evidence[:, sl[col]], np.tile(p, (4, 1)), rtol=1e-5)
    assert np.isnan(a.class_evidence[:, sl["bpt_class"]]).all()
    draws = draw_classes(onnx.decoder, a.latent_mu, a.latent_std, a.z_used, onnx.measure_params, sigma=a.rest_sigma)
    got = onnx.class_draws(a)
    for col, prob in weigh_draws(draws, a.class_evidence).prob.items():
        np.testing.assert_array_equal(got.prob[col], prob)
    unweighed = onnx.class_draws(replace(a, class_evidence=None))
    for col, prob in draws.prob.items():
        np.testing.assert_array_equal(unweighed.prob[col], prob)
    plain = replace(onnx, fusion=replace(onnx.fusion, classes=False))
    assert plain.predict_batch(images).class_evidence is None and onnx.header()["FUSECLS"][0] is True
    raw = onnx.fusion.heads.outputs(images, None, 4)
    assert raw.shape[1] == 2 * len(QUANTITIES) + 7 and onnx.fusion.heads.classes_of(raw[:, :10]) is None
