"""A tiny rest-frame project for the predict and survey tests: the predict test project
(`test_predict_support.build_project`) on a 150 km/s grid, with a rest-frame decoder
(`models.vae.build_rest_decoder`) and a CNN with a redshift head.

The decoder's rest-frame spectrum is a flat continuum plus one Gaussian Halpha line of known
flux (small latent-dependent terms on top, so sigma is not zero); the CNN predicts the same
redshift for every image. A test then knows where the line must be in the observed frame at
any redshift, and what the rest-frame line flux must measure. No tests here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from img2spec import BANDS
from img2spec.io.shards import CutoutShard, write_cutout_shard
from img2spec.prep.synthetic import write_synthetic_processed
from test_predict_support import LATENT, SIZE, build_project

REST_N_PIX = 1767
"""The default 150 km/s grid over 3,800-9,200 A: line windows of 20 A span ~6 pixels."""
HALPHA_VAC = 6564.61
"""Rest-frame vacuum Halpha (A), the centre of the default (Yan et al.) Halpha window."""
LINE_FLUX = 30.0
"""Halpha flux of the decoded rest spectrum (normalised flux x A)."""
LINE_SIGMA_A = 3.0
Z_PRED = 0.08
"""The redshift the CNN predicts for every image."""
Z_ERR = 0.002
"""Its 1-sigma (the observed-frame flux of a photo-z object is smoothed by it)."""
Z_RANGE = (0.0, 0.3)
LATENT_WEIGHT = 1e-3
"""Size of the latents' effect on the rest spectrum (keeps the predicted sigma above zero)."""
SHIFTED_HALPHA = {"line": [6590.0, 6610.0], "blue": [6483.0, 6513.0], "red": [6623.0, 6653.0]}
"""A non-default `measure.lines.halpha` window beside the line: it measures ~0 instead of LINE_FLUX."""


def shifted_measure() -> dict:
    """The `measure` params section with the Halpha window moved to SHIFTED_HALPHA (all else default)."""
    from img2spec.config.measure import MeasureParams

    section = MeasureParams().model_dump(mode="json")
    section["lines"]["halpha"] = {**section["lines"]["halpha"], **SHIFTED_HALPHA}
    return section


def rest_spectrum(rest_wave: np.ndarray) -> np.ndarray:
    """The decoder's rest-frame spectrum (before the latents' small terms)."""
    amp = LINE_FLUX / (np.sqrt(2 * np.pi) * LINE_SIGMA_A)
    return 1.0 + amp * np.exp(-0.5 * ((rest_wave - HALPHA_VAC) / LINE_SIGMA_A) ** 2)


def build_rest_models(root: Path, obs_wave: np.ndarray, seed: int = 0) -> None:
    """A CNN with a redshift head (constant Z_PRED +- Z_ERR) and a rest-frame decoder, saved as .keras."""
    import keras

    from img2spec.models.cnn import REDSHIFT_LAYER
    from img2spec.models.vae import build_rest_decoder, rest_grid

    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, len(BANDS)))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(images))
    latents = keras.layers.Dense(2 * LATENT)(x)
    z_head = keras.layers.Dense(2, name=REDSHIFT_LAYER, kernel_initializer="zeros",
                                bias_initializer=keras.initializers.Constant([Z_PRED, 2 * np.log(Z_ERR)]))(x)
    cnn = keras.Model(images, keras.layers.Concatenate()([latents, z_head]))

    decoder = build_rest_decoder(obs_wave, LATENT, (8,), *Z_RANGE)
    start, step, n_rest = rest_grid(obs_wave, *Z_RANGE)
    rest_wave = np.exp(start + step * np.arange(n_rest))
    layer = decoder.get_layer("rest_flux")
    kernel = LATENT_WEIGHT * np.random.default_rng(seed).standard_normal(layer.kernel.shape)
    layer.set_weights([kernel.astype(np.float32), rest_spectrum(rest_wave).astype(np.float32)])

    for sub in ("vae", "cnn"):
        (root / "models" / sub).mkdir(parents=True, exist_ok=True)
    decoder.save(root / "models" / "vae" / "decoder.keras")
    cnn.save(root / "models" / "cnn" / "cnn.keras")
    (root / "models" / "vae" / "vae.json").write_text(json.dumps({"latent_dim": LATENT, "n_pix": len(obs_wave),
                                                                  "frame": "rest"}))
    (root / "models" / "cnn" / "cnn.json").write_text(json.dumps({"latent_dim": LATENT}))


def build_rest_project(root: Path, seed: int = 0) -> dict:
    """`build_project` with data/processed on the REST_N_PIX grid and the rest-frame models."""
    facts = build_project(root, seed=seed)
    processed = root / "data" / "processed"
    shutil.rmtree(processed)
    write_synthetic_processed(processed, n=len(facts["cutouts"]), n_pix=REST_N_PIX, size=SIZE, seed=seed,
                              images=facts["images"], image_scaling=facts["scaling"])
    facts["wave"] = np.load(processed / "wave.npy")
    build_rest_models(root, facts["wave"], seed)
    return facts


def write_shard(path: Path, cutouts: list, z: np.ndarray | None) -> Path:
    """The cutouts as one cutout shard (the packer's layout), with the given redshifts (NaN: unknown)."""
    write_cutout_shard(path, CutoutShard(
        object_id=np.array([str(c.objid) for c in cutouts], dtype=object),
        ra=np.array([c.ra for c in cutouts]), dec=np.array([c.dec for c in cutouts]),
        image_flux=np.stack([np.moveaxis(c.stack(BANDS), -1, 0) for c in cutouts]).astype(np.float32),
        magzp=np.array([[c.magzp[b] for b in BANDS] for c in cutouts]), bands=tuple(BANDS),
        pixel_scale=np.array([c.pixel_scale for c in cutouts]), z=z,
    ))
    return path


def line_peak(wave: np.ndarray, flux: np.ndarray) -> float:
    """Wavelength of the highest pixel of `flux` (the line sits on a flat continuum)."""
    return float(wave[int(np.argmax(flux))])
