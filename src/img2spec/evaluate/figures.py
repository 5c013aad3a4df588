"""Evaluation figures (PNG, matplotlib Agg): examples with their images, D_i distribution,
D_i against magnitude and redshift."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402

DPI = 100
RGB_CHANNELS = (3, 2, 0)  # z, r, g -> R, G, B (a gri-like composite from grizy)
RGB_PERCENTILES = (1.0, 99.5)


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)


def rgb_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 5) stretched cutout -> (H, W, 3) in [0, 1] for display."""
    rgb = np.asarray(image, float)[..., list(RGB_CHANNELS)]
    lo, hi = np.nanpercentile(rgb, RGB_PERCENTILES)
    return np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1)


def examples_figure(path: Path, wave: np.ndarray, rows: list[dict]) -> None:
    """One row per example: the image, then observed vs predicted spectrum (+-1 sigma) with kNN.

    Each row dict: label, image, obs, ivar, pred, sigma, knn, d_cnn, d_knn."""
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.6 * len(rows)),
                             gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for (ax_img, ax), row in zip(axes, rows):
        ax_img.imshow(rgb_image(row["image"]), origin="lower")
        ax_img.set_axis_off()
        ax_img.set_title(row["label"], fontsize=8)
        obs = np.where(row["ivar"] > 0, row["obs"], np.nan)
        ax.plot(wave, obs, color="0.6", lw=0.6, label="observed")
        ax.plot(wave, row["knn"], color="tab:orange", lw=0.8, ls="--", label=f"kNN colour (D={row['d_knn']:.2f})")
        ax.plot(wave, row["pred"], color="tab:blue", lw=0.9, label=f"CNN (D={row['d_cnn']:.2f})")
        if np.isfinite(row["sigma"]).any():
            ax.fill_between(wave, row["pred"] - row["sigma"], row["pred"] + row["sigma"], color="tab:blue", alpha=0.25,
                            lw=0)
        finite = obs[np.isfinite(obs)]
        if finite.size:
            lo, hi = np.percentile(finite, [0.5, 99.5])
            pad = 0.15 * (hi - lo + 1e-6)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel("normalised flux")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1][1].set_xlabel("wavelength [A]")
    fig.tight_layout()
    _save(fig, path)


def histogram_figure(path: Path, deviations: dict[str, np.ndarray], bins: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, d in deviations.items():
        d = d[np.isfinite(d)]
        if d.size:
            ax.hist(d, bins=bins, histtype="step", label=f"{name} (mean {d.mean():.2f})")
    ax.set_xlabel("D_i [SDSS spectral errors]")
    ax.set_ylabel("objects")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def trend_figure(path: Path, x: dict[str, np.ndarray], deviations: dict[str, np.ndarray]) -> None:
    """D_i against each variable in `x` (e.g. r magnitude, redshift), one panel each."""
    fig, axes = plt.subplots(1, len(x), figsize=(5 * len(x), 3.8), squeeze=False)
    for ax, (label, xv) in zip(axes[0], x.items()):
        for name, d in deviations.items():
            ok = np.isfinite(d) & np.isfinite(xv)
            ax.scatter(xv[ok], d[ok], s=3, alpha=0.4, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("D_i")
        ax.set_yscale("log")
        ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    _save(fig, path)
