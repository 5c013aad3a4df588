"""Figure of the measurement evaluation: predicted against reference Dn4000 and EW(Halpha),
and the BPT diagram of the reference spectra beside that of the CNN predictions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from ..measure import BPT_LABELS, kauffmann03, kewley01  # noqa: E402
from ..measure.classify import K01_X0, K03_X0  # noqa: E402

DPI = 100
SCATTER_METHODS = {"cnn": ("C0", "CNN"), "knn_colour": ("C1", "kNN colour")}
BPT_COLOURS = {0: "C2", 1: "C4", 2: "C3"}
BPT_RANGE = ((-1.6, 0.7), (-1.3, 1.4))


def _scatter(ax, tables: dict, reference: str, col: str, title: str) -> None:
    ref = tables[reference][col]
    for method, (colour, label) in SCATTER_METHODS.items():
        if method not in tables:
            continue
        v = tables[method][col]
        ok = np.isfinite(ref) & np.isfinite(v)
        ax.scatter(ref[ok], v[ok], s=4, alpha=0.5, color=colour, label=f"{label} (n={ok.sum()})")
    finite = ref[np.isfinite(ref)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"{title} ({reference})")
    ax.set_ylabel(f"{title} (predicted)")
    ax.legend(fontsize=7, loc="upper left")


def _bpt(ax, table: dict, title: str) -> None:
    x, y, cls = table["log_nii_halpha"], table["log_oiii_hbeta"], table["bpt_class"]
    for c, colour in BPT_COLOURS.items():
        m = cls == c
        ax.scatter(x[m], y[m], s=4, alpha=0.6, color=colour, label=f"{BPT_LABELS[c]} ({m.sum()})")
    xs = np.linspace(BPT_RANGE[0][0], K03_X0 - 0.01, 200)
    ax.plot(xs, kauffmann03(xs), "k--", lw=1, label="Kauffmann+03")
    xs = np.linspace(BPT_RANGE[0][0], K01_X0 - 0.01, 200)
    ax.plot(xs, kewley01(xs), "k-", lw=1, label="Kewley+01")
    ax.set_xlim(*BPT_RANGE[0])
    ax.set_ylim(*BPT_RANGE[1])
    ax.set_xlabel("log [NII] 6584 / Halpha")
    ax.set_ylabel("log [OIII] 5007 / Hbeta")
    ax.set_title(f"{title}: {int(np.sum(cls >= 0))} on the diagram", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")


def measurements_figure(path: Path, tables: dict[str, dict[str, np.ndarray]], reference: str) -> None:
    """2 x 2 panels: Dn4000 and EW(Halpha) predicted vs reference; BPT of reference and CNN."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    _scatter(axes[0, 0], tables, reference, "dn4000", "Dn4000")
    _scatter(axes[0, 1], tables, reference, "halpha_ew", "EW(Halpha) [A]")
    _bpt(axes[1, 0], tables[reference], reference)
    if "cnn" in tables:
        _bpt(axes[1, 1], tables["cnn"], "CNN prediction")
    else:
        axes[1, 1].set_axis_off()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
