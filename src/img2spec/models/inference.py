"""Images -> spectra: the one prediction path shared by `evaluate` and `img2spec predict`.

`predict_spectra` runs the CNN in batches (`training=False`), decodes the predicted latent
mean into the point prediction `flux`, and propagates the predicted latent variance by
sampling `n_samples` latents per object through the decoder (`sigma` = per-pixel std).
The latent noise is drawn per object in catalogue order from one seeded generator, so the
result does not depend on `batch_size`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..logs import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402

from . import layers as _layers  # noqa: E402,F401  (registers custom layers for loading)
from .cnn import split_output  # noqa: E402
from .losses import LOGVAR_CLIP  # noqa: E402


@dataclass
class PredictedSpectra:
    flux: np.ndarray
    """(N, P) decoder(latent mean): normalised flux on the processed wave grid."""
    sigma: np.ndarray
    """(N, P) per-pixel std of decoder spectra over latent samples (NaN if n_samples < 2)."""
    latent_mu: np.ndarray
    latent_logvar: np.ndarray


class LoadedModels(NamedTuple):
    cnn: Any
    decoder: Any
    vae_meta: dict
    cnn_meta: dict


def _to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_models(vae_dir: str | Path, cnn_dir: str | Path) -> LoadedModels:
    """Load `cnn.keras` from `cnn_dir` and `decoder.keras` from `vae_dir` (+ their json)."""
    vae_dir, cnn_dir = Path(vae_dir), Path(cnn_dir)
    for path in (cnn_dir / "cnn.keras", vae_dir / "decoder.keras"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the training stages (or pull the model)")
    cnn = keras.saving.load_model(cnn_dir / "cnn.keras", compile=False)
    decoder = keras.saving.load_model(vae_dir / "decoder.keras", compile=False)
    return LoadedModels(cnn, decoder, _read_json(vae_dir / "vae.json"), _read_json(cnn_dir / "cnn.json"))


def load_encoder(vae_dir: str | Path):
    path = Path(vae_dir) / "encoder.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the train_vae stage")
    return keras.saving.load_model(path, compile=False)


def predict_latents(cnn, images: np.ndarray, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """CNN in batches -> (latent mean, latent logvar), each (N, L)."""
    outs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        outs.append(_to_numpy(cnn(batch, training=False)))
    if not outs:
        n_out = int(cnn.output_shape[-1])
        return np.zeros((0, n_out // 2), np.float32), np.zeros((0, n_out // 2), np.float32)
    return split_output(np.concatenate(outs))


def decode(decoder, latents: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Decoder in batches: (N, L) latents -> (N, P) normalised flux."""
    outs = [_to_numpy(decoder(np.asarray(latents[s:s + batch_size], np.float32), training=False))
            for s in range(0, len(latents), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, int(decoder.output_shape[-1])), np.float32)


def predict_spectra(cnn, decoder, images: np.ndarray, *, n_samples: int = 32, batch_size: int = 256,
                    seed: int = 0) -> PredictedSpectra:
    """Stretched images (N, H, W, C) -> `PredictedSpectra` (see module doc)."""
    if not (hasattr(images, "shape") and hasattr(images, "__getitem__")):
        images = np.asarray(images)  # sliceable arrays (memmaps, row views) stay lazy
    if len(images.shape) != 4:
        raise ValueError(f"images: expected (N, H, W, C), got shape {images.shape}")
    if n_samples < 0 or batch_size < 1:
        raise ValueError(f"n_samples must be >= 0 and batch_size >= 1 (got {n_samples}, {batch_size})")
    rng = np.random.default_rng(seed)
    mu, logvar = predict_latents(cnn, images, batch_size=batch_size)
    n, L = mu.shape
    n_pix = int(decoder.output_shape[-1])
    flux = np.empty((n, n_pix), np.float32)
    sigma = np.full((n, n_pix), np.nan, np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        flux[sl] = decode(decoder, mu[sl], batch_size=batch_size)
        if n_samples >= 2:
            b = sl.stop - sl.start
            eps = rng.standard_normal((b, n_samples, L)).astype(np.float32)
            std = np.exp(0.5 * np.clip(logvar[sl, None, :], -LOGVAR_CLIP, LOGVAR_CLIP))
            z = mu[sl, None, :] + std * eps
            draws = decode(decoder, z.reshape(b * n_samples, L), batch_size=max(batch_size, 1024))
            sigma[sl] = draws.reshape(b, n_samples, n_pix).std(axis=1, ddof=1)
    return PredictedSpectra(flux, sigma, mu, logvar)


def encode_spectra(encoder, flux: np.ndarray, ivar: np.ndarray, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Encoder in batches: cleaned (flux, ivar) -> (mu, logvar)."""
    from .data import clean_flux

    mus, lvs = [], []
    for s in range(0, len(flux), batch_size):
        f, iv = clean_flux(flux[s:s + batch_size], ivar[s:s + batch_size])
        m, lv = encoder([f, iv], training=False)
        mus.append(_to_numpy(m))
        lvs.append(_to_numpy(lv))
    return np.concatenate(mus), np.concatenate(lvs)
