"""VAE latents of every object (`data/latents/`): mu.npy, logvar.npy (N, L), latents.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path, write_json


@dataclass
class Latents:
    mu: np.ndarray
    logvar: np.ndarray


def as_latents(obj: Any) -> Latents:
    """Accept `Latents`, a (mu, logvar) pair, a dict with mu/logvar, or a directory path."""
    if isinstance(obj, Latents):
        lat = obj
    elif isinstance(obj, (str, Path)):
        lat = load_latents(obj)
    elif isinstance(obj, dict):
        lat = Latents(obj["mu"], obj["logvar"])
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        lat = Latents(*obj)
    else:
        raise TypeError(f"latents: expected Latents, (mu, logvar), dict or a directory, got {type(obj).__name__}")
    mu = np.asarray(lat.mu, np.float32)
    logvar = np.asarray(lat.logvar, np.float32)
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise ValueError(f"latents: mu {mu.shape} and logvar {logvar.shape} must both be (N, L)")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
        raise ValueError("latents: non-finite values in mu or logvar")
    return Latents(mu, logvar)


def load_latents(directory: str | Path) -> Latents:
    directory = Path(directory)
    for name in ("mu.npy", "logvar.npy"):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory / name}: missing; run the encode stage first")
    return Latents(np.load(directory / "mu.npy"), np.load(directory / "logvar.npy"))


def save_latents(latents: Latents, directory: str | Path, meta: dict | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in (("mu", latents.mu), ("logvar", latents.logvar)):
        with atomic_path(directory / f"{name}.npy", suffix=".npy") as tmp:
            np.save(tmp, np.asarray(arr, np.float32))
    write_json(directory / "latents.json", {"n": int(len(latents.mu)), "latent_dim": int(latents.mu.shape[1]),
                                            "order": "catalogue row order of data/processed", **(meta or {})})
