"""One figure per realism comparison: the mock's distribution with the SDSS reference marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...measure import kauffmann03, kewley01

FIGURE_DPI = 80


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def _status(report: dict, *names: str) -> str:
    checks = [report["checks"][n] for n in names if n in report["checks"]]
    return " ".join(f"{c['name']}: {c['mock']} vs {c['reference']} ({'ok' if c['agrees'] else 'OFF'})" for c in checks)


def make_figures(t: pd.DataFrame, ref: dict, report: dict, out: Path) -> list[Path]:
    """Write the figures into `out`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    checks = report["checks"]

    # Dn4000 distribution and against stellar mass.
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    v = t["m_dn4000"].to_numpy(float)
    ax[0].hist(v[np.isfinite(v)], bins=40, range=(0.9, 2.4), color="0.6")
    for k in ("blue", "red"):
        ax[0].axvline(ref["dn4000_peaks"][k], color="C3", ls="--")
        c = checks.get(f"dn4000_{k}_peak", {}).get("mock")
        if c is not None:
            ax[0].axvline(c, color="C0")
    ax[0].set_xlabel("Dn4000 (mock, measured)"), ax[0].set_title("dashed: SDSS peaks (Kauffmann+03); solid: mock", fontsize=8)
    if "log_stellar_mass" in t:
        ax[1].scatter(t["log_stellar_mass"], v, s=4, c="0.5")
        r = ref["dn4000_vs_mass"]
        ax[1].plot(r["log_mass"], r["median"], "o--", color="C3", label="SDSS median (Kauffmann+03)")
        ax[1].legend(fontsize=7, loc="upper left")
    ax[1].set_xlabel("log10 M* [Msun]"), ax[1].set_ylabel("Dn4000")
    paths.append(_save(fig, out / "realism_dn4000.png"))

    # Emission-line EWs of star-forming galaxies.
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    sf = (t["m_bpt_class"] == 0).to_numpy()
    for a, col, lab in ((ax[0], "m_halpha_ew", "EW(Halpha)"), (ax[1], "m_oii_3727_ew", "EW([OII])")):
        x = t[col].to_numpy(float)
        a.hist(np.log10(np.clip(x[np.isfinite(x)], 0.1, None)), bins=40, range=(-1, 2.5), color="0.8", label="all")
        a.hist(np.log10(np.clip(x[sf & np.isfinite(x)], 0.1, None)), bins=40, range=(-1, 2.5), color="C0",
               label="BPT star-forming")
        a.set_xlabel(f"log10 {lab} [A]"), a.legend(fontsize=7)
    ax[0].axvline(np.log10(ref["halpha_ew_star_forming"]["median_a"]), color="C3", ls="--")
    ax[0].set_title(_status(report, "halpha_ew_star_forming_median"), fontsize=7)
    ax[1].set_title(_status(report, "oii_over_halpha_nii_ew_median"), fontsize=7)
    paths.append(_save(fig, out / "realism_emission_ew.png"))

    # BPT diagram.
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    x, y = t["m_log_nii_halpha"].to_numpy(float), t["m_log_oiii_hbeta"].to_numpy(float)
    on = (t["m_bpt_class"] >= 0).to_numpy()
    cls = t["agn_class"].to_numpy() if "agn_class" in t else np.array(["none"] * len(t))
    for label, colour in (("none", "0.5"), ("seyfert", "C3"), ("liner", "C1")):
        s = on & (cls == label)
        ax.scatter(x[s], y[s], s=6, c=colour, label=f"true {label} ({int(s.sum())})")
    xx = np.linspace(-1.6, 0.0, 100)
    ax.plot(xx, kauffmann03(xx), "k--", lw=0.8)
    xx = np.linspace(-1.6, 0.4, 100)
    ax.plot(xx, kewley01(xx), "k-", lw=0.8)
    ax.set_xlim(-1.6, 0.6), ax.set_ylim(-1.3, 1.3)
    ax.set_xlabel("log [NII]/Halpha"), ax.set_ylabel("log [OIII]/Hbeta"), ax.legend(fontsize=7, loc="lower left")
    ax.set_title(_status(report, "agn_fraction_all_kauffmann03", "bpt_share_agn"), fontsize=6)
    paths.append(_save(fig, out / "realism_bpt.png"))

    # Colour-magnitude.
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    r = ref["colour_magnitude"]
    zsel = t["z"].between(*r["z_range"]).to_numpy()
    ax.scatter(t["abs_mag_r"][~zsel], t["g_r"][~zsel], s=3, c="0.8", label="other z")
    ax.scatter(t["abs_mag_r"][zsel], t["g_r"][zsel], s=5, c="C0", label=f"{r['z_range'][0]} < z < {r['z_range'][1]}")
    for k in ("red_sequence_sdss", "blue_cloud_sdss"):
        ax.axhline(r["ps1_offset"] + r["ps1_slope"] * r[k], color="C3", ls="--")
    ax.set_xlabel("^{0.1}M_r"), ax.set_ylabel("g - r (PS1, observed)"), ax.invert_xaxis(), ax.legend(fontsize=7, loc="upper left")
    ax.set_title(_status(report, "g_r_red_sequence_peak_ps1", "g_r_blue_cloud_peak_ps1"), fontsize=6)
    paths.append(_save(fig, out / "realism_colour_magnitude.png"))

    # Size-luminosity.
    from .realism import shen03_log_r50

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    mm = np.linspace(-23, -18, 50)
    for early, colour, lab in ((True, "C3", "early (B/T >= 0.5)"), (False, "C0", "late")):
        s = (t["early_type"] == early).to_numpy()
        ax.scatter(t["abs_mag_r"][s], np.log10(t["r50_kpc"][s]), s=4, c=colour, alpha=0.6, label=f"mock {lab}")
        ax.plot(mm, shen03_log_r50(mm, early, ref), color=colour, ls="--")
    ax.set_xlabel("^{0.1}M_r"), ax.set_ylabel("log R50 [kpc]"), ax.invert_xaxis(), ax.legend(fontsize=7, loc="upper left")
    ax.set_title("dashed: Shen et al. 2003", fontsize=8)
    paths.append(_save(fig, out / "realism_size_luminosity.png"))

    # Redshift distribution.
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.hist(t["z"], bins=30, color="0.6")
    ax.axvline(ref["redshift"]["median"], color="C3", ls="--", label="SDSS (scaled to g < 18)")
    ax.axvline(t["z"].median(), color="C0", label="mock median")
    ax.set_xlabel("z"), ax.legend(fontsize=7)
    paths.append(_save(fig, out / "realism_redshift.png"))

    # Spectral S/N against fibre magnitude.
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.scatter(t["fibre_mag_g"], t["snr_g"], s=4, c="0.5")
    r = ref["spectral_snr"]
    ax.errorbar([r["fibre_mag"]], [0.5 * (r["snr_min"] + r["snr_max"])], yerr=[0.5 * (r["snr_max"] - r["snr_min"])],
                fmt="o", color="C3", label="SDSS requirement/typical")
    ax.set_yscale("log"), ax.set_xlabel("fibre g [mag]"), ax.set_ylabel("median S/N per pixel (g band)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "realism_snr.png"))
    return paths
