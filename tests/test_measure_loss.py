"""The image network's measurement term (`cnn.measure_weight`): the measurements as linear
weights from `measure` (one definition), their Keras form, and the term in the CNN's loss."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.measure import MeasureParams
from img2spec.config.models import CNNParams, VAEParams
from img2spec.measure import measure_spectra
from img2spec.measure.linear import measurement_weights

MP = MeasureParams()
LOG_STEP = 1e-4 * np.log(10.0)  # the SDSS log10 step
LINES = {"oii_3727": 3728.5, "hbeta": 4862.7, "oiii_5007": 5008.2, "halpha": 6564.6, "nii_6584": 6585.3}
REST_VAE = VAEParams(frame="rest", latent_dim=3, encoder_units=(16,), decoder_units=(16,), epochs=2,
                     kl_warmup_epochs=1, patience=2, batch_size=32)
REST_CNN = CNNParams(filters=(4, 8), dense_units=16, epochs=1, patience=1, batch_size=32, loss="spectrum",
                     redshift_weight=1.0, train_pca=False)


def _grid(lo: float = 3400.0, n: int = 3500) -> np.ndarray:
    return np.exp(np.log(lo) + LOG_STEP * np.arange(n))


def _spectra(wave: np.ndarray, n: int = 6, seed: int = 0) -> np.ndarray:
    """Noisy positive continua with a break near 4000 A and emission lines of random strength."""
    rng = np.random.default_rng(seed)
    flux = 1.0 + 0.2 * rng.random((n, wave.size)) + rng.uniform(0.2, 0.8, (n, 1)) * (wave > 4000)
    for centre in LINES.values():
        flux += rng.uniform(0.5, 5.0, (n, 1)) * np.exp(-0.5 * ((wave - centre) / 2.5) ** 2)
    return flux


def _from_weights(flux: np.ndarray, weights) -> dict[str, np.ndarray]:
    """EW, line flux and Dn4000 from the weights by the formulas of measure.linear's module doc."""
    def mean(bw):
        return flux[:, bw.index] @ bw.weight

    def line(lw):
        t = lw.red_share
        cont = (1 - t) * mean(lw.blue)[:, None] + t * mean(lw.red)[:, None]
        pix = flux[:, lw.line.index]
        return ((pix / cont - 1) * lw.line.weight).sum(1), lw.flux_scale * ((pix - cont) * lw.line.weight).sum(1)

    out = {}
    for name, lw in weights.lines.items():
        out[f"{name}_ew"], out[f"{name}_flux"] = line(lw)
    out["hdelta_a"] = -line(weights.hdelta_a)[0]
    out["dn4000"] = mean(weights.dn4000.red) / mean(weights.dn4000.blue)
    return out


@pytest.mark.parametrize("frame,z", [("rest", 0.0), ("observed", 0.07)])
def test_linear_weights_reproduce_measure_spectra(frame, z):
    wave = _grid(3400.0 * (1 + z))
    flux = _spectra(wave)
    table = measure_spectra(flux, wave, z, MP, frame=frame)
    got = _from_weights(flux, measurement_weights(wave, MP, z=z, frame=frame))
    assert set(got) >= {"halpha_ew", "nii_6584_flux", "dn4000", "hdelta_a"}
    for col, value in got.items():
        assert np.isfinite(table[col]).all()
        np.testing.assert_allclose(value, table[col], rtol=1e-6, atol=1e-6, err_msg=col)


def test_weights_refuse_a_band_off_the_grid():
    with pytest.raises(ValueError, match="off the wavelength grid"):
        measurement_weights(_grid(4500.0), MP)


def test_keras_measurements_equal_measure_spectra():
    from img2spec.models.direct import QUANTITIES
    from img2spec.models.measure_loss import measure_tensor

    wave = _grid()
    flux = _spectra(wave, n=8, seed=3)
    table = measure_spectra(flux, wave, 0.0, MP, frame="rest")
    got = np.asarray(measure_tensor(flux, measurement_weights(wave, MP), QUANTITIES))
    for k, q in enumerate(QUANTITIES):
        assert np.isfinite(table[q]).all()
        np.testing.assert_allclose(got[:, k], table[q], rtol=1e-5, atol=1e-6, err_msg=q)


