"""Spectra pulled toward the direct model's predictions of their own measurements.

The direct baseline (`models.direct`) predicts EW(Halpha), Dn4000 and Hdelta_A from the images
more closely than they measure on the CNN's decoded spectrum. Fusion moves each galaxy's
latents from the CNN's mean mu to the minimum of

    w/2 sum_q ((m_q(decoder(x, z)) - d_q) / s_q)^2  +  1/2 sum_l ((x_l - mu_l) / std_l)^2,

m_q the decoded rest-frame spectrum's measurement with the catalogue's windows
(`measure.linear.LinearMeasures`), d_q and s_q the direct model's prediction and predicted
sigma, the CNN's latent posterior N(mu, std^2) the prior, at the z the spectrum is decoded at.
Levenberg-Marquardt in the whitened coordinates u = (x - mu) / std, each step from the
decoder's split (`split.SplitDecoder`: the measurements' gradients pulled back through the tail
and the body, on the measured pixels only), so it runs in numpy on either runtime (Keras or the
bundle's exported graphs). Both networks read the same images, so their information counts twice:
the fused latents are a point estimate; the latent std, hence the spectrum's sigma before
its calibration, stays the CNN's.

With `fusion.classes` the direct model's class probabilities come back beside the latents
(`inference.Refinement.class_evidence`): the spectrum's posterior draws are weighed with them
when its classes are decided (`class_draws.weigh_draws`).

This module imports only numpy (and the networks' runners through `inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config.measure import MeasureParams
from ..measure.linear import LinearMeasures, measurement_weights
from .class_draws import evidence_slices
from .contract import LOGVAR_CLIP
from .inference import Refinement, network_outputs, rest_decoder, split_decoder
from .split import SplitDecoder

DIRECT_MODEL_FILE, DIRECT_INFO_FILE = "direct.keras", "direct.json"
"""The direct model's files (models/direct/ and a fusing bundle): the Keras heads and their de-standardisation."""
STD_FLOOR = 1e-3
"""Lowest latent std of the prior term (a collapsed direction would pin its latent)."""
DAMPING_START, DAMPING_DOWN, DAMPING_UP = 1e-2, 0.3, 10.0
"""Levenberg-Marquardt damping: first value, factor after an accepted step, after a rejected one."""


