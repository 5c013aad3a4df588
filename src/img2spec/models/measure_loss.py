"""The image network's measurement term (`cnn.measure_weight`): what astronomers read off the
spectrum, computed differentiably on the decoded rest-frame spectrum.

In the chi-square through the decoder a line is a handful of pixels among thousands, so the
network can lose the lines at almost no cost. This term compares the measurements the direct
baseline predicts (`direct.QUANTITIES`: EW(Halpha), Dn4000, Hdelta_A and the two BPT log
ratios) of the rest-frame spectrum decoded from the predicted latents with the same
measurements of the OBSERVED spectrum at the catalogue z, as `direct.target_arrays` computes
them (train-split standardisation; a NaN target is masked out; the BPT ratios only where the
observed spectrum detects all four lines, `ratio_targets_detected`). The observed spectrum is the
target, not the VAE's reconstruction of it: it is what real data offers (no noiseless truth),
it does not build the representation's own line errors into the target, and it is exactly what
the direct baseline learns from, so the two are compared on equal terms. Its noise is handled
by the Huber loss on standardised differences (`cnn.measure_huber_delta`).

The measurements are `measure.linear.measurement_weights` on the decoder's rest grid: the same
windows, band sums and continuum as `measure_spectra` (one definition), evaluated with Keras
ops. Per object: sum over quantities of Huber(clip((measured - mean) / std) - clip(target)), with
a soft clip at CLIP_STD standard deviations and floored continua (`CONTINUUM_FLOOR`), so that the
decoder's spectra of wandering latents early in training cannot blow the term up.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from ..config.measure import MeasureParams
from ..measure import UNCLASSIFIED
from ..measure.linear import (BPT_RATIOS, CONTINUUM_FLOOR, LINE_FLUX_FLOOR, BandWeights, LineWeights,
                              MeasurementWeights, measurement_weights)
from .direct import QUANTITIES, standardise, target_arrays

CLIP_STD = 5.0
"""Standardised measurements (predicted and target) are soft-clipped to +-CLIP_STD by
CLIP_STD tanh(x / CLIP_STD): an absurd prediction (a continuum at the floor) neither dominates a
batch's gradient nor pulls without bound; objects within ~2 std are unchanged to a few per cent."""
TARGET_KEY, TARGET_OK_KEY = "measures", "measures_ok"
"""Names of the standardised targets and their 0/1 mask in the CNN's training targets."""


def _band(flux, bw: BandWeights):
    """sum_k weight_k flux[:, index_k] for a (B, R) tensor."""
    x = ops.take(flux, ops.convert_to_tensor(bw.index.astype(np.int32)), axis=-1)
    return ops.sum(x * ops.convert_to_tensor(bw.weight.astype(np.float32), dtype=flux.dtype), axis=-1)


def _line_parts(flux, lw: LineWeights):
    """(line pixels (B, K), continuum under them (B, K), widths (K,)) of one line."""
    t = ops.convert_to_tensor(lw.red_share.astype(np.float32), dtype=flux.dtype)
    cont = (1.0 - t) * _band(flux, lw.blue)[:, None] + t * _band(flux, lw.red)[:, None]
    pix = ops.take(flux, ops.convert_to_tensor(lw.line.index.astype(np.int32)), axis=-1)
    return pix, cont, ops.convert_to_tensor(lw.line.weight.astype(np.float32), dtype=flux.dtype)


def equivalent_width(flux, lw: LineWeights):
    """(B,) rest-frame EW, emission positive: sum_j w_j (f_j / c_j - 1), c floored at CONTINUUM_FLOOR."""
    pix, cont, w = _line_parts(flux, lw)
    return ops.sum(w * (pix / ops.maximum(cont, CONTINUUM_FLOOR) - 1.0), axis=-1)


def line_flux(flux, lw: LineWeights):
    """(B,) line flux: s sum_j w_j (f_j - c_j)."""
    pix, cont, w = _line_parts(flux, lw)
    return lw.flux_scale * ops.sum(w * (pix - cont), axis=-1)


def break_ratio(flux, weights: MeasurementWeights):
    """(B,) Dn4000: red over blue F_nu mean; the blue mean is floored at that of a flat F_lambda of
    CONTINUUM_FLOOR (the F_nu coefficients carry lambda^2: the floor is scaled by their sum)."""
    floor = CONTINUUM_FLOOR * float(weights.dn4000.blue.weight.sum())
    return _band(flux, weights.dn4000.red) / ops.maximum(_band(flux, weights.dn4000.blue), floor)


