"""What the CNN study trains against: the pipeline's current VAE decoder and latents.

The CNN objective (val mean D_i through the decoder) only compares trials made with
the same decoder, so each trial records the decoder's SHA-1 and a worker warns when
the study already holds trials made with another one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import Paths

log = logging.getLogger(__name__)

HINT = "run `dvc repro encode` first (the CNN study tunes against the pipeline's current VAE)"


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_cnn_inputs(paths: Paths) -> tuple[Any, Any, str]:
    """(latents, decoder, decoder SHA-1) from models/vae/ and data/latents/."""
    decoder_file = paths.vae_dir / "decoder.keras"
    needed = [decoder_file, paths.latents / "mu.npy", paths.latents / "logvar.npy"]
    for path in needed:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; {HINT}")
    import keras

    from ..models import layers as _layers  # noqa: F401  (registers the custom layers)

    decoder = keras.models.load_model(decoder_file, compile=False)
    latents = (np.load(paths.latents / "mu.npy"), np.load(paths.latents / "logvar.npy"))
    return latents, decoder, file_sha1(decoder_file)


def warn_if_other_decoder(study, fingerprint: str) -> int:
    """Count (and warn about) finished trials of `study` made with another decoder."""
    others = [t.number for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("decoder_sha1") not in (None, fingerprint)]
    if others:
        log.warning("tune cnn: %d trial(s) of study %s used another VAE decoder (e.g. trial %d); their D_i "
                    "are not comparable: use a new tune.cnn.study_name after retraining the VAE",
                    len(others), study.study_name, others[0])
    return len(others)