def test_huber_is_quadratic_then_linear():
    from img2spec.models.measure_loss import huber

    d = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(np.asarray(huber(d, 1.0)), [2.5, 0.125, 0.0, 0.125, 2.5])


def test_a_spectrum_without_continuum_gives_a_bounded_term():
    from img2spec.models.direct import QUANTITIES
    from img2spec.models.measure_loss import CLIP_STD, MeasureTerm, huber

    wave = _grid()
    flux = np.vstack([_spectra(wave, n=1), np.zeros((1, wave.size)), -np.ones((1, wave.size))]).astype(np.float32)
    q = len(QUANTITIES)
    term = MeasureTerm(lambda x, training=False: x, measurement_weights(wave, MP), np.zeros(q), np.ones(q), 1.0)
    got = np.asarray(term(flux, np.zeros((3, q), np.float32), np.ones((3, q), np.float32)))
    assert np.isfinite(got).all() and np.all(got <= q * float(np.asarray(huber(np.array(CLIP_STD), 1.0))) + 1e-4)


def test_ratio_targets_only_for_objects_on_the_bpt_diagram():
    from img2spec.models.direct import QUANTITIES
    from img2spec.models.measure_loss import BPT_RATIOS, ratio_targets_detected

    ok = np.ones((3, len(QUANTITIES)), np.float32)
    got = ratio_targets_detected(ok, np.array([-1, 0, 2], np.float32))  # unclassified, star-forming, AGN
    ratio = np.array([q in BPT_RATIOS for q in QUANTITIES])
    assert ratio.sum() == 2 and np.all(got[0, ratio] == 0) and np.all(got[0, ~ratio] == 1) and np.all(got[1:] == 1)


@pytest.fixture(scope="module")
def rest_setup(tmp_path_factory):
    from img2spec.io.processed import ProcessedData
    from img2spec.models.inference import encode_spectra
    from img2spec.models.latents import Latents
    from img2spec.models.train import train_vae
    from img2spec.prep.synthetic import write_synthetic_processed

    root = tmp_path_factory.mktemp("measure_loss")
    data = ProcessedData.open(write_synthetic_processed(root / "processed", n=64))
    vae = train_vae(REST_VAE, data)
    mu, logvar = encode_spectra(vae.model.encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy())
    return data, vae.model.decoder, Latents(mu, logvar)


@pytest.fixture(scope="module")
def trained_with_terms(rest_setup):
    """One CNN trained with both the measurement term (weight 1) and the class term (weight 2)."""
    from img2spec.models.train import train_cnn

    data, decoder, lat = rest_setup
    return train_cnn(REST_CNN.model_copy(update={"measure_weight": 1.0, "measure_class_weight": 2.0}), data, lat,
                     decoder, measure_params=MP)


