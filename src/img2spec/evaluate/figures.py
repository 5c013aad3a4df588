"""Evaluation figures (PNG, matplotlib Agg): examples with their images, D_i distribution,
D_i against magnitude and redshift."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from .summary import METHOD_LABELS  # noqa: E402

DPI = 100
LOG_SPAN = 30.0
"""D_i ranging over more than this factor (max / min of positive values) is drawn on a log axis."""
RGB_CHANNELS = (3, 2, 0)  # z, r, g -> R, G, B (a gri-like composite from grizy)
RGB_PERCENTILES = (1.0, 99.5)


def label(method: str) -> str:
    """Human name of an evaluation method for legends (`knn_colour` -> 'kNN in PS1 colour space')."""
    return METHOD_LABELS.get(method, method.replace("_", " "))


def _spans_decades(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SPAN


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
    # constrained layout keeps every title inside the figure (tight_layout clipped the image titles)
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.8 * len(rows)), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for (ax_img, ax), row in zip(axes, rows):
        ax_img.imshow(rgb_image(row["image"]), origin="lower")
        ax_img.set_axis_off()
        ax.set_title(row["label"], fontsize=9, loc="left")  # the wide panel: never truncated
        obs = np.where(row["ivar"] > 0, row["obs"], np.nan)
        ax.plot(wave, obs, color="0.6", lw=0.6, label="observed")
        ax.plot(wave, row["knn"], color="tab:orange", lw=0.8, ls="--",
                label=f"{label('knn_colour')} (D={row['d_knn']:.2f})")
        ax.plot(wave, row["pred"], color="tab:blue", lw=0.9, label=f"CNN pipeline (D={row['d_cnn']:.2f})")
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
    _save(fig, path)


def histogram_figure(path: Path, deviations: dict[str, np.ndarray], bins: np.ndarray) -> None:
    """Distribution of D_i per method; log-spaced bins on a log axis when D_i spans decades."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    every = np.concatenate([np.asarray(d, float) for d in deviations.values()]) if deviations else np.zeros(0)
    log_axis = _spans_decades(every)
    if log_axis:
        positive = every[np.isfinite(every) & (every > 0)]
        bins = np.geomspace(positive.min(), positive.max(), len(bins))
        ax.set_xscale("log")
    for name, d in deviations.items():
        d = d[np.isfinite(d)]
        if d.size:
            ax.hist(d, bins=bins, histtype="step", label=f"{label(name)} (mean {d.mean():.2f})")
    ax.set_xlabel("D_i [SDSS spectral errors]" + (" (log scale)" if log_axis else ""))
    ax.set_ylabel("objects")
    ax.set_title("Deviation of each test spectrum, per method")
    ax.legend(fontsize=7)
    _save(fig, path)


def trend_figure(path: Path, x: dict[str, np.ndarray], deviations: dict[str, np.ndarray]) -> None:
    """D_i against each variable in `x` (e.g. r magnitude, redshift), one panel each."""
    fig, axes = plt.subplots(1, len(x), figsize=(5.5 * len(x), 4.2), squeeze=False, layout="constrained")
    every = np.concatenate([np.asarray(d, float) for d in deviations.values()]) if deviations else np.zeros(0)
    for ax, (xlabel, xv) in zip(axes[0], x.items()):
        for name, d in deviations.items():
            ok = np.isfinite(d) & np.isfinite(xv)
            ax.scatter(xv[ok], d[ok], s=3, alpha=0.4, label=label(name))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("D_i [SDSS spectral errors]")
        if _spans_decades(every):
            ax.set_yscale("log")
        ax.set_title(f"D_i against {xlabel}", fontsize=10)
        ax.legend(fontsize=7, markerscale=3)
    _save(fig, path)
