"""A figure of a few mock galaxies: i/r/g asinh composite beside the fibre spectrum."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ...config import Params
from ...config.constants import LINE_REST_VACUUM_A as LINES, OII_DOUBLET_A
from ...io.ps1_cutout import read_cutout
from ...io.sdss_spectrum import read_spectrum
from ...measure.stats import NMAD_SCALE
from ...paths import Paths
from . import stages, truth
from .population import GALAXY_TYPES

DN4000_MARK_A = 4000.0
"""Where the figure marks the 4000 A break (rest frame)."""

FIGURE_POOL = 18
"""Galaxies generated to pick one of each type from."""
ASINH_SOFTENING_SKY = 3.0
"""asinh softening in units of the per-band sky sigma."""
FIGURE_DPI = 80


def rgb_composite(cut, softening: float = ASINH_SOFTENING_SKY) -> np.ndarray:
    """i, r, g -> R, G, B with a shared asinh stretch (Lupton-like), in [0, 1]."""
    chans = []
    for band in ("i", "r", "g"):
        img = cut.to_maggies(band) * 1e9  # nanomaggies: one flux scale for all bands
        sky = NMAD_SCALE * np.median(np.abs(img - np.median(img)))
        chans.append((img, max(sky, 1e-6)))
    soft = softening * np.mean([s for _, s in chans])
    stack = np.stack([np.arcsinh(c / soft) for c, _ in chans], axis=-1)
    return np.clip(stack / max(np.percentile(stack, 99.7), 1e-6), 0, 1)


def make_figure(params: Params, out: Path, n_show: int = 3) -> Path:
    """Generate a small survey in a temporary root and plot one galaxy per type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mock = params.mock.model_copy(update={"n_galaxies": FIGURE_POOL, "n_workers": 1})
    params = params.model_copy(update={"mock": mock})
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(Path(tmp))
        for stage in ("select", "fetch_spectra", "fetch_images"):
            getattr(stages, stage)(params, paths)
        tp = truth.read_params(paths.truth_dir)
        true = truth.open_spectra(paths.truth_dir)
        picks = [tp[tp["galaxy_type"] == t]["total_mag_g"].idxmin() for t in GALAXY_TYPES if (tp["galaxy_type"] == t).any()]
        picks = picks[:n_show]
        fig, axes = plt.subplots(len(picks), 2, figsize=(10, 2.6 * len(picks)),
                                 gridspec_kw={"width_ratios": [1, 3.2]}, squeeze=False)
        for row, i in enumerate(picks):
            g = tp.loc[i]
            cut = read_cutout(paths.image_file(int(g["objid"])))
            spec = read_spectrum(paths.spectrum_file(g["plate"], g["mjd"], g["fiberid"]))
            ax = axes[row, 0]
            ax.imshow(rgb_composite(cut), origin="lower")
            r_pix = params.mock.fibre.radius_arcsec / cut.pixel_scale
            c = (cut.data["r"].shape[0] - 1) / 2
            ax.add_patch(plt.Circle((c, c), r_pix, fill=False, color="w", lw=0.8, ls="--"))
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{g['galaxy_type']}  z={g['z']:.3f}  g={g['total_mag_g']:.1f}  B/T={g['bulge_to_total']:.2f}",
                         fontsize=8)
            ax = axes[row, 1]
            good = spec.good
            wave = spec.wavelength
            ax.plot(wave, np.where(good, spec.flux, np.nan), lw=0.4, color="0.55", label="observed (noisy)")
            ax.plot(wave, true[i], lw=0.7, color="C3", label="noiseless fibre truth")
            for line, name in ((OII_DOUBLET_A, "[OII]"), (LINES["hbeta"], "Hb"), (LINES["oiii_5007"], "[OIII]"),
                               (LINES["halpha"], "Ha"), (DN4000_MARK_A, "D4000")):
                ax.axvline(line * (1 + g["z"]), color="C0", lw=0.4, alpha=0.5)
                ax.text(line * (1 + g["z"]), 1.0, name, transform=ax.get_xaxis_transform(), fontsize=6, ha="center",
                        va="bottom", color="C0")
            hi = np.nanpercentile(np.where(good, spec.flux, np.nan), 99.5)
            ax.set_ylim(min(0, np.nanpercentile(true[i], 1)), 1.3 * max(hi, true[i].max() * 0.6))
            ax.set_xlim(wave[0], wave[-1])
            ax.set_ylabel(r"$f_\lambda$ [1e-17 erg/s/cm$^2$/$\AA$]", fontsize=7)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.legend(fontsize=7, loc="upper right")
        axes[-1, 1].set_xlabel(r"observed wavelength [$\AA$]", fontsize=8)
        fig.suptitle("img2spec mock survey: grizy cutout (i/r/g, asinh; dashed = 3\" fibre) and fibre spectrum",
                     fontsize=9)
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=FIGURE_DPI)
        plt.close(fig)
    return out