def test_zero_weight_leaves_the_loss_unchanged_and_a_weight_adds_the_term(rest_setup, trained_with_terms):
    from img2spec.models.measure_loss import TARGET_KEY, TARGET_OK_KEY, measure_term
    from img2spec.models.trainer import CNNTrainer
    from img2spec.models.train import train_cnn

    data, decoder, lat = rest_setup
    base = train_cnn(REST_CNN.model_copy(update={"measure_weight": 0.0}), data, lat, decoder)
    assert "measure_huber" not in base.history and "measure_targets" not in base.info
    on = trained_with_terms
    assert "measure_huber" in on.history and "val_measure_huber" in on.history
    assert np.all(np.isfinite(on.history["loss"])) and on.history["loss"] != base.history["loss"]
    assert on.info["measure_targets"]["quantities"][0] == "halpha_ew"

    # One batch through the loss: weight w adds exactly w x the term; a term at weight 0 adds nothing.
    tr, va = data.indices("train"), data.indices("val")
    term, targets, _ = measure_term(decoder, data, tr, va, MP, 1.0)
    rows = tr[:16]
    z = data.catalog["z"].to_numpy(np.float32)[rows]
    y = {"mu": lat.mu[rows], "var": np.exp(lat.logvar[rows]), "flux": np.nan_to_num(data.flux[rows]),
         "ivar": np.asarray(data.ivar[rows]), "z": np.column_stack([z, np.ones_like(z)]),
         TARGET_KEY: targets[TARGET_KEY][rows], TARGET_OK_KEY: targets[TARGET_OK_KEY][rows]}
    y_pred = on.model(np.asarray(data.images[rows]), training=False)
    L = lat.mu.shape[1]

    def loss(weight: float, with_term: bool = True) -> float:
        t = CNNTrainer(on.model, L, "spectrum", decoder, redshift_weight=1.0,
                       measure_loss=term if with_term else None, measure_weight=weight)
        return float(np.asarray(t.compute_loss(y=y, y_pred=y_pred, training=False)))

    plain = loss(0.0, with_term=False)
    assert loss(0.0) == plain
    cond = np.concatenate([np.asarray(y_pred)[:, :L], z[:, None]], axis=1)
    extra = float(np.mean(np.asarray(term(cond, y[TARGET_KEY], y[TARGET_OK_KEY]))))
    assert extra > 0
    assert loss(10.0) == pytest.approx(plain + 10.0 * extra, rel=1e-5)


def test_measure_weight_needs_a_rest_frame_spectrum_loss(rest_setup):
    from img2spec.models.train import train_cnn

    data, decoder, lat = rest_setup
    with pytest.raises(ValueError, match="measure_weight"):
        train_cnn(REST_CNN.model_copy(update={"measure_weight": 1.0, "loss": "latent"}), data, lat, decoder)


def test_softened_ews_and_a_subset_of_quantities(rest_setup):
    """`measure_ew_softening`: EW targets and predictions compared as asinh(EW / s), standardised on
    that scale; `measure_quantities`: the others masked out; an unknown name is a clear error."""
    from img2spec.models.direct import QUANTITIES
    from img2spec.models.measure_loss import TARGET_KEY, TARGET_OK_KEY, measure_term, soften

    x = np.array([[30.0, 1.5], [-3.0, 2.0]])
    np.testing.assert_allclose(soften(x, np.array([3.0, 0.0])), [[np.arcsinh(10.0), 1.5], [np.arcsinh(-1.0), 2.0]])
    data, decoder, _ = rest_setup
    tr, va = data.indices("train"), data.indices("val")
    plain, t_plain, _ = measure_term(decoder, data, tr, va, MP, 1.0)
    soft, t_soft, info = measure_term(decoder, data, tr, va, MP, 1.0, quantities=("halpha_ew", "dn4000"),
                                      ew_softening=3.0)
    k, j = QUANTITIES.index("halpha_ew"), QUANTITIES.index("dn4000")
    ok = t_soft[TARGET_OK_KEY]
    assert ok[:, [i for i in range(len(QUANTITIES)) if i not in (k, j)]].sum() == 0 and ok[:, k].sum() > 0
    raw = t_plain[TARGET_KEY][:, k] * plain.std[k] + plain.mean[k]
    rows = ok[:, k] > 0
    expected = (np.arcsinh(raw[rows] / 3.0) - soft.mean[k]) / soft.std[k]
    np.testing.assert_allclose(t_soft[TARGET_KEY][rows, k], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t_soft[TARGET_KEY][:, j], t_plain[TARGET_KEY][:, j])  # Dn4000 as it was
    assert soft.softening[k] == 3.0 and soft.softening[j] == 0.0 and info["used"] == ["halpha_ew", "dn4000"]
    with pytest.raises(ValueError, match="measure_quantities"):
        measure_term(decoder, data, tr, va, MP, 1.0, quantities=("halpha_eq",))


