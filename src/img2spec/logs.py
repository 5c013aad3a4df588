"""One logging configuration for the library, the stages and the CLI."""

from __future__ import annotations

import logging
import os
import re
import warnings

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

MASK = "***"
# user:password@ in any scheme://... URL (SQLAlchemy, http, s3, ...); the user name is kept.
# The password runs to the last "@" before the host's "/" (an unescaped "@" in it is masked too).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<secret>[^\s'\"/?#]*)@")
# secrets passed as URL query or DSN parameters (?password=..., &token=..., password=... in a libpq DSN).
_KEY_SECRET = re.compile(
    r"(?P<head>(?:^|[?&;\s,(])(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"secret[_-]?key|sig|signature)=)(?P<secret>[^&;\s'\",)]*)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """`text` with every credential inside URLs masked: `postgresql://u:***@host/db`.

    The one redaction used for MLflow params and tags, tuning's storage tag and every
    log line (see `setup_logging`). Text without credentials is returned unchanged.
    """
    if not isinstance(text, str) or ("://" not in text and "=" not in text):
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@" if m["secret"] else m[0], text)
    return _KEY_SECRET.sub(lambda m: f"{m['head']}{MASK}" if m["secret"] else m[0], text)


def _redacting_factory(base):
    """A LogRecord factory masking credentials in the message and traceback of every record,
    whichever handler (ours, MLflow's, pytest's) later writes it."""

    def make(*args, **kwargs):
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is reported by logging itself
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(text)
        return record

    make._img2spec_redacting = True  # type: ignore[attr-defined]
    return make


def install_redaction() -> None:
    """Mask credentials in every log record of this process (idempotent)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "_img2spec_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(current))


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up noise; must run before `import tensorflow`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", module="keras.src.trainers")


NVIDIA_DEVICES = "/dev/nvidia[0-9]*"
"""Device nodes of NVIDIA GPUs on Linux: none means TensorFlow's CUDA probe can only fail."""


def import_tensorflow():
    """`import tensorflow` without its CUDA start-up messages on a machine with no GPU.

    TensorFlow's CUDA plugin writes "Could not find cuda drivers" and "failed call to
    cuInit" straight to file descriptor 2 (before its own log level applies) on every
    CPU-only machine. With no NVIDIA device present, the import and the device probe run
    with fd 2 pointed at /dev/null; with a GPU, or IMG2SPEC_TF_VERBOSE=1, nothing is hidden.
    """
    import glob
    import sys

    quiet_tensorflow()
    if glob.glob(NVIDIA_DEVICES) or os.environ.get("IMG2SPEC_TF_VERBOSE") == "1" or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) runs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


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
    install_redaction()
    quiet_tensorflow()
    return logging.getLogger("img2spec")


def progress(iterable=None, **kwargs):
    """A tqdm progress bar with the project's defaults (off when not a TTY and in CI)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("disable", os.environ.get("IMG2SPEC_NO_PROGRESS") == "1")
    return tqdm(iterable, **kwargs)
