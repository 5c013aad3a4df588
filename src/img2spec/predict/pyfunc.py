"""The bundle as an MLflow pyfunc model: stretched images (N, H, W, 5) -> {flux, sigma}."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class BundleModel(mlflow.pyfunc.PythonModel):
    """Wraps an img2spec bundle (logged as the artifact `bundle`) for `mlflow.pyfunc.load_model`.

    Input: stretched images as produced by `img2spec.prep.images.preprocess_cutout`
    (float32, N x H x W x 5). Output: dict of float32 arrays `flux` and `sigma` (N x P,
    normalised flux on the bundle's wave grid). Params `sigma_method` ('linearised' or
    'sampled'), `n_samples` and `seed` override the bundle's defaults.
    """

    def load_context(self, context) -> None:
        from .predictor import Predictor

        self.predictor = Predictor.from_path(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        if isinstance(model_input, dict):
            model_input = model_input.get("images", next(iter(model_input.values())))
        params = params or {}
        out = self.predictor.predict(
            np.asarray(model_input, np.float32),
            n_samples=params.get("n_samples"),
            sigma_method=params.get("sigma_method"),
            seed=params.get("seed"),
        )
        return {"flux": np.asarray(out.flux, np.float32), "sigma": np.asarray(out.sigma, np.float32)}


def signature(input_shape: tuple[int, int, int], n_pix: int, n_samples: int, seed: int,
              sigma_method: str = "linearised"):
    """Tensor signature: images (-1, H, W, C) float32 -> flux, sigma (-1, P) float32."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(f32, (-1, *input_shape))]),
        outputs=Schema([TensorSpec(f32, (-1, n_pix), "flux"), TensorSpec(f32, (-1, n_pix), "sigma")]),
        params=ParamSchema([ParamSpec("sigma_method", "string", str(sigma_method)),
                            ParamSpec("n_samples", "long", int(n_samples)), ParamSpec("seed", "long", int(seed))]),
    )
