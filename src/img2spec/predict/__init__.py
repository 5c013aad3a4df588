"""img2spec.predict: the inference bundle, its MLflow registration, and batch inference.

- `Predictor.from_path(dir) / .from_dvc(rev, repo=...) / .from_mlflow("models:/img2spec@champion")`
  then `.predict(stretched_images)` or `.predict_counts(raw_stack, magzp)`.
- `run_predict(predictor, inputs, RunOptions(out_dir=...))`: files/directories/ra-dec tables
  -> one SDSS-layout FITS per object (+ PNG, + table), bad inputs reported and skipped.
- `publish(params, paths)`: the DVC stage (build models/img2spec/, register in MLflow).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor", "InputError", "BundleError", "RunOptions", "run_predict", "publish", "build_bundle"]


def __getattr__(name: str) -> Any:
    # Lazy: `import img2spec.predict` must not import TensorFlow or MLflow.
    if name in ("Predictor", "InputError"):
        from . import predictor

        return getattr(predictor, name)
    if name in ("BundleError", "build_bundle"):
        from . import bundle

        return getattr(bundle, name)
    if name in ("RunOptions", "run_predict"):
        from . import runner

        return getattr(runner, name)
    if name == "publish":
        from .publish import publish

        return publish
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