def _log_ratio(flux, weights: MeasurementWeights, num: str, den: str):
    a = ops.maximum(line_flux(flux, weights.lines[num]), LINE_FLUX_FLOOR)
    b = ops.maximum(line_flux(flux, weights.lines[den]), LINE_FLUX_FLOOR)
    return (ops.log(a) - ops.log(b)) / np.log(10.0)


def measure_tensor(flux, weights: MeasurementWeights, quantities: Sequence[str] = QUANTITIES):
    """(B, Q) `measure_spectra` columns `quantities` of (B, R) unmasked spectra on the grid of `weights`."""
    cols = []
    for q in quantities:
        if q == "dn4000":
            cols.append(break_ratio(flux, weights))
        elif q == "hdelta_a":  # Lick convention: absorption positive
            cols.append(-equivalent_width(flux, weights.hdelta_a))
        elif q in BPT_RATIOS:
            cols.append(_log_ratio(flux, weights, *BPT_RATIOS[q]))
        elif q.endswith("_ew") and q[:-3] in weights.lines:
            cols.append(equivalent_width(flux, weights.lines[q[:-3]]))
        else:
            raise ValueError(f"measure loss: no differentiable form of {q!r}")
    return ops.stack(cols, axis=-1)


def soft_clip(x, limit: float = CLIP_STD):
    """limit x tanh(x / limit): the identity near 0, bounded by +-limit."""
    return limit * ops.tanh(x / limit)


def huber(d, delta: float):
    """Elementwise Huber loss: d^2 / 2 within +-delta, linear with slope delta beyond."""
    a = ops.abs(d)
    return ops.where(a <= delta, 0.5 * ops.square(d), delta * (a - 0.5 * delta))


def soften(values, softening: np.ndarray):
    """(B, Q) values with column k replaced by asinh(value / s_k) where s_k > 0 (numpy or tensor)."""
    if not np.any(softening > 0):
        return values
    s = np.where(softening > 0, softening, 1.0).astype(np.float32)
    on = (softening > 0).astype(np.float32)
    if isinstance(values, np.ndarray):
        return on * np.arcsinh(values / s) + (1.0 - on) * values
    return on * ops.arcsinh(values / s) + (1.0 - on) * values


class MeasureTerm:
    """Per-object measurement loss of decoder inputs: rest decoder -> measurements -> Huber."""

    def __init__(self, rest_model: keras.Model, weights: MeasurementWeights, mean: Sequence[float],
                 std: Sequence[float], delta: float, quantities: Sequence[str] = QUANTITIES,
                 softening: Sequence[float] | None = None):
        self.rest_model = rest_model
        self.weights = weights
        self.quantities = tuple(quantities)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.delta = float(delta)
        self.softening = np.zeros(len(self.quantities), np.float32) if softening is None \
            else np.asarray(softening, np.float32)
        """Per quantity: s > 0 compares asinh(value / s) (mean and std are of that), 0 the value itself."""

    def measure(self, decoder_input):
        """(B, Q) measurements of the rest-frame spectra decoded from `decoder_input` (latents, z)."""
        return measure_tensor(self.rest_model(decoder_input, training=False), self.weights, self.quantities)

    def __call__(self, decoder_input, target, ok):
        """(B,) sum over quantities of Huber(soft_clip(standardised measurement) - soft_clip(target)),
        masked by `ok`."""
        return self.compare(self.measure(decoder_input), target, ok)

    def compare(self, measured, target, ok):
        """The term of (B, Q) measurements already read off the decoded spectra (`measure`)."""
        m = soften(measured, self.softening)
        d = soft_clip((m - ops.convert_to_tensor(self.mean, m.dtype)) / ops.convert_to_tensor(self.std, m.dtype))
        good = ok > 0
        d = d - soft_clip(ops.where(good, target, ops.zeros_like(target)))
        # ok is a mask or, with cnn.measure_balance, a weight per object and quantity
        return ops.sum(ops.where(good, ok * huber(d, self.delta), ops.zeros_like(d)), axis=-1)


