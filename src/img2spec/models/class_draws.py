"""Galaxy classes from the predicted spectrum's posterior: latent draws, measured and classified.

The point spectrum (the decoder at the latent mean) is what the images say on average. Where they
leave a galaxy's class open, the average lands between the populations and on the side of the
commonest one: a quiescent galaxy's predicted Halpha sits above the 3 A cut, an AGN's lines fall
under the detection cut. So each object's latent posterior N(mu, std^2) is drawn `CLASS_DRAWS`
times, every draw decoded in the rest frame, measured with the point spectrum's error model and
classified (`measure.classify`). A scheme's class probabilities are the shares of the draws that
the scheme classifies (`<class column>_p_<label>`), with the share classified beside them.

The class reported is the most probable one after a prior-shift correction (Saerens, Latinne &
Decaestecker 2002, Neural Computation 14, 21): each probability divided by its mean over the val
split (`fit_class_priors`, stored in the bundle). A class is then assigned where the images make
it more likely than it is on average: the decision that scores balanced accuracy, as the direct
baseline's class-weighted training does. Without fitted priors the plain most probable class.

An observed-frame decoder has no rest-frame spectrum to draw: its classes stay the point ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.measure import MeasureParams
from ..measure import CLASS_COLUMNS, UNCLASSIFIED
from ..measure.table import measure_classes, rest_pixels
from .inference import rest_decoder, split_decoder

CLASS_DRAWS = 32
"""Latent draws per object: a class probability to ~0.09 (one sigma at p = 0.5). 64 gave BPT 0.03
better on val (paired over four draw seeds), less than training seeds move it, at 1.3x the survey's
CPU against 1.12x (docs/experiments.md)."""
CLASS_SEED = 0
"""Seed of the draws (drawn per object in row order: independent of the batching)."""
DRAW_ROWS = 2048
"""Decoded draws per chunk (objects x draws): bounds the memory of a large batch."""
POINT_SUFFIX = "_point"
"""`<class column>_point`: the class measured on the point spectrum itself."""
CLASSIFIED_SUFFIX = "_classified_frac"


def class_codes(column: str) -> list[int]:
    """The class codes of a class column, unclassified left out."""
    return [c for c in CLASS_COLUMNS[column] if c != UNCLASSIFIED]


@dataclass(frozen=True)
class ClassDraws:
    """Per class column: (N, C) probabilities over `class_codes` and (N,) share of draws classified."""

    prob: dict[str, np.ndarray]
    classified: dict[str, np.ndarray]


def draw_classes(decoder, mu: np.ndarray, std: np.ndarray, z_used: np.ndarray, mp: MeasureParams, *,
                 ivar: np.ndarray | None = None, sigma: np.ndarray | None = None,
                 n_draws: int = CLASS_DRAWS, seed: int = CLASS_SEED) -> ClassDraws | None:
    """Class probabilities of N objects from `n_draws` latent draws each (None for an observed-frame decoder).

    `mu`, `std` (N, L): the latent posterior; `z_used` (N,): the z the point spectrum was decoded at.
    The error model of the rest-frame measurement, `ivar` or `sigma` (N, R) on the rest grid, is the
    point spectrum's, repeated for every draw (None: no S/N cut). Only what the classes read is decoded
    and measured (`measure.table.measure_classes`).
    """
    rest = rest_decoder(decoder)
    if rest is None:
        return None
    mu, std = np.asarray(mu, np.float32), np.asarray(std, np.float32)
    n, n_lat = mu.shape
    wave = rest.grid.wave
    columns = rest_pixels(wave, mp, classes_only=True)
    eps = np.random.default_rng(seed).standard_normal((n, n_draws, n_lat)).astype(np.float32)
    z_used = np.asarray(z_used, np.float32)
    errors = {k: np.asarray(v, np.float32)[:, columns] for k, v in (("ivar", ivar), ("sigma", sigma)) if v is not None}
    step = min(max(DRAW_ROWS // max(n_draws, 1), 1), max(n, 1))
    # One buffer per array for every chunk: only `columns` are written or read, the rest stays as filled.
    buffers = {"flux": np.full((step * n_draws, len(wave)), np.nan, np.float32)}
    buffers.update({k: np.full_like(buffers["flux"], 0.0 if k == "ivar" else np.nan) for k in errors})
    codes: dict[str, list[np.ndarray]] = {col: [] for col in CLASS_COLUMNS}
    flux_of = split_decoder(rest.model).flux
    for start in range(0, n, step):
        sl = slice(start, min(start + step, n))
        rows = (sl.stop - sl.start) * n_draws
        latents = (mu[sl, None, :] + eps[sl] * std[sl, None, :]).reshape(rows, n_lat)
        cond = np.concatenate([latents, np.repeat(z_used[sl], n_draws)[:, None]], axis=1)
        buffers["flux"][:rows, columns] = flux_of(cond, columns)
        for k, v in errors.items():
            buffers[k][:rows, columns] = np.repeat(v[sl], n_draws, axis=0)
        table = measure_classes(buffers["flux"][:rows], wave, 0.0, mp, frame="rest",
                                **{k: buffers[k][:rows] for k in errors})
        for col in CLASS_COLUMNS:
            codes[col].append(np.asarray(table[col]).reshape(-1, n_draws))
    prob, classified = {}, {}
    for col in CLASS_COLUMNS:
        drawn = np.concatenate(codes[col]) if codes[col] else np.zeros((0, n_draws), np.int8)
        prob[col], classified[col] = class_probabilities(drawn, class_codes(col))
    return ClassDraws(prob, classified)


def class_probabilities(drawn: np.ndarray, codes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, S) class codes of S draws -> ((N, C) shares of the classified draws per code, NaN rows
    where none is classified; (N,) share of the draws classified)."""
    counts = np.stack([np.sum(drawn == c, axis=1) for c in codes], axis=1).astype(np.float64)
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(total[:, None] > 0, counts / total[:, None], np.nan)
    frac = total / drawn.shape[1] if drawn.shape[1] else np.zeros(len(drawn))
    return prob.astype(np.float32), frac.astype(np.float32)


