"""`--plot`: the grizy composite beside the predicted spectrum, its 1-sigma band and the main lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config.constants import LINE_REST_VACUUM_A as LINES, OII_DOUBLET_A
from ..io.atomic import atomic_path

# Vacuum rest wavelengths (A), as on SDSS spectra; doublets/triplets at their mean.
MAIN_LINES: dict[str, float] = {
    "[OII]3727": OII_DOUBLET_A,
    "Hβ": LINES["hbeta"],
    "[OIII]5007": LINES["oiii_5007"],
    "Mg b": LINES["mgb_5177"],
    "Na D": LINES["nad_5894"],
    "Hα": LINES["halpha"],
}
RGB_BANDS = ((2, 3, 4), (1,), (0,))
"""Composite channels from (g, r, i, z, y): red = i+z+y, green = r, blue = g."""
RGB_CLIP_PERCENTILES = (1.0, 99.5)
FIGSIZE = (10.0, 3.4)


def composite(image: np.ndarray) -> np.ndarray:
    """(H, W, 5) stretched grizy image -> (H, W, 3) RGB in [0, 1] with one common clip (keeps colours)."""
    image = np.asarray(image, np.float64)
    rgb = np.stack([image[..., list(idx)].mean(axis=-1) for idx in RGB_BANDS], axis=-1)
    lo, hi = np.nanpercentile(rgb, RGB_CLIP_PERCENTILES)
    if not np.isfinite(hi - lo) or hi <= lo:
        return np.zeros_like(rgb)
    return np.clip((rgb - lo) / (hi - lo), 0.0, 1.0)


def line_positions(z: float | None, frame: str, wave: np.ndarray) -> dict[str, float]:
    """Where to mark the lines: rest frame -> rest wavelengths; observed -> (1+z) if z known, else none."""
    if frame == "rest":
        shift = 1.0
    elif z is not None and np.isfinite(z):
        shift = 1.0 + float(z)
    else:
        return {}
    lo, hi = float(np.min(wave)), float(np.max(wave))
    return {name: lam * shift for name, lam in MAIN_LINES.items() if lo <= lam * shift <= hi}


def plot_prediction(
    path: str | Path, image: np.ndarray, wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray, *,
    title: str, z: float | None, frame: str, flux_label: str, dpi: int, z_err: float | None = None,
    photoz: bool = False,
) -> Path:
    """Write one PNG atomically. `photoz`: `z` (+- `z_err`) is the CNN's predicted redshift,
    used to place the line markers because the user gave none."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_img, ax_spec) = plt.subplots(
        1, 2, figsize=FIGSIZE, gridspec_kw={"width_ratios": [1, 3.2]}, constrained_layout=True
    )
    try:
        ax_img.imshow(composite(image), origin="lower", interpolation="nearest")
        ax_img.set_axis_off()
        ax_img.set_title("PS1 grizy", fontsize=9)
        ax_spec.fill_between(wave, flux - sigma, flux + sigma, color="tab:blue", alpha=0.3, lw=0,
                             label="±1σ")
        ax_spec.plot(wave, flux, color="tab:blue", lw=0.8, label="predicted")
        ymin, ymax = ax_spec.get_ylim()
        for name, lam in line_positions(z, frame, wave).items():
            ax_spec.axvline(lam, color="0.4", lw=0.6, ls=":")
            ax_spec.text(lam, ymax, name, rotation=90, fontsize=7, va="top", ha="right", color="0.3")
        ax_spec.set_xlim(float(np.min(wave)), float(np.max(wave)))
        ax_spec.set_xlabel(f"{'rest' if frame == 'rest' else 'observed'} wavelength [Å]")
        ax_spec.set_ylabel(flux_label)
        ztxt = f"z = {z:.4f}" if z is not None and np.isfinite(z) else "z unknown"
        if photoz and z is not None and np.isfinite(z):
            ztxt = f"photo-z = {z:.3f}" + (f" ± {z_err:.3f}" if z_err is not None and np.isfinite(z_err) else "")
        ax_spec.set_title(f"{title}  ({ztxt})", fontsize=9)
        ax_spec.legend(loc="upper right", fontsize=7, frameon=False)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)
