"""`publish` and `predict`: the inference bundle, the MLflow registry and batch inference (owned by predict/)."""

from typing import Literal

from pydantic import Field

from .base import Section

SigmaMethodParam = Literal["linearised", "sampled"]
"""Uncertainty methods a user can choose (models.inference.SIGMA_METHODS adds 'none')."""
RuntimeParam = Literal["onnx", "tensorflow"]
"""What runs a bundle's networks: its exported ONNX graphs (onnxruntime, no TensorFlow) or its Keras models."""


class PublishParams(Section):
    model_name: str = Field("img2spec", min_length=1)
    """Registered model name in the MLflow model registry."""
    alias: str = Field("champion", min_length=1)
    """Registry alias moved to each newly published version (`models:/<name>@<alias>`)."""
    registry: bool = True
    """Log the bundle to MLflow and register it; False only builds models/img2spec/."""
    sigma_method: SigmaMethodParam = "linearised"
    """Per-pixel uncertainty: first-order propagation of the latent variance through the
    decoder (exact Jacobian, deterministic, fast) or the std of `n_samples` decoded draws."""
    runtime: RuntimeParam = "onnx"
    """`onnx`: export the networks to ONNX in the bundle and run them with onnxruntime by default
    (predict and survey workers then never import TensorFlow); `tensorflow`: Keras models only."""
    n_samples: int = Field(32, ge=1)
    """Latent samples drawn through the decoder (sigma_method: sampled only)."""
    batch_size: int = Field(256, ge=1)
    """Default inference batch size (objects per forward pass)."""
    seed: int = 0
    """Seed of the latent sampling: same seed, same spectra."""
    plot_dpi: int = Field(110, ge=30, le=600)
    """Resolution of the `--plot` PNGs."""
    n_writers: int = Field(2, ge=1)
    """Processes writing per-object FITS/PNG files in `img2spec predict` (1: none)."""
