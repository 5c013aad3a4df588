"""A tiny synthetic `data/processed/` directory (tests and benchmarks, no prepare stage).

Two hidden parameters per galaxy (a colour-like slope and an emission-line strength)
drive both the spectrum and the 5-band image, so a CNN can learn the mapping; noise,
masked pixels and a noiseless `truth_flux` follow the ProcessedData contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SYN_WAVE = (3800.0, 9200.0)
LINE_REST = 6563.0


def write_synthetic_processed(root: str | Path, n: int = 120, n_pix: int = 96, size: int = 16,
                              seed: int = 0, mask_fraction: float = 0.05) -> Path:
    """Write a ProcessedData directory with `n` objects into `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wave = np.geomspace(*SYN_WAVE, n_pix)
    a = rng.uniform(-1, 1, n)
    b = rng.uniform(0, 1, n)
    z = rng.uniform(0.05, 0.1, n)
    x = (wave - wave.mean()) / np.ptp(wave)
    line = np.exp(-0.5 * ((wave[None, :] - LINE_REST * (1 + z[:, None])) / 30.0) ** 2)
    truth = (1.0 + 0.8 * a[:, None] * x[None, :] + 2.0 * b[:, None] * line).astype(np.float32)
    sigma = rng.uniform(0.03, 0.08, (n, 1)) * np.ones((1, n_pix))
    flux = (truth + sigma * rng.standard_normal((n, n_pix))).astype(np.float32)
    ivar = (1.0 / sigma**2).astype(np.float32)
    ivar[rng.random((n, n_pix)) < mask_fraction] = 0.0
    flux[ivar == 0] = np.where(rng.random((ivar == 0).sum()) < 0.5, np.nan, 1e6)  # garbage under masks
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r2 = (xx**2 + yy**2)[None, :, :, None]
    width = (1.5 + b)[:, None, None, None] * size / 16
    colour = np.linspace(-1, 1, 5)[None, None, None, :] * a[:, None, None, None]
    images = (np.exp(-0.5 * r2 / width**2) * (1 + 0.5 * colour)
              + 0.02 * rng.standard_normal((n, size, size, 5))).astype(np.float32)
    split = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    split[order[: n // 5]] = "val"
    split[order[n // 5: 2 * n // 5]] = "test"
    mags = 17.0 - 0.3 * a[:, None] * np.linspace(-1, 1, 5)[None, :] + rng.normal(0, 0.02, (n, 5))
    cat = pd.DataFrame({"objid": np.arange(n, dtype=np.int64) + 1000, "split": split, "z": z,
                        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 10, n),
                        "norm": rng.uniform(1, 10, n)})
    for i, band in enumerate("grizy"):
        cat[f"mag_{band}"] = mags[:, i]
        cat[f"magerr_{band}"] = 0.01
    cat["specfile"] = [f"spec-{i}.fits" for i in range(n)]
    cat["imagefile"] = [f"{o}.fits" for o in cat["objid"]]
    cat["galaxy_type"] = np.where(a > 0.3, "red", np.where(a < -0.3, "blue", "green"))
    for name, arr in (("wave", wave), ("flux", flux), ("ivar", ivar), ("images", images), ("truth_flux", truth)):
        np.save(root / f"{name}.npy", arr)
    cat.to_parquet(root / "catalog.parquet", index=False)
    (root / "meta.json").write_text(json.dumps({"frame": "observed", "n": n, "bands": list("grizy")}))
    (root / "image_scaling.json").write_text(json.dumps({"bands": list("grizy")}))
    return root