def fit_class_priors(draws: ClassDraws) -> dict[str, list[float]]:
    """Per class column, the mean probability of each class over the objects with a classified draw:
    the class frequencies the model's probabilities carry (fitted on val)."""
    out = {}
    for col, prob in draws.prob.items():
        ok = np.isfinite(prob).all(axis=1)
        out[col] = [float(v) for v in prob[ok].mean(axis=0)] if ok.any() else []
    return out


def decide(draws: ClassDraws, priors: dict[str, list[float]] | None = None) -> dict[str, np.ndarray]:
    """Per class column, (N,) int8 codes: the most probable class, each probability divided by its
    prior where `priors` has one per class (positive); `UNCLASSIFIED` where no draw is classified."""
    out = {}
    for col, prob in draws.prob.items():
        codes = np.asarray(class_codes(col), np.int8)
        prior = np.asarray((priors or {}).get(col) or [], np.float64)
        weight = 1.0 / prior if prior.size == len(codes) and np.all(prior > 0) else np.ones(len(codes))
        ok = np.isfinite(prob).all(axis=1)
        best = np.argmax(np.where(ok[:, None], prob * weight, 0.0), axis=1)
        out[col] = np.where(ok, codes[best], UNCLASSIFIED).astype(np.int8)
    return out


def probability_columns(draws: ClassDraws) -> dict[str, np.ndarray]:
    """`<class column>_p_<label>` (float32, NaN where no draw is classified) and
    `<class column>_classified_frac` per class column."""
    out = {}
    for col, prob in draws.prob.items():
        labels = CLASS_COLUMNS[col]
        for k, code in enumerate(class_codes(col)):
            out[f"{col}_p_{labels[code]}"] = prob[:, k]
        out[col + CLASSIFIED_SUFFIX] = draws.classified[col]
    return out


def posterior_classes(table: dict[str, np.ndarray], draws: ClassDraws | None,
                      priors: dict[str, list[float]] | None) -> dict[str, np.ndarray]:
    """A `measure_spectra` table with its class columns decided on the draws (`decide`), the point
    spectrum's classes kept as `<class column>_point`, and the `probability_columns`; `table`
    itself when `draws` is None (an observed-frame decoder)."""
    if draws is None:
        return table
    out = dict(table)
    for col, codes in decide(draws, priors).items():
        out[col + POINT_SUFFIX] = np.asarray(table[col], np.int8)
        out[col] = codes
    out.update(probability_columns(draws))
    return out