def measure_term(decoder: keras.Model, data, train: np.ndarray, val: np.ndarray, mp: MeasureParams,
                 delta: float, quantities: Sequence[str] = QUANTITIES, ew_softening: float = 0.0,
                 measured: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None, balance: bool = False,
                 ) -> tuple[MeasureTerm, dict[str, np.ndarray], dict[str, Any]]:
    """(the term for a rest-frame `decoder`, its catalogue-row targets {TARGET_KEY, TARGET_OK_KEY},
    the targets' train statistics). Only train and val rows are measured (`direct.target_arrays`,
    or its result passed as `measured`); only `quantities` count; `ew_softening` > 0 compares EWs
    as asinh(EW / ew_softening), standardised on that scale over the train rows. `balance`: each
    object's terms weighed by its class's inverse train frequency (`class_balance`).
    ValueError for a decoder without a rest-frame half (vae.frame: observed)."""
    from .inference import rest_decoder

    rest = rest_decoder(decoder)
    if rest is None:
        raise ValueError("cnn.measure_weight > 0 measures the decoded rest-frame spectrum: it needs a "
                         "rest-frame decoder (vae.frame: rest)")
    rest.model.trainable = False
    weights = measurement_weights(rest.grid.wave, mp, frame="rest")
    targets, scaling = measured if measured is not None else target_arrays(data, train, val, mp)
    if list(scaling["quantities"]) != list(QUANTITIES):
        raise ValueError(f"measure loss: targets {scaling['quantities']} differ from {list(QUANTITIES)}")
    unknown = sorted(set(quantities) - set(QUANTITIES))
    if unknown:
        raise ValueError(f"cnn.measure_quantities: {unknown} not among {list(QUANTITIES)}")
    ok = ratio_targets_detected(targets["quantity_ok"], targets["bpt_class"])
    ok *= np.asarray([q in quantities for q in QUANTITIES], np.float32)[None, :]
    softening = np.asarray([ew_softening if q.endswith("_ew") else 0.0 for q in QUANTITIES], np.float32)
    raw = targets["quantities"] * np.asarray(scaling["std"]) + np.asarray(scaling["mean"])
    goal, mean, std, _ = standardise(soften(raw, softening), ok, train)
    if balance:
        ok = ok * class_balance(targets, scaling)
    term = MeasureTerm(rest.model, weights, mean, std, delta, softening=softening)
    info = {k: scaling[k] for k in ("quantities", "n_train", "n_val")}
    info.update(mean=mean, std=std, used=[q for q in QUANTITIES if q in quantities])
    info["n_train_used"] = ok[train].sum(axis=0).astype(int).tolist()
    return term, {TARGET_KEY: goal, TARGET_OK_KEY: ok}, info


BALANCE_SCHEME = {"halpha_ew": "sf_class", "dn4000": "sf_class", "hdelta_a": "sf_class",
                  "log_oiii_hbeta": "bpt_class", "log_nii_halpha": "bpt_class"}
"""The class scheme whose train frequencies weigh each quantity under `cnn.measure_balance`."""


def class_balance(targets: dict[str, np.ndarray], scaling: dict[str, Any]) -> np.ndarray:
    """(N, Q) weights: per quantity, the inverse train frequency of the object's class in that quantity's
    scheme (`BALANCE_SCHEME`, the direct baseline's class weights: mean 1 over the classified train
    objects), 1 for an unclassified object. A regression weighted so sees every class as often, as
    balanced accuracy counts them."""
    per_scheme = {}
    for col in set(BALANCE_SCHEME.values()):
        weights = np.asarray(scaling["classes"][col]["weights"], np.float32)
        codes = np.asarray(targets[col]).astype(np.int64)
        per_scheme[col] = np.where(codes >= 0, weights[np.maximum(codes, 0)], np.float32(1.0))
    return np.stack([per_scheme[BALANCE_SCHEME[q]] for q in QUANTITIES], axis=1).astype(np.float32)


def ratio_targets_detected(ok: np.ndarray, bpt_class: np.ndarray) -> np.ndarray:
    """(N, Q) target mask with the BPT log ratios kept only for objects on the BPT diagram (all four
    lines detected at measure.classes.bpt_min_snr: a class other than UNCLASSIFIED), as evaluate
    scores them. A ratio of undetected lines is noise, and matching it asks a quiescent galaxy's
    predicted spectrum for emission lines (a positive line flux in both)."""
    keep = np.asarray(ok, np.float32).copy()
    on_diagram = np.asarray(bpt_class) != UNCLASSIFIED
    for k, q in enumerate(QUANTITIES):
        if q in BPT_RATIOS:
            keep[:, k] *= on_diagram
    return keep
