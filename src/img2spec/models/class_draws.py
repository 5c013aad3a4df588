"""Galaxy classes from the predicted spectrum's posterior: latent draws, measured and classified.

The point spectrum (the decoder at the latent mean) is what the images say on average. Where they
leave a galaxy's class open, the average lands between the populations and on the side of the
commonest one: a quiescent galaxy's predicted Halpha sits above the 3 A cut, an AGN's lines fall
under the detection cut. So each object's latent posterior N(mu, std^2) is drawn `CLASS_DRAWS`
times, every draw decoded in the rest frame, measured with the point spectrum's error model and
classified (`measure.classify`). A scheme's class probabilities are the shares of the draws that
the scheme classifies (`<class column>_p_<label>`), with the share classified beside them.

Where another model also says how probable each class is (the direct model, `models.fusion`,
`fusion.classes`), each draw is weighed by that model's probability of the class it measures as
(`weigh_draws`): a product of the two experts, as the fused latents are for the measurements. A
class then needs both: draws of the spectrum that measure as it, and images that make it likely.
A class no draw measures as stays at probability 0.

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
from ..measure.classify import BPT_LINES, classify
from ..measure.linear import BandWeights, LineWeights, measurement_weights
from ..measure.table import measure_classes, rest_pixels
from .inference import rest_decoder, split_decoder
from .split import SplitDecoder

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


def evidence_slices() -> dict[str, slice]:
    """Class column -> its columns in a (N, K) class-evidence array: every `CLASS_COLUMNS` entry in
    order, one column per `class_codes` code (the direct model's class heads, `models.direct`)."""
    out, start = {}, 0
    for col in CLASS_COLUMNS:
        k = len(class_codes(col))
        out[col] = slice(start, start + k)
        start += k
    return out


def weigh_draws(draws: ClassDraws, evidence: np.ndarray | None) -> ClassDraws:
    """`draws` with each class probability multiplied by the (N, K) `evidence` (`evidence_slices`
    layout) and renormalised; a row whose evidence is not finite and non-negative for the scheme, or
    whose product vanishes, keeps its draws' probabilities. None: `draws` unchanged."""
    if evidence is None:
        return draws
    evidence = np.asarray(evidence, np.float64)
    prob = {}
    for col, sl in evidence_slices().items():
        p = np.asarray(draws.prob[col], np.float64)
        ev = evidence[:, sl]
        usable = np.isfinite(ev).all(axis=1) & (ev >= 0).all(axis=1)
        prod = p * np.where(usable[:, None], ev, 1.0)
        total = prod.sum(axis=1, keepdims=True)
        keep = ~usable | ~(total[:, 0] > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prob[col] = np.where(keep[:, None], p, prod / total).astype(np.float32)
    return ClassDraws(prob, draws.classified)


def draw_classes(decoder, mu: np.ndarray, std: np.ndarray, z_used: np.ndarray, mp: MeasureParams, *,
                 ivar: np.ndarray | None = None, sigma: np.ndarray | None = None,
                 n_draws: int = CLASS_DRAWS, seed: int = CLASS_SEED) -> ClassDraws | None:
    """Class probabilities of N objects from `n_draws` latent draws each (None for an observed-frame decoder).

    `mu`, `std` (N, L): the latent posterior; `z_used` (N,): the z the point spectrum was decoded at.
    The error model of the rest-frame measurement, `ivar` or `sigma` (N, R) on the rest grid, is the
    point spectrum's, repeated for every draw (None: no S/N cut). Objects whose class pixels all have
    a usable error (every predicted spectrum) are measured through `FoldedClasses` (the decoder's tail
    reduced to the few numbers the classes read); the others, and any draw with a non-finite pixel,
    by `measure.table.measure_classes` on the decoded pixels: the same codes (tested).
    """
    rest = rest_decoder(decoder)
    if rest is None:
        return None
    mu, std = np.asarray(mu, np.float32), np.asarray(std, np.float32)
    n, n_lat = mu.shape
    eps = np.random.default_rng(seed).standard_normal((n, n_draws, n_lat)).astype(np.float32)
    draws = _Draws(split_decoder(rest.model), mu, std, np.asarray(z_used, np.float32), eps)
    errors = {k: v for k, v in (("ivar", ivar), ("sigma", sigma)) if v is not None}
    codes = {col: np.full((n, n_draws), UNCLASSIFIED, np.int8) for col in CLASS_COLUMNS}
    folded = FoldedClasses.of(rest.grid.wave, mp)
    todo = np.arange(n)
    if folded is not None:
        done = folded.usable(errors, n)
        done = done[_folded_codes(folded, draws, done, errors, mp, codes)]
        todo = np.setdiff1d(todo, done)
    if len(todo):
        _measured_codes(draws, todo, rest.grid.wave, errors, mp, codes)
    prob, classified = {}, {}
    for col in CLASS_COLUMNS:
        prob[col], classified[col] = class_probabilities(codes[col], class_codes(col))
    return ClassDraws(prob, classified)


@dataclass(frozen=True)
class _Draws:
    """The latent draws of N objects: row i, draw k is `mu[i] + eps[i, k] * std[i]`, decoded at `z[i]`."""

    split: SplitDecoder
    mu: np.ndarray
    std: np.ndarray
    z: np.ndarray
    eps: np.ndarray

    def chunks(self, rows: np.ndarray):
        """(objects, (objects x draws, L + 1) decoder inputs) per chunk of at most DRAW_ROWS draws."""
        n_draws = self.eps.shape[1]
        step = max(DRAW_ROWS // max(n_draws, 1), 1)
        for start in range(0, len(rows), step):
            sub = rows[start:start + step]
            latents = (self.mu[sub, None, :] + self.eps[sub] * self.std[sub, None, :]).reshape(-1, self.mu.shape[1])
            yield sub, np.concatenate([latents, np.repeat(self.z[sub], n_draws)[:, None]], axis=1)


def _folded_codes(folded: "FoldedClasses", draws: _Draws, rows: np.ndarray, errors: dict[str, np.ndarray],
                  mp: MeasureParams, codes: dict[str, np.ndarray]) -> np.ndarray:
    """Write the class codes of `rows` into `codes` through `folded`; returns the mask of `rows`
    done (False: a draw with a non-finite output, left to the measured path)."""
    n_draws = draws.eps.shape[1]
    project = draws.split.linear_map(folded.columns, folded.matrix)
    line_err = folded.line_errors(errors, rows)
    ok = np.ones(len(rows), bool)
    pos = 0
    for sub, cond in draws.chunks(rows):
        values = project(cond)
        here = slice(pos, pos + len(sub))
        table = folded.table(values, {k: np.repeat(v[here], n_draws) for k, v in line_err.items()})
        for col, c in classify(table, mp.classes).items():
            if col in codes:
                codes[col][sub] = np.asarray(c).reshape(-1, n_draws)
        ok[here] = np.isfinite(values).reshape(len(sub), -1).all(axis=1)
        pos += len(sub)
    return ok


def _measured_codes(draws: _Draws, rows: np.ndarray, wave: np.ndarray, errors: dict[str, np.ndarray],
                    mp: MeasureParams, codes: dict[str, np.ndarray]) -> None:
    """Write the class codes of `rows` into `codes`: each draw's class pixels decoded and measured
    by `measure.table.measure_classes` (masked pixels of the error model handled as measure does)."""
    n_draws = draws.eps.shape[1]
    columns = rest_pixels(wave, mp, classes_only=True)
    errs = {k: np.asarray(v, np.float32)[:, columns] for k, v in errors.items()}
    step_rows = max(DRAW_ROWS // max(n_draws, 1), 1) * n_draws
    # One buffer per array for every chunk: only `columns` are written or read, the rest stays as filled.
    buffers = {"flux": np.full((step_rows, len(wave)), np.nan, np.float32)}
    buffers.update({k: np.full_like(buffers["flux"], 0.0 if k == "ivar" else np.nan) for k in errs})
    for sub, cond in draws.chunks(rows):
        r = len(sub) * n_draws
        buffers["flux"][:r, columns] = draws.split.flux(cond, columns)
        for k, v in errs.items():
            buffers[k][:r, columns] = np.repeat(v[sub], n_draws, axis=0)
        table = measure_classes(buffers["flux"][:r], wave, 0.0, mp, frame="rest",
                                **{k: buffers[k][:r] for k in errs})
        for col in CLASS_COLUMNS:
            codes[col][sub] = np.asarray(table[col]).reshape(-1, n_draws)


SF_LINE = "halpha"
"""The line whose EW is the star-forming cut (`measure.classify`: `halpha_ew`)."""


@dataclass(frozen=True)
class FoldedClasses:
    """What the classes read of a rest-frame spectrum, as a (C, M) linear map of its pixels `columns`
    (`measure.linear.measurement_weights`, spectra without masked pixels): per BPT line its blue and red
    side-band means and its width-weighted line sum (the line flux is linear in those three), the
    star-forming line's pixels (its EW divides each by the continuum), Dn4000's two F_nu means. A
    draw is then M numbers, not C pixels measured band by band: 32 draws per galaxy cost ~3x less."""

    columns: np.ndarray
    matrix: np.ndarray
    lines: dict[str, LineWeights]
    slots: dict[str, int]
    """'<line>:blue|red|sum', 'dn4000:blue|red' -> output column."""
    sf_pixels: slice
    """Output columns holding the star-forming line's pixels."""
    criterion: str

    @classmethod
    def of(cls, wave: np.ndarray, mp: MeasureParams) -> "FoldedClasses | None":
        """The map on the grid `wave`; None when a band lies off the grid (measured the long way)."""
        try:
            w = measurement_weights(wave, mp)
        except ValueError:
            return None
        lines = {name: w.lines[name] for name in BPT_LINES}
        maps: list[tuple[str, BandWeights]] = []
        for name, lw in lines.items():
            maps += [(f"{name}:blue", lw.blue), (f"{name}:red", lw.red), (f"{name}:sum", lw.line)]
        if mp.classes.sf_criterion == "dn4000":
            maps += [("dn4000:blue", w.dn4000.blue), ("dn4000:red", w.dn4000.red)]
        sf = lines[SF_LINE].line
        columns = np.unique(np.concatenate([b.index for _, b in maps]))
        matrix = np.zeros((len(columns), len(maps) + len(sf.index)))
        for k, (_, band) in enumerate(maps):
            matrix[np.searchsorted(columns, band.index), k] = band.weight
        matrix[np.searchsorted(columns, sf.index), len(maps) + np.arange(len(sf.index))] = 1.0
        return cls(columns, matrix, lines, {key: k for k, (key, _) in enumerate(maps)},
                   slice(len(maps), len(maps) + len(sf.index)), mp.classes.sf_criterion)

    def usable(self, errors: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Objects whose error model has no masked pixel on `columns` (all of them without one)."""
        if "sigma" in errors:
            s = np.asarray(errors["sigma"])[:, self.columns]
            return np.flatnonzero((np.isfinite(s) & (s >= 0)).all(axis=1))
        if "ivar" in errors:
            iv = np.asarray(errors["ivar"])[:, self.columns]
            return np.flatnonzero((np.isfinite(iv) & (iv > 0)).all(axis=1))
        return np.arange(n)

    def line_errors(self, errors: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """(len(rows),) 1-sigma flux of each BPT line (`measure.lines.measure_line`'s propagation;
        NaN without an error model)."""
        if "sigma" in errors:
            var = np.asarray(errors["sigma"], np.float64)[rows][:, self.columns] ** 2
        elif "ivar" in errors:
            var = 1.0 / np.asarray(errors["ivar"], np.float64)[rows][:, self.columns]
        else:
            var = np.full((len(rows), len(self.columns)), np.nan)
        out = {}
        for name, lw in self.lines.items():
            t, w = lw.red_share, lw.line.weight
            # band-mean variance sum a_k^2 var_k; line-sum variance sum w_j^2 var_j
            vb, vr, vl = (var[:, np.searchsorted(self.columns, b.index)] @ b.weight ** 2
                          for b in (lw.blue, lw.red, lw.line))
            out[name] = np.sqrt(vl + np.sum(w * (1 - t)) ** 2 * vb + np.sum(w * t) ** 2 * vr) * lw.flux_scale
        return out

    def table(self, values: np.ndarray, line_err: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The `measure.classify` inputs of R draws from their (R, M) outputs and (R,) line-flux errors."""
        out = {}
        for name, lw in self.lines.items():
            mb, mr, total = (values[:, self.slots[f"{name}:{part}"]] for part in ("blue", "red", "sum"))
            t, w = lw.red_share, lw.line.weight
            out[f"{name}_flux"] = lw.flux_scale * (total - mb * np.sum(w * (1 - t)) - mr * np.sum(w * t))
            out[f"{name}_flux_err"] = line_err[name]
        if self.criterion == "dn4000":
            mb, mr = values[:, self.slots["dn4000:blue"]], values[:, self.slots["dn4000:red"]]
            with np.errstate(invalid="ignore", divide="ignore"):
                out["dn4000"] = np.where((mb > 0) & (mr > 0), mr / mb, np.nan)
            return out
        lw = self.lines[SF_LINE]
        mb, mr = values[:, self.slots[f"{SF_LINE}:blue"]], values[:, self.slots[f"{SF_LINE}:red"]]
        cont = mb[:, None] * (1.0 - lw.red_share) + mr[:, None] * lw.red_share
        with np.errstate(invalid="ignore", divide="ignore"):
            ew = np.sum(lw.line.weight * (values[:, self.sf_pixels] / np.where(cont > 0, cont, 1.0) - 1.0), axis=1)
        out[f"{SF_LINE}_ew"] = np.where((mb > 0) & (mr > 0), ew, np.nan)
        return out


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
