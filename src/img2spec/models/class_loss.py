"""The image network's class term (`cnn.measure_class_weight`): the classes astronomers read off
the spectrum, as smooth decisions on the decoded rest-frame measurements.

A regression to the observed measurements (`measure_loss`) predicts their conditional mean. For a
galaxy the images leave 80/20 between quiescent (EW(Halpha) ~ 0) and star-forming (EW ~ 30 A), that
mean (~ 6 A) lies on the star-forming side of the 3 A cut: on the default mock, val galaxies with a
true EW below 1 A get a predicted median of 3.0 A and half are called star-forming, while the direct
classifier, trained on the classes, separates them. This term is the class heads' counterpart on the
spectrum: a class-balanced binary cross-entropy of each decision, with the decision's probability a
sigmoid of its signed margin on the decoded measurements:

- star-forming / quiescent (`measure.classes.sf_criterion`): the standardised EW(Halpha) (on the
  term's softened scale) above that of `halpha_ew_min`, or Dn4000 below `dn4000_max`;
- above the Kauffmann et al. 2003 line (composite or AGN) and above the Kewley et al. 2001 line
  (AGN): log([OIII]/Hbeta) above the line at log([NII]/Halpha), in units of the train std of
  log([OIII]/Hbeta). x is capped below each line's pole (`X_CAP_BELOW_POLE`), where the line
  falls below any y (the class there is AGN / not star-forming, as `bpt_region` says).

Margins are divided by `cnn.measure_class_temperature` (train standard deviations). Targets are the
classes of the OBSERVED spectra (`direct.target_arrays`); an unclassified object is masked out of a
decision (the BPT decisions only count objects on the diagram).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from keras import ops

from ..config.measure import ClassParams
from ..measure import UNCLASSIFIED
from ..measure.classify import K01_A, K01_B, K01_X0, K03_A, K03_B, K03_X0
from .direct import QUANTITIES, class_weights
from .measure_loss import MeasureTerm, soften

DECISIONS = ("star_forming", "above_kauffmann03", "above_kewley01")
"""The binary decisions, in the column order of the CLASS_KEY targets."""
CLASS_KEY = "measure_classes"
"""Name of the (N, len(DECISIONS)) 0/1 targets (-1: masked) in the CNN's training targets."""
X_CAP_BELOW_POLE = 0.05
"""log([NII]/Halpha) is capped this far (dex) below a BPT line's pole (x0), where the line lies
>= 10 dex below any observed log([OIII]/Hbeta): the decision is saturated and its gradient finite."""


def _line(x, a: float, x0: float, b: float):
    """y = a / (min(x, x0 - cap) - x0) + b (tensor)."""
    return a / (ops.minimum(x, x0 - X_CAP_BELOW_POLE) - x0) + b


class ClassTerm:
    """Per-object class loss of measured (B, Q) `QUANTITIES`, against (B, 3) DECISIONS targets."""

    def __init__(self, measure: MeasureTerm, cp: ClassParams, temperature: float, weights: np.ndarray):
        self.measure = measure
        self.cp = cp
        self.temperature = float(temperature)
        self.weights = np.asarray(weights, np.float32)
        """(len(DECISIONS), 2): the class-balanced weight of a 0 and of a 1 target, per decision."""

    def _standardised(self, m, k: int):
        softened = soften(m, self.measure.softening)
        return (softened[:, k] - float(self.measure.mean[k])) / float(self.measure.std[k])

    def _threshold(self, k: int, value: float) -> float:
        """The cut `value` of quantity k on the term's scale (softened as the measurements are, standardised)."""
        row = np.zeros((1, len(self.measure.softening)), np.float64)
        row[0, k] = value
        v = float(soften(row, np.asarray(self.measure.softening))[0, k])
        return (v - float(self.measure.mean[k])) / float(self.measure.std[k])

    def margins(self, m):
        """(B, 3) signed margins, in train standard deviations (positive: class 1)."""
        if self.cp.sf_criterion == "halpha_ew":
            k = QUANTITIES.index("halpha_ew")
            sf = self._standardised(m, k) - self._threshold(k, self.cp.halpha_ew_min)
        else:
            k = QUANTITIES.index("dn4000")
            sf = self._threshold(k, self.cp.dn4000_max) - self._standardised(m, k)
        x, y = m[:, QUANTITIES.index("log_nii_halpha")], m[:, QUANTITIES.index("log_oiii_hbeta")]
        y_std = float(self.measure.std[QUANTITIES.index("log_oiii_hbeta")])
        k03 = (y - _line(x, K03_A, K03_X0, K03_B)) / y_std
        k01 = (y - _line(x, K01_A, K01_X0, K01_B)) / y_std
        return ops.stack([sf, k03, k01], axis=-1)

    def __call__(self, m, codes):
        """(B,) sum over decisions of the weighted BCE of sigmoid(margin / temperature); codes < 0 masked."""
        logits = self.margins(m) / self.temperature
        one = codes > 0.5
        nll = ops.where(one, ops.softplus(-logits), ops.softplus(logits))
        w = ops.where(one, ops.convert_to_tensor(self.weights[:, 1], nll.dtype),
                      ops.convert_to_tensor(self.weights[:, 0], nll.dtype))
        return ops.sum(ops.where(codes >= 0, w * nll, ops.zeros_like(nll)), axis=-1)


def decision_codes(sf_class: np.ndarray, bpt_class: np.ndarray) -> np.ndarray:
    """(N, 3) float32 DECISIONS targets from class codes (BPT: 0 star-forming, 1 composite, 2 AGN)."""
    sf, bpt = np.asarray(sf_class), np.asarray(bpt_class)
    on = bpt != UNCLASSIFIED
    cols = [np.where(sf != UNCLASSIFIED, sf > 0, UNCLASSIFIED),
            np.where(on, bpt >= 1, UNCLASSIFIED), np.where(on, bpt == 2, UNCLASSIFIED)]
    return np.column_stack(cols).astype(np.float32)


def class_term(measure: MeasureTerm, targets: dict[str, np.ndarray], train: np.ndarray, cp: ClassParams,
               temperature: float, decisions: Sequence[str] = DECISIONS,
               ) -> tuple[ClassTerm, dict[str, np.ndarray], dict[str, Any]]:
    """(the term, {CLASS_KEY: (N, 3) codes}, per-decision train counts) from `direct.target_arrays`
    targets; weights balance each decision's two classes over the train rows; a decision not in
    `decisions` is masked out (ValueError for an unknown name)."""
    unknown = sorted(set(decisions) - set(DECISIONS))
    if unknown:
        raise ValueError(f"cnn.measure_class_decisions: {unknown} not among {list(DECISIONS)}")
    codes = decision_codes(targets["sf_class"], targets["bpt_class"])
    codes[:, [d not in decisions for d in DECISIONS]] = UNCLASSIFIED
    counts = np.stack([np.bincount(c[c >= 0].astype(np.int64), minlength=2)[:2] for c in codes[train].T])
    weights = np.stack([class_weights(c) for c in counts])
    info = {"decisions": list(DECISIONS), "used": [d for d in DECISIONS if d in decisions],
            "n_train": counts.tolist(), "weights": weights.tolist()}
    return ClassTerm(measure, cp, temperature, weights), {CLASS_KEY: codes}, info
