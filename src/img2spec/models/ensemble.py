"""Networks trained with different seeds, published as one Keras model (`cnn.ensemble`).

The members share their inputs; the ensemble's output has a single member's layout, so
everything downstream (ONNX export, fusion, calibration, predict, survey) reads it as one
network. Each Gaussian output (a latent or the redshift: mean and log-variance; the direct
model's quantities) becomes the equal-weight mixture's mean and variance, the mean of the
members' variances plus the variance of their means: where the members disagree, the
predicted uncertainty widens. Class probabilities are averaged.

Why: on the val split of the 12,000-galaxy mock two seeds of the image network differ by
less than 0.02 in D, while their mixture is 0.05 (no z given) and 0.07 (z given) better
than either, 5-6 paired standard errors (`bench/bench_cnn_ensemble.py`, docs/experiments.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import layers, ops

from .contract import N_REDSHIFT_OUTPUTS

MEMBER_NAME = "{name}_member{k}"
"""Name of member k inside an ensemble called `name` (nested model names must be unique)."""


@keras.saving.register_keras_serializable(package="img2spec")
class GaussianMixture(layers.Layer):
    """K members' (N, C) outputs -> one (N, C): every column the members' mean; column
    `logvars[i]` the log-variance of the equal-weight mixture of the Gaussians
    (mean column `means[i]`, log-variance column `logvars[i]`) of the members."""

    def __init__(self, means: Sequence[int], logvars: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.means, self.logvars = [int(c) for c in means], [int(c) for c in logvars]
        if len(self.means) != len(self.logvars):
            raise ValueError(f"GaussianMixture: {len(self.means)} mean columns but {len(self.logvars)} log-variance "
                             "columns")

    def call(self, inputs):
        x = ops.stack(list(inputs), axis=0)  # (K, N, C)
        m = ops.take(x, self.means, axis=2)
        var = ops.mean(ops.exp(ops.take(x, self.logvars, axis=2)), axis=0) + ops.var(m, axis=0)
        width = x.shape[-1]
        slot = {c: width + i for i, c in enumerate(self.logvars)}
        order = [slot.get(c, c) for c in range(width)]
        return ops.take(ops.concatenate([ops.mean(x, axis=0), ops.log(var)], axis=-1), order, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "means": self.means, "logvars": self.logvars}


def gaussian_columns(width: int, redshift: bool) -> tuple[list[int], list[int]]:
    """(mean columns, log-variance columns) of a CNN output of `width` columns (`contract.split_output`'s layout)."""
    latent = (width - (N_REDSHIFT_OUTPUTS if redshift else 0)) // 2
    means, logvars = list(range(latent)), list(range(latent, 2 * latent))
    if redshift:
        means, logvars = means + [2 * latent], logvars + [2 * latent + 1]
    return means, logvars


def member_outputs(members: Sequence[keras.Model], name: str) -> tuple[Any, list]:
    """(fresh inputs named as the members' (one tensor or a list, as theirs), each member's output on
    them); the members are renamed `MEMBER_NAME` so that one model can hold them all."""
    first = members[0]
    inputs = [keras.Input(t.shape[1:], name=t.name) for t in first.inputs]
    feed = inputs if len(inputs) > 1 else inputs[0]
    outs = []
    for k, member in enumerate(members):
        if [t.name for t in member.inputs] != [t.name for t in first.inputs]:
            raise ValueError(f"ensemble {name}: member {k} takes inputs {[t.name for t in member.inputs]}, member 0 "
                             f"{[t.name for t in first.inputs]}")
        member.name = MEMBER_NAME.format(name=name, k=k)
        outs.append(member(feed))
    return feed, outs


def cnn_ensemble(members: Sequence[keras.Model], redshift: bool, name: str = "cnn") -> keras.Model:
    """The image CNNs `members` as one network of the same output layout (one member: itself)."""
    if len(members) == 1:
        return members[0]
    inputs, outs = member_outputs(members, name)
    means, logvars = gaussian_columns(int(outs[0].shape[-1]), redshift)
    out = GaussianMixture(means, logvars, name=f"{name}_mixture")(outs)
    return keras.Model(inputs, out, name=name)
