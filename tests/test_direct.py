"""The direct baseline: the same CNN trained on the measurements of the observed spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.config import params_from_dict
from img2spec.io.processed import ProcessedData
from img2spec.paths import Paths
from img2spec.prep.synthetic import write_synthetic_processed

N, N_PIX = 90, 400  # 400 pixels: the synthetic H-alpha line and the 4000 A break are measurable
POISON = 1e4
TINY = {"cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 2, "patience": 2, "batch_size": 32,
                "photometry": True, "photometry_units": [8], "train_pca": False},
        "vae": {"latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 2, "kl_warmup_epochs": 1,
                "patience": 2, "batch_size": 32},
        "evaluate": {"knn_neighbours": 3, "n_samples": 4, "n_example_plots": 1, "hist_bins": 10,
                     "calibrate_sigma": False}}


@pytest.fixture(scope="module")
def params():
    return params_from_dict(TINY)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> ProcessedData:
    return ProcessedData.open(write_synthetic_processed(tmp_path_factory.mktemp("clean") / "p", n=N, n_pix=N_PIX))


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> ProcessedData:
    """The same objects, test rows' flux and images replaced by a huge value."""
    root = tmp_path_factory.mktemp("poisoned") / "p"
    return ProcessedData.open(write_synthetic_processed(root, n=N, n_pix=N_PIX, poison_test=POISON))


@pytest.fixture(scope="module")
def trained(poisoned, params, tmp_path_factory):
    from img2spec.models.direct import train_direct

    out = tmp_path_factory.mktemp("direct")
    return train_direct(params.cnn, params.measure, poisoned, out_dir=out), out


def _targets(data, mp):
    from img2spec.models.direct import target_arrays

    return target_arrays(data, data.indices("train"), data.indices("val"), mp)


def test_targets_are_the_observed_train_val_measurements(clean, poisoned, params):
    """Targets = measure_spectra of the OBSERVED spectra (not the truth) of train and val rows;
    test rows are never measured: poisoning them changes no target and no statistic."""
    from img2spec.measure import UNCLASSIFIED, measure_spectra
    from img2spec.models.direct import QUANTITIES, SCHEMES

    mp = params.measure
    t_clean, s_clean = _targets(clean, mp)
    t_poison, s_poison = _targets(poisoned, mp)
    assert s_clean == s_poison
    for k in t_clean:
        np.testing.assert_array_equal(t_clean[k], t_poison[k])
    test = clean.indices("test")
    assert not t_clean["quantity_ok"][test].any()
    for col in SCHEMES:
        assert (t_clean[col][test] == UNCLASSIFIED).all()
    train = clean.indices("train")
    z = clean.catalog["z"].to_numpy()
    obs = measure_spectra(np.asarray(clean.flux[train]), clean.wave, z[train], mp, ivar=np.asarray(clean.ivar[train]))
    truth = measure_spectra(np.asarray(clean.truth_flux[train]), clean.wave, z[train], mp,
                            ivar=np.asarray(clean.ivar[train]))
    for k, q in enumerate(QUANTITIES):
        ok = np.isfinite(obs[q])
        np.testing.assert_array_equal(t_clean["quantity_ok"][train, k] > 0, ok)
        assert s_clean["n_train"][k] == ok.sum()
        if ok.sum() > 1:
            assert s_clean["mean"][k] == pytest.approx(obs[q][ok].mean())
            back = t_clean["quantities"][train, k][ok] * s_clean["std"][k] + s_clean["mean"][k]
            np.testing.assert_allclose(back, obs[q][ok], rtol=1e-4, atol=1e-4)
    assert s_clean["n_train"][QUANTITIES.index("dn4000")] > 0.9 * len(train)
    ha = QUANTITIES.index("halpha_ew")
    both = np.isfinite(obs["halpha_ew"]) & np.isfinite(truth["halpha_ew"])
    assert not np.allclose(obs["halpha_ew"][both], truth["halpha_ew"][both])  # the truth would differ
    assert s_clean["mean"][ha] == pytest.approx(obs["halpha_ew"][np.isfinite(obs["halpha_ew"])].mean())
    np.testing.assert_array_equal(t_clean["sf_class"][train], obs["sf_class"])


