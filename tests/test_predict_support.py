"""Builders shared by the predict/publish tests: a tiny project that follows the artefact contracts.

A project root with data/processed (the one synthetic data set, written by the real
writer, with these cutouts stretched by the real prep functions as its images), raw 5-band cutouts,
tiny Keras models in models/vae/decoder.keras and models/cnn/cnn.keras (the
contract shapes: (H, W, 5) -> 2L, L -> P) and metrics/evaluate.json. No tests here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from img2spec import BANDS
from img2spec.io.ps1_cutout import Cutout, magzp_for_exptime, write_cutout
from img2spec.prep.synthetic import write_synthetic_processed

SIZE = 16
N_PIX = 40
LATENT = 3
N_OBJ = 12
EXPTIME = 100.0


def galaxy_cutout(objid: int, rng: np.random.Generator, size: int = SIZE, *, shift: float = 0.0) -> Cutout:
    """A centred Gaussian galaxy on a noisy sky, linear counts, band-dependent brightness."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r2 = (yy - c - shift) ** 2 + (xx - c - shift) ** 2
    data = {}
    for k, band in enumerate(BANDS):
        amp = rng.uniform(300, 900) * (1 + 0.2 * k)
        width = rng.uniform(1.5, 2.5)
        img = amp * np.exp(-0.5 * r2 / width**2) + rng.normal(0, 5.0, (size, size))
        data[band] = img.astype(np.float32)
    zp = magzp_for_exptime(EXPTIME)
    return Cutout(
        objid=objid, ra=150.0 + 0.01 * objid, dec=2.0 + 0.01 * objid, data=data,
        magzp={b: zp for b in BANDS}, exptime={b: EXPTIME for b in BANDS},
    )


def build_models(root: Path, seed: int = 0) -> None:
    """Tiny CNN and decoder with the contract's shapes, saved as .keras."""
    import keras

    keras.utils.set_random_seed(seed)
    cnn = keras.Sequential([
        keras.Input((SIZE, SIZE, len(BANDS))),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2 * LATENT),
    ])
    decoder = keras.Sequential([
        keras.Input((LATENT,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(N_PIX),
    ])
    (root / "models" / "vae").mkdir(parents=True, exist_ok=True)
    (root / "models" / "cnn").mkdir(parents=True, exist_ok=True)
    decoder.save(root / "models" / "vae" / "decoder.keras")
    cnn.save(root / "models" / "cnn" / "cnn.keras")
    (root / "models" / "vae" / "vae.json").write_text(json.dumps({"latent_dim": LATENT, "n_pix": N_PIX}))
    (root / "models" / "cnn" / "cnn.json").write_text(json.dumps({"latent_dim": LATENT}))


def build_project(root: Path, n: int = N_OBJ, seed: int = 0) -> dict:
    """Write raw cutouts, data/processed, models and metrics under `root`; returns handy facts."""
    from img2spec.prep.images import make_scaling, preprocess_cutout, sky_sigma, to_nanomaggies

    rng = np.random.default_rng(seed)
    raw = root / "data" / "raw" / "images"
    cutouts = [galaxy_cutout(1000 + i, rng) for i in range(n)]
    files = [write_cutout(raw / f"{c.objid}.fits", c) for c in cutouts]
    sky = np.stack([sky_sigma(to_nanomaggies(c.stack(), [c.magzp[b] for b in BANDS])) for c in cutouts])
    scaling = make_scaling(BANDS, np.nanmedian(sky, axis=0), np.zeros(5), np.full(5, 2.0), n)
    images = np.stack([preprocess_cutout(c, scaling) for c in cutouts]).astype(np.float32)

    proc = write_synthetic_processed(root / "data" / "processed", n=n, n_pix=N_PIX, size=SIZE, seed=seed,
                                     images=images, image_scaling=scaling)
    wave = np.load(proc / "wave.npy")

    build_models(root, seed)
    (root / "metrics").mkdir(exist_ok=True)
    summary = {"mean": 1.5, "sem": 0.1, "median": 1.4, "p16": 1.0, "p84": 2.0, "n": 2}
    (root / "metrics" / "evaluate.json").write_text(json.dumps({
        "mean_deviation": {"cnn": summary, "knn_colour": {**summary, "mean": 2.5}},
    }))
    return {"files": files, "cutouts": cutouts, "images": images, "scaling": scaling, "wave": wave}
