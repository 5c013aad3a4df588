"""The image network's class term (`cnn.measure_class_weight`): smooth class decisions on the
decoded measurements, their targets and weights, and the term in the CNN's loss."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.measure import ClassParams, MeasureParams
from img2spec.measure import bpt_region

QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a", "log_oiii_hbeta", "log_nii_halpha")


def _term(sf_criterion: str = "halpha_ew", temperature: float = 0.5, weights=None):
    from img2spec.models.class_loss import ClassTerm
    from img2spec.models.measure_loss import MeasureTerm

    q = len(QUANTITIES)
    softening = np.array([3.0, 0, 0, 0, 0], np.float32)
    measure = MeasureTerm(lambda x, training=False: x, None, np.zeros(q), np.full(q, 0.5), 1.0, softening=softening)
    w = np.ones((3, 2), np.float32) if weights is None else weights
    return ClassTerm(measure, ClassParams(sf_criterion=sf_criterion), temperature, w)


def _measured(ew, dn, x, y) -> np.ndarray:
    n = len(ew)
    return np.column_stack([ew, dn, np.zeros(n), y, x]).astype(np.float32)


def test_margins_change_sign_at_the_class_boundaries():
    """The decisions agree with measure.classify: EW at 3 A (or Dn4000 at 1.55), and bpt_region's
    Kauffmann / Kewley lines, including x beyond the lines' poles."""
    ew = np.array([2.9, 3.1, 0.0, 40.0, 10.0, 10.0])
    x = np.array([-0.6, -0.6, -0.2, 0.1, 0.6, -0.45])
    y = np.array([-0.5, 0.5, 0.4, 0.2, -1.0, 0.1])
    m = np.asarray(_term().margins(_measured(ew, np.full(6, 1.4), x, y)))
    assert np.array_equal(m[:, 0] > 0, ew >= 3.0)
    region = bpt_region(x, y)
    assert np.array_equal(m[:, 1] > 0, region >= 1) and np.array_equal(m[:, 2] > 0, region == 2)
    assert np.isfinite(m).all()
    dn = np.array([1.5, 1.6])
    m_dn = np.asarray(_term("dn4000").margins(_measured(np.zeros(2), dn, np.zeros(2) - 0.5, np.zeros(2))))
    assert m_dn[0, 0] > 0 > m_dn[1, 0]  # star-forming below Dn4000 1.55


def test_loss_is_masked_weighted_and_falls_as_the_decision_sharpens():
    from img2spec.models.class_loss import decision_codes

    codes = decision_codes(np.array([1, 0, -1]), np.array([2, -1, 0]))
    np.testing.assert_array_equal(codes, [[1, 1, 1], [0, -1, -1], [-1, 0, 0]])
    m = _measured([30.0, 0.0, 30.0], [1.2, 1.9, 1.2], [0.2, -0.4, -0.4], [0.8, -0.5, -0.5])
    w = np.array([[1.0, 2.0], [1.0, 1.0], [3.0, 1.0]], np.float32)
    got = np.asarray(_term(weights=w)(m, codes))
    logits = np.asarray(_term().margins(m)) / 0.5
    sp = np.logaddexp(0, -logits[0])  # row 0: all three decisions are class 1
    np.testing.assert_allclose(got[0], 2.0 * sp[0] + 1.0 * sp[1] + 1.0 * sp[2], rtol=1e-5)
    np.testing.assert_allclose(got[1], 1.0 * np.logaddexp(0, logits[1, 0]), rtol=1e-5)  # BPT masked
    np.testing.assert_allclose(got[2], np.logaddexp(0, logits[2, 1]) + 3.0 * np.logaddexp(0, logits[2, 2]), rtol=1e-5)
    sharp = np.asarray(_term(temperature=0.1)(m, codes))
    assert np.all(sharp < got)  # every decision right: a narrower sigmoid costs less


def test_class_weight_needs_the_measurement_term():
    from img2spec.config.models import CNNParams
    from img2spec.models.trainer import CNNTrainer
    import keras

    with pytest.raises(ValueError, match="measure_class_weight"):
        CNNTrainer(keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)]), 2, "spectrum",
                   keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]), class_loss=object(), class_weight=1.0)
    assert CNNParams().measure_class_weight == 0.0 and MeasureParams().classes.halpha_ew_min == 3.0


def test_a_subset_of_decisions_masks_the_others():
    from img2spec.models.class_loss import class_term

    targets = {"sf_class": np.array([1, 0, 1, 0]), "bpt_class": np.array([0, 2, 1, -1])}
    _, got, info = class_term(_term().measure, targets, np.arange(4), ClassParams(), 0.5, ("star_forming",))
    codes = got["measure_classes"]
    np.testing.assert_array_equal(codes[:, 0], [1, 0, 1, 0])
    assert np.all(codes[:, 1:] == -1) and info["used"] == ["star_forming"]
    with pytest.raises(ValueError, match="measure_class_decisions"):
        class_term(_term().measure, targets, np.arange(4), ClassParams(), 0.5, ("quiescent",))