def test_class_term_trains_beside_the_measurement_term_and_adds_its_weight(rest_setup, trained_with_terms):
    from img2spec.models.class_loss import CLASS_KEY, class_term
    from img2spec.models.direct import target_arrays
    from img2spec.models.measure_loss import TARGET_KEY, TARGET_OK_KEY, measure_term
    from img2spec.models.trainer import CNNTrainer

    data, decoder, lat = rest_setup
    on = trained_with_terms
    assert "class_bce" in on.history and on.info["measure_targets"]["classes"]["decisions"][0] == "star_forming"
    tr, va = data.indices("train"), data.indices("val")
    measured = target_arrays(data, tr, va, MP)
    term, targets, _ = measure_term(decoder, data, tr, va, MP, 1.0, measured=measured)
    classes, class_targets, _ = class_term(term, measured[0], tr, MP.classes, 0.5)
    rows = tr[:16]
    z = data.catalog["z"].to_numpy(np.float32)[rows]
    y = {"mu": lat.mu[rows], "var": np.exp(lat.logvar[rows]), "flux": np.nan_to_num(data.flux[rows]),
         "ivar": np.asarray(data.ivar[rows]), "z": np.column_stack([z, np.ones_like(z)]),
         TARGET_KEY: targets[TARGET_KEY][rows], TARGET_OK_KEY: targets[TARGET_OK_KEY][rows],
         CLASS_KEY: class_targets[CLASS_KEY][rows]}
    y_pred = on.model(np.asarray(data.images[rows]), training=False)
    L = lat.mu.shape[1]

    def loss(weight: float) -> float:
        t = CNNTrainer(on.model, L, "spectrum", decoder, redshift_weight=1.0, measure_loss=term, measure_weight=1.0,
                       class_loss=classes, class_weight=weight)
        return float(np.asarray(t.compute_loss(y=y, y_pred=y_pred, training=False)))

    cond = np.concatenate([np.asarray(y_pred)[:, :L], z[:, None]], axis=1)
    extra = float(np.mean(np.asarray(classes(term.measure(cond), y[CLASS_KEY]))))
    assert extra > 0
    assert loss(5.0) == pytest.approx(loss(0.0) + 5.0 * extra, rel=1e-5)


def test_balance_weighs_each_object_by_its_class(rest_setup):
    """`balance`: the mask becomes the object's inverse class frequency (1 for an unclassified one),
    and the term scales with it."""
    from img2spec.models.direct import QUANTITIES, target_arrays
    from img2spec.models.measure_loss import TARGET_KEY, TARGET_OK_KEY, class_balance, measure_term

    data, decoder, _ = rest_setup
    tr, va = data.indices("train"), data.indices("val")
    measured = target_arrays(data, tr, va, MP)
    term, plain, _ = measure_term(decoder, data, tr, va, MP, 1.0, measured=measured)
    _, balanced, _ = measure_term(decoder, data, tr, va, MP, 1.0, measured=measured, balance=True)
    weights = class_balance(*measured)
    np.testing.assert_array_equal(balanced[TARGET_KEY], plain[TARGET_KEY])
    np.testing.assert_allclose(balanced[TARGET_OK_KEY], plain[TARGET_OK_KEY] * weights)
    sf = np.asarray(measured[0]["sf_class"])[tr]
    k = QUANTITIES.index("halpha_ew")
    counts = np.bincount(sf[sf >= 0].astype(int), minlength=2)
    assert counts.min() > 0 and counts[0] != counts[1]
    rare = int(np.argmin(counts))
    assert weights[tr][sf == rare, k].min() > 1.0 > weights[tr][sf == 1 - rare, k].max()

    rng = np.random.default_rng(4)
    measured_q = rng.normal(1.0, 0.3, size=(3, len(QUANTITIES))).astype(np.float32)
    goal = rng.normal(size=(3, len(QUANTITIES))).astype(np.float32)
    ok = np.ones_like(goal)
    one = np.asarray(term.compare(measured_q, goal, ok))
    np.testing.assert_allclose(np.asarray(term.compare(measured_q, goal, ok * np.array([[2.0], [0.5], [1.0]]))),
                               one * [2.0, 0.5, 1.0], rtol=1e-6)