def test_masked_targets_give_finite_losses_and_gradients():
    """NaN targets under the mask and unclassified objects change nothing and never give NaN,
    also when a whole batch has no target."""
    import tensorflow as tf

    from img2spec.models.direct import masked_cross_entropy, masked_nll

    mean = tf.Variable([[0.1, -0.2], [0.3, 0.0], [1.0, 2.0]])
    logvar = tf.zeros((3, 2))
    ok = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    target = np.array([[0.0, np.nan], [1.0, np.inf], [np.nan, np.nan]], np.float32)
    with tf.GradientTape() as tape:
        loss = masked_nll(mean, logvar, tf.constant(target), ok)
    grad = tape.gradient(loss, mean).numpy()
    expected = 0.5 * (0.1**2 + 0.7**2) / 2  # quantity 0 over its two objects; quantity 1 has none
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(grad).all() and (grad[:, 1] == 0).all() and (grad[2] == 0).all()
    none = masked_nll(mean, logvar, tf.constant(target), tf.zeros((3, 2)))
    assert float(none) == 0.0

    probs = tf.Variable([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    codes = tf.constant([0.0, -1.0, 1.0])
    with tf.GradientTape() as tape:
        ce = masked_cross_entropy(probs, codes, np.array([1.0, 3.0], np.float32))
    assert float(ce) == pytest.approx(-(np.log(0.7) + 3 * np.log(0.5)) / 4, rel=1e-5)
    assert np.isfinite(tape.gradient(ce, probs).numpy()).all()
    assert float(masked_cross_entropy(probs, tf.constant([-1.0, -1.0, -1.0]), np.ones(2, np.float32))) == 0.0


def test_class_weights_balance_present_classes():
    from img2spec.models.direct import class_weights

    w = class_weights(np.array([30, 10, 0]))
    np.testing.assert_allclose(w, [40 / 60, 40 / 20, 0.0])
    assert (w[:2] * [30, 10]).sum() == pytest.approx(40)  # the mean weight over labelled objects is 1
    assert (class_weights(np.zeros(2)) == 0).all()


def test_training_never_reads_test_rows(trained, clean, params):
    """Trained on the poisoned set: finite losses, and the saved standardisation is that of
    the clean set's train split (the poisoned test rows never entered)."""
    from img2spec.models.direct import INFO_FILE, MODEL_FILE

    result, out = trained
    for key in ("loss", "val_loss", "quantity_nll", "sf_class_ce"):
        assert all(np.isfinite(result.history[key])), key
    info = json.loads((out / INFO_FILE).read_text())
    _, scaling = _targets(clean, params.measure)
    for key in ("mean", "std", "n_train", "n_val", "classes"):
        assert info[key] == scaling[key], key
    assert info["trained"] and (out / MODEL_FILE).stat().st_size > 0
    assert info["training"]["n_train"] == len(clean.indices("train"))


def test_direct_model_has_the_cnns_inputs(trained, params):
    """The heads sit on the CNN's "dense" layer; the inputs are the CNN's (images + photometry here)."""
    from img2spec.models.cnn import build_cnn, uses_photometry
    from img2spec.models.direct import FEATURE_LAYER, build_direct

    result, _ = trained
    cnn = build_cnn((16, 16, 5), 2, params.cnn, np.zeros(2), np.ones(2), photometry_mean=np.zeros(5),
                    photometry_std=np.ones(5))
    model = build_direct(cnn, params.cnn)
    assert [t.name for t in model.inputs] == [t.name for t in cnn.inputs]
    assert uses_photometry(result.model) and [t.name for t in result.model.inputs] == [t.name for t in cnn.inputs]
    assert model.get_layer(FEATURE_LAYER) is cnn.get_layer(FEATURE_LAYER)


def test_direct_table_is_scored_as_a_method(trained, clean, params):
    """The table has the measure_spectra columns of the scored quantities and classes, and
    score_measurements scores it as `direct` beside the spectra's measurements."""
    from img2spec.evaluate.direct import METHOD, add_direct_table, direct_table
    from img2spec.evaluate.measurements import QUANTITIES, SCHEMES, measure_methods, score_measurements
    from img2spec.measure import SF_LABELS, UNCLASSIFIED
    from img2spec.models.direct import QUANTITIES as DIRECT_QUANTITIES

    _, out = trained
    test = clean.indices("test")
    table = direct_table(out, clean, test, batch_size=8)
    for col in (*DIRECT_QUANTITIES, "sf_class", "bpt_class", "agn_class"):
        assert len(table[col]) == len(test), col
    assert np.isfinite(table["dn4000"]).all() and (table["dn4000_sigma"] > 0).all()
    assert set(np.unique(table["sf_class"])) <= set(SF_LABELS) - {UNCLASSIFIED}
    # No train object is on the BPT diagram in this set: those heads never learnt and abstain.
    assert (table["bpt_class"] == UNCLASSIFIED).all() and (table["agn_class"] == UNCLASSIFIED).all()
    # Catalogue order of `rows` is kept (row subsets predict the same values).
    np.testing.assert_allclose(direct_table(out, clean, test[::-1], batch_size=8)["dn4000"][::-1], table["dn4000"],
                               rtol=1e-5)

    z = clean.catalog["z"].to_numpy()[test]
    obs, ivar = np.asarray(clean.flux[test]), np.asarray(clean.ivar[test])
    tables = measure_methods(clean.wave, z, clean.frame, obs, ivar, {}, np.asarray(clean.truth_flux[test]),
                             params.measure)
    notes: dict[str, str] = {}
    add_direct_table(tables, out, clean, test, notes, batch_size=8)
    assert METHOD in tables and not notes
    scored = score_measurements(tables, params.measure)
    for q, col in QUANTITIES.items():
        if col in DIRECT_QUANTITIES:
            r = scored["measurements"][q][METHOD]
            assert r["n"] > 0 or q in ("oiii_hbeta", "nii_halpha"), q
            if q == "dn4000":
                assert np.isfinite(r["bias"]) and np.isfinite(r["nmad"]) and r["n"] == len(test)
        else:
            assert METHOD not in scored["measurements"][q] and "observed" in scored["measurements"][q]
    for scheme in SCHEMES:
        assert "balanced_accuracy" in scored["classes"][scheme][METHOD]
    assert 0.0 <= scored["classes"]["sf_quiescent"][METHOD]["balanced_accuracy"] <= 1.0


def test_switch_off_skips_the_stage_and_evaluate_notes_it(clean, tmp_path):
    from img2spec.evaluate.direct import METHOD, add_direct_table
    from img2spec.models.direct import INFO_FILE, MODEL_FILE, direct_dir, train_direct_stage

    paths = Paths(tmp_path)
    stale = direct_dir(paths) / MODEL_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text("an old model")
    params = params_from_dict({**TINY, "cnn": {**TINY["cnn"], "train_direct": False}})
    summary = train_direct_stage(params, paths)  # no processed data needed: nothing is read
    assert summary["trained"] is False
    assert not stale.exists() and json.loads((direct_dir(paths) / INFO_FILE).read_text())["trained"] is False
    assert json.loads((paths.metrics / "train_direct.json").read_text())["trained"] is False
    tables: dict = {}
    notes: dict[str, str] = {}
    add_direct_table(tables, direct_dir(paths), clean, clean.indices("test"), notes)
    assert METHOD not in tables and "train_direct" in notes[METHOD]


@pytest.mark.slow  # trains the VAE, CNN and direct model and runs evaluate (~1 min on a busy machine)
def test_evaluate_stage_scores_direct(tmp_path, monkeypatch):
    """train_vae -> encode -> train_cnn -> train_direct -> evaluate: metrics/evaluate.json
    scores `direct` in measurements and classes."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.direct import train_direct_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage

    paths = Paths(tmp_path)
    write_synthetic_processed(paths.processed, n=N, n_pix=N_PIX)
    params = params_from_dict({**TINY, "cnn": {**TINY["cnn"], "epochs": 1}})
    train_vae_stage(params, paths)
    encode_stage(params, paths)
    train_cnn_stage(params, paths)
    assert train_direct_stage(params, paths)["trained"]
    evaluate_stage(params, paths)
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    assert metrics["measurements"]["dn4000"]["direct"]["n"] > 0
    assert {"bias", "nmad", "n"} <= set(metrics["measurements"]["halpha_ew"]["direct"])
    assert "balanced_accuracy" in metrics["classes"]["sf_quiescent"]["direct"]
    assert "direct" not in metrics["notes"]["skipped_methods"]
