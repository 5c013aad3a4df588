"""One logging configuration for the library, the stages and the CLI."""

from __future__ import annotations

import logging
import os
import warnings

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up noise; must run before `import tensorflow`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", module="keras.src.trainers")


def setup_logging(level: str | int | None = None) -> logging.Logger:
    """Configure root logging once (level from IMG2SPEC_LOG_LEVEL, default INFO)."""
    level = level or os.environ.get("IMG2SPEC_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not getattr(root, "_img2spec_configured", False):
        logging.basicConfig(level=level, format=_FORMAT, datefmt="%H:%M:%S")
        root._img2spec_configured = True  # type: ignore[attr-defined]
        for noisy in ("urllib3", "matplotlib", "alembic", "h5py", "absl", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    else:
        root.setLevel(level)
    quiet_tensorflow()
    return logging.getLogger("img2spec")


def progress(iterable=None, **kwargs):
    """A tqdm progress bar with the project's defaults (off when not a TTY and in CI)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("disable", os.environ.get("IMG2SPEC_NO_PROGRESS") == "1")
    return tqdm(iterable, **kwargs)