def direct_quantities(raw: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                      trained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direct model's (N, 2Q) standardised means and log-variances -> ((N, Q) values, (N, Q)
    sigmas) in measurement units; a quantity with no training target is NaN."""
    raw = np.asarray(raw, np.float64)
    q = len(mean)
    value = raw[:, :q] * scale + mean
    sigma = np.exp(0.5 * np.clip(raw[:, q:2 * q], -LOGVAR_CLIP, LOGVAR_CLIP)) * scale
    value[:, ~trained] = np.nan
    sigma[:, ~trained] = np.nan
    return value, sigma


@dataclass(frozen=True)
class DirectHeads:
    """The direct model's heads: `net(images [+ photometry])` -> (N, 2Q [+ K]) standardised means
    and log-variances of `quantities` [and the class heads' probabilities, `direct.fusion_heads`],
    a Keras model or an exported graph."""

    net: Any
    quantities: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    trained: np.ndarray
    classes: dict[str, bool]
    """Class column -> whether its head had training targets, in the network's output order."""

    @classmethod
    def of(cls, net: Any, info: dict[str, Any]) -> "DirectHeads":
        """From the network and its `direct.json`."""
        classes = {col: sum(c["n_train"]) > 0 for col, c in (info.get("classes") or {}).items()}
        return cls(net, tuple(info["quantities"]), np.asarray(info["mean"], np.float64),
                   np.asarray(info["std"], np.float64), np.asarray(info["n_train"]) > 0, classes)

    def outputs(self, images: np.ndarray, photometry: np.ndarray | None, batch_size: int) -> np.ndarray:
        """The network's raw (N, 2Q [+ K]) outputs for `images`."""
        return network_outputs(self.net, images, photometry=photometry, batch_size=batch_size)

    def quantities_of(self, raw: np.ndarray, quantities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(N, len(quantities)) values and sigmas of `quantities` in raw `outputs`."""
        value, sigma = direct_quantities(raw, self.mean, self.scale, self.trained)
        cols = [self.quantities.index(q) for q in quantities]
        return value[:, cols], sigma[:, cols]

    def classes_of(self, raw: np.ndarray) -> np.ndarray | None:
        """(N, K) class probabilities in raw `outputs`, in `class_draws.evidence_slices` layout (NaN
        for a head without training targets or absent); None when the network outputs none (a
        bundle exported with the regression heads alone)."""
        raw = np.asarray(raw, np.float64)
        slices = evidence_slices()
        width = sum(sl.stop - sl.start for col, sl in slices.items() if col in self.classes)
        start = 2 * len(self.quantities)
        if not self.classes or raw.shape[1] != start + width:
            return None
        out = np.full((len(raw), max(sl.stop for sl in slices.values())), np.nan)
        for col, trained in self.classes.items():
            k = slices[col].stop - slices[col].start
            if trained:
                out[:, slices[col]] = raw[:, start:start + k]
            start += k
        return out


def _measured(split: SplitDecoder, measures: LinearMeasures, mu: np.ndarray, std: np.ndarray, z: np.ndarray,
              u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decoder inputs (B, L + 1), measurements (B, Q), their flux gradients (B, Q, C)) at whitened `u`."""
    x = np.concatenate([mu + std * u, z[:, None]], axis=1).astype(np.float32)
    values, grads = measures.evaluate(split.flux(x, measures.columns))
    return x, values, grads


def _cost(r: np.ndarray, u: np.ndarray) -> np.ndarray:
    return 0.5 * (np.sum(r ** 2, axis=1) + np.sum(u ** 2, axis=1))


def fuse_latents(split: SplitDecoder, measures: LinearMeasures, mu: np.ndarray, std: np.ndarray, z: np.ndarray,
                 target: np.ndarray, target_sigma: np.ndarray, *, weight: float, iterations: int) -> np.ndarray:
    """(B, L) latents minimising the module doc's objective, from `mu` (B, L) with prior `std`, for
    the rest-frame decoder half `split` at redshifts `z` (B,); `target`/`target_sigma` (B, Q) in
    `measures.quantities` order (non-finite or non-positive sigma: that term is left out).

    A proposed step costs one body pass on the measured pixels; the Jacobian (the body's
    Jacobian-vector products, contracted with the measurements' gradients through the tail) is
    computed only where a step was accepted and another follows."""
    mu = np.asarray(mu, np.float64)
    std = np.maximum(np.asarray(std, np.float64), STD_FLOOR)
    z = np.asarray(z, np.float64).reshape(-1)
    ok = np.isfinite(target) & np.isfinite(target_sigma) & (target_sigma > 0)
    scale = np.where(ok, np.sqrt(weight) / np.where(ok, target_sigma, 1.0), 0.0)
    target = np.where(ok, target, 0.0)
    u = np.zeros_like(mu)
    if len(mu) == 0 or not ok.any():
        return mu.astype(np.float32)

    def jacobian(rows: np.ndarray, x: np.ndarray, grads: np.ndarray) -> np.ndarray:  # (R, Q, L) of r in u
        return scale[rows, :, None] * split.jacobian_dot(x, std[rows], measures.columns, grads).astype(np.float64)

    x, values, grads = _measured(split, measures, mu, std, z, u)
    r = scale * (values - target)
    cost = _cost(r, u)
    jac = jacobian(np.arange(len(mu)), x, grads)
    damping = np.full(len(mu), DAMPING_START)
    eye = np.eye(mu.shape[1])
    for it in range(int(iterations)):
        normal = np.einsum("bql,bqm->blm", jac, jac) + (1.0 + damping)[:, None, None] * eye
        step = -np.linalg.solve(normal, (np.einsum("bql,bq->bl", jac, r) + u)[:, :, None])[:, :, 0]
        x_new, values_new, grads_new = _measured(split, measures, mu, std, z, u + step)
        r_new = scale * (values_new - target)
        cost_new = _cost(r_new, u + step)
        better = np.isfinite(cost_new) & (cost_new < cost)
        u[better] += step[better]
        r[better], cost[better] = r_new[better], cost_new[better]
        if it + 1 < iterations and better.any():
            rows = np.flatnonzero(better)
            jac[rows] = jacobian(rows, x_new[rows], grads_new[rows])
        damping = np.where(better, damping * DAMPING_DOWN, damping * DAMPING_UP)
    return (mu + std * u).astype(np.float32)


@dataclass(frozen=True)
class Fusion:
    """The fusion of a CNN's latents with a direct model (`fusion:` params): called as a latent
    refinement by `inference.predict_spectra`."""

    heads: DirectHeads
    quantities: tuple[str, ...]
    weight: float
    iterations: int
    measure: MeasureParams
    classes: bool = False
    """Also return the direct model's class probabilities (`fusion.classes`)."""
    joint: Any = None
    """The CNN and these heads as one network whose output is the CNN's then the heads'
    (`onnx_runtime.load_exported_joint`): `inference.predict_spectra` runs the shared images through
    it once and passes the heads' part as `image_outputs`. None: the heads run on their own."""
    _measures: dict[int, LinearMeasures] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [q for q in self.quantities if q not in self.heads.quantities]
        if missing:
            raise ValueError(f"fusion.quantities: the direct model predicts {', '.join(self.heads.quantities)}, "
                             f"not {', '.join(missing)}")

    def _measures_for(self, wave: np.ndarray) -> LinearMeasures:
        # the band weights depend only on the decoder's grid: built once, not per batch of a survey
        key = hash(np.asarray(wave).tobytes())
        if key not in self._measures:
            self._measures[key] = LinearMeasures(measurement_weights(wave, self.measure), self.quantities)
        return self._measures[key]

    def __call__(self, decoder: Any, mu: np.ndarray, std: np.ndarray, z_used: np.ndarray, images: np.ndarray,
                 photometry: np.ndarray | None, batch_size: int, image_outputs: np.ndarray | None = None) -> Refinement:
        """Fused (N, L) latents of `images` whose CNN posterior is N(mu, std^2), decoded at `z_used`,
        with the direct model's class probabilities when `classes` (and its network gives them).
        `image_outputs`: the heads' raw outputs on `images` when already run (through `joint`)."""
        rest = rest_decoder(decoder)
        if rest is None:
            raise ValueError("fusion needs a rest-frame decoder (vae.frame: rest): its measurements are rest-frame")
        measures = self._measures_for(rest.grid.wave)
        split = split_decoder(rest.model)
        raw = self.heads.outputs(images, photometry, batch_size) if image_outputs is None else image_outputs
        target, sigma = self.heads.quantities_of(raw, self.quantities)
        out = np.empty_like(np.asarray(mu, np.float32))
        for s in range(0, len(mu), batch_size):
            sl = slice(s, s + batch_size)
            out[sl] = fuse_latents(split, measures, mu[sl], std[sl], z_used[sl], target[sl], sigma[sl],
                                   weight=self.weight, iterations=self.iterations)
        return Refinement(out, self.heads.classes_of(raw) if self.classes else None)
