"""`tune`: the Optuna studies of the VAE and the CNN (owned by tuning/).

A search dimension is written in params.yaml as one of
- `{low: 4, high: 16}` (integers), `{low: 1.0e-4, high: 3.0e-3, log: true}` (floats; a
  range is a float range as soon as either bound is a float), with an optional `step`;
- `{choices: [3, 5]}` (categorical; one choice fixes the value).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from .base import Section

Scalar = Union[bool, int, float, str]


class Range(Section):
    """A numeric search range; integer when both bounds are integers."""

    low: Union[int, float]
    high: Union[int, float]
    log: bool = False
    step: Union[int, float, None] = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and (
            self.step is None or isinstance(self.step, int)
        )

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined (Optuna forbids it)")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be positive")
        return self


class Choice(Section):
    """A categorical dimension."""

    choices: tuple[Scalar, ...] = Field(min_length=1)


Dimension = Union[Range, Choice]


class VAESpace(Section):
    """VAE search space. Encoder units are (outer, inner); the decoder mirrors them."""

    latent_dim: Dimension = Range(low=4, high=16)
    outer_units: Dimension = Choice(choices=(256, 512, 1024))
    inner_units: Dimension = Choice(choices=(64, 128, 256))
    kl_weight: Dimension = Range(low=0.1, high=1.0, log=True)
    learning_rate: Dimension = Range(low=3.0e-4, high=3.0e-3, log=True)


class CNNSpace(Section):
    """CNN search space. Block b has base_filters * 2**b filters. `architecture` and
    `input_pool` are searched only when given (default: the params.yaml value)."""

    n_blocks: Dimension = Range(low=2, high=4)
    base_filters: Dimension = Choice(choices=(16, 32))
    kernel_size: Dimension = Choice(choices=(3, 5))
    dense_units: Dimension = Choice(choices=(64, 128, 256))
    dropout: Dimension = Range(low=0.0, high=0.4)
    learning_rate: Dimension = Range(low=3.0e-4, high=3.0e-3, log=True)
    loss: Dimension = Choice(choices=("latent", "spectrum"))
    architecture: Optional[Dimension] = None
    input_pool: Optional[Dimension] = None


class StudyParams(Section):
    """One study: its name, budget and per-trial epoch cap."""

    study_name: str = Field(min_length=1)
    n_trials: int = Field(6, ge=1)
    """Total trials of the study over all workers and reruns (a rerun only tops it up)."""
    timeout_s: float = Field(450, gt=0)
    """No new trial starts after this many seconds of one invocation."""
    max_epochs: Optional[int] = Field(None, ge=1)
    """Epoch cap per trial (min with the section's own `epochs`); None: the section's own
    epochs, i.e. trials are judged at the fidelity the default is trained at."""
    max_patience: Optional[int] = Field(None, ge=1)
    """Early-stopping patience cap per trial; None: the section's own patience."""
    min_improvement: float = Field(0.01, ge=0, lt=1)
    """`tune --apply` writes a study's best trial only if its value is below the default
    trial's by more than this fraction (smaller differences are within trial-to-trial noise)."""
    gpu_n_trials: Optional[int] = Field(None, ge=1)
    """Total trials when GPUs are present (one trial per GPU in parallel); None: n_trials."""


class VAEStudyParams(StudyParams):
    study_name: str = "img2spec-vae"
    space: VAESpace = VAESpace()
    gpu_space: Optional[VAESpace] = None
    """Search space on GPU machines (larger networks are affordable there); None: `space`."""


class CNNStudyParams(StudyParams):
    study_name: str = "img2spec-cnn"
    space: CNNSpace = CNNSpace()
    gpu_space: Optional[CNNSpace] = None
    """Search space on GPU machines; None: `space`."""


class TuneParams(Section):
    storage: str = "sqlite:///optuna.db"
    """Any RDB URL; the OPTUNA_STORAGE environment variable overrides it."""
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "threshold", "none"] = "median"
    seed: int = 0
    """Sampler seed (each worker adds its process id so workers do not repeat each other)."""
    startup_trials: int = Field(2, ge=0)
    """Trials before the median pruner (and TPE) start acting."""
    warmup_epochs: int = Field(1, ge=0)
    """Epochs of each trial before the median pruner may prune it."""
    prune_above: float = 1.0e6
    """Threshold pruner: prune a trial whose monitored value exceeds this (diverged)."""
    heartbeat_s: int = Field(60, ge=1)
    """Worker heartbeat; a trial silent for 2x this is marked FAIL and replaced."""
    max_consecutive_failures: int = Field(3, ge=1)
    hyperband_min_epochs: int = Field(5, ge=1)
    """Hyperband pruner: epochs of the first rung (the maximum is the section's full epochs)."""
    hyperband_reduction_factor: int = Field(3, ge=2)
    """Hyperband pruner: 1/this of the trials of a rung go on to the next one."""
    gpu_workers: int = Field(0, ge=0)
    """Parallel trial workers on a GPU machine, one per GPU (CUDA_VISIBLE_DEVICES pinning);
    0: one per visible GPU. Without GPUs one worker runs in this process."""
    vae: VAEStudyParams = VAEStudyParams()
    cnn: CNNStudyParams = CNNStudyParams()
