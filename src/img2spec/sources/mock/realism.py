"""The mock survey beside the real sky: its distributions against published SDSS values.

`realism_table` turns a mock truth directory into one row per galaxy: the drawn and
derived parameters plus every spectral quantity measured with `img2spec.measure` on
the *observed* (noisy, masked) fibre spectrum, regenerated in memory with the same
per-galaxy noise stream as `fetch_spectra` (so the report needs only the truth
directory). `compare` checks each distribution against `sdss_reference.yaml`
(values, tolerances, sources) and `run_realism` writes the JSON report and one
figure per comparison.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml
from scipy.special import gammaincinv
from scipy.stats import gaussian_kde

from ...config import Params
from ...io.atomic import write_json
from ...measure import measure_spectra
from ...paths import Paths
from . import truth
from .cosmology import distance_modulus
from .noise import observe
from .population import STAGE_SPECTRA, galaxy_rng
from .sersic import sersic_b

log = logging.getLogger(__name__)
REFERENCE_FILE = "sdss_reference.yaml"
G_BAND_A = (4000.0, 5500.0)
"""Observed-frame range over which the spectral S/N per pixel is taken (SDSS g band)."""
SCHAWINSKI_SLOPE, SCHAWINSKI_ICPT = 1.05, 0.45
"""Seyfert/LINER divide on the [NII] BPT diagram, y = 1.05 x + 0.45 (Schawinski et al. 2007, MNRAS 382, 1415)."""
MIN_PEAK_N = 5
"""Fewest galaxies on one side of a bimodal split for its peak to be located."""
EARLY_BT = 0.5
"""Bulge-to-total above which a mock galaxy counts as early type (Shen et al. 2003 use n > 2.5)."""
FIGURE_DPI = 80


def load_reference(path: Path | None = None) -> dict:
    """The published SDSS values with tolerances and sources (package data unless `path`)."""
    if path is not None:
        return yaml.safe_load(Path(path).read_text())
    return yaml.safe_load(resources.files(__package__).joinpath(REFERENCE_FILE).read_text())


# ---------------------------------------------------------------- per-galaxy table
def abs_mag_01(mag: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Absolute magnitude in the band shifted to z = 0.1 (^{0.1}M): the observed band is close to it
    for 0.05 < z < 0.15, so K = -2.5 log10(1 + z) (the bandwidth term) is the main correction."""
    return mag - distance_modulus(z) + 2.5 * np.log10(1.0 + z)


def _enclosed(r: float, comps: list[tuple[float, float, float]]) -> float:
    """Light fraction inside radius r of a sum of circular Sersic profiles (weight, n, re)."""
    from scipy.special import gammainc

    return sum(w * gammainc(2 * n, sersic_b(n) * (r / re) ** (1 / n)) for w, n, re in comps if re > 0)


def half_light_radius_kpc(row: dict) -> float:
    """r-band half-light radius (kpc) of bulge + disk, each circularised (re * sqrt(q))."""
    from scipy.optimize import brentq

    fb, fd = row["bulge_maggies_r"], row["disk_maggies_r"]
    comps = [(fb / (fb + fd), row["bulge_n"], row["bulge_re_kpc"] * np.sqrt(row["bulge_q"])),
             (fd / (fd + fb), row["disk_n"], row["disk_re_kpc"] * np.sqrt(row["disk_q"]))]
    hi = 50.0 * max(re for _, _, re in comps)
    return float(brentq(lambda r: _enclosed(r, comps) - 0.5, 1e-4, hi, xtol=1e-4))


def _snr_in_band(flux: np.ndarray, ivar: np.ndarray, wave: np.ndarray, band: tuple[float, float]) -> float:
    sel = (wave >= band[0]) & (wave <= band[1]) & (ivar > 0)
    return float(np.median(flux[sel] * np.sqrt(ivar[sel]))) if sel.any() else float("nan")


def observed_spectra(params: Params, truth_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(wave, flux, ivar, mask) of the noisy fibre spectra exactly as `fetch_spectra` writes them."""
    mp = params.mock
    true = truth.open_spectra(truth_dir)
    loglam = truth.read_loglam(truth_dir)
    flux = np.empty(true.shape, np.float32)
    ivar = np.empty(true.shape, np.float32)
    mask = np.empty(true.shape, bool)
    for i in range(true.shape[0]):
        f, iv, am, _, _ = observe(np.asarray(true[i], np.float64), loglam, mp.spectra,
                                  galaxy_rng(mp.seed, STAGE_SPECTRA, i))
        flux[i], ivar[i], mask[i] = f, iv, am != 0
    return 10.0 ** loglam, flux, ivar, mask


def realism_table(params: Params, truth_dir: Path) -> pd.DataFrame:
    """One row per mock galaxy: truth parameters, derived photometry/sizes and measurements."""
    tp = truth.read_params(truth_dir).reset_index(drop=True)
    wave, flux, ivar, mask = observed_spectra(params, truth_dir)
    z = tp["z"].to_numpy()
    m = measure_spectra(flux, wave, z, params.measure, ivar=ivar, mask=mask)
    out = tp.copy()
    for k, v in m.items():
        out[f"m_{k}"] = v
    out["g_r"] = tp["total_mag_g"] - tp["total_mag_r"]
    out["abs_mag_r"] = abs_mag_01(tp["total_mag_r"].to_numpy(), z)
    out["r50_kpc"] = [half_light_radius_kpc(r) for r in tp.to_dict("records")]
    out["early_type"] = tp["bulge_to_total"] >= EARLY_BT
    out["snr_g"] = [_snr_in_band(flux[i], ivar[i] * ~mask[i], wave, G_BAND_A) for i in range(len(tp))]
    return out


# ---------------------------------------------------------------- comparisons
def _mode(v: np.ndarray) -> float:
    """Mode of a Gaussian KDE (Scott's bandwidth) of one population's values."""
    if len(v) < MIN_PEAK_N:
        return float("nan")
    grid = np.linspace(v.min(), v.max(), 400)
    return float(grid[np.argmax(gaussian_kde(v)(grid))])


def _peaks(values: np.ndarray, split: float) -> tuple[float, float]:
    """Modes of the populations below and above `split` (each smoothed on its own: a KDE of the
    whole bimodal sample has a bandwidth set by the gap between the peaks, not their widths)."""
    v = values[np.isfinite(values)]
    return _mode(v[v < split]), _mode(v[v >= split])


def _check(name: str, mock: float, ref: float, tol: float, source: str, n: int, relative: bool = False,
           approx: bool = False, **extra) -> dict:
    dev = (mock / ref - 1.0) if relative else (mock - ref)
    ok = bool(np.isfinite(mock) and abs(dev) <= tol)
    return {"name": name, "mock": _r(mock), "reference": ref, "tolerance": tol,
            "tolerance_kind": "relative" if relative else "absolute", "deviation": _r(dev), "agrees": ok,
            "n": int(n), "source": source, "approx_reference": bool(approx), **extra}


def _r(x: float, nd: int = 4) -> float | None:
    return round(float(x), nd) if np.isfinite(x) else None


def _dn4000(t: pd.DataFrame, ref: dict) -> list[dict]:
    r = ref["dn4000_peaks"]
    v = t["m_dn4000"].to_numpy(float)
    blue, red = _peaks(v, r["split"])
    n = int(np.isfinite(v).sum())
    out = [_check("dn4000_blue_peak", blue, r["blue"], r["tolerance"], r["source"], n, approx=r["approx"]),
           _check("dn4000_red_peak", red, r["red"], r["tolerance"], r["source"], n, approx=r["approx"])]
    r = ref["dn4000_vs_mass"]
    if "log_stellar_mass" in t:
        lm = t["log_stellar_mass"].to_numpy(float)
        for centre, med in zip(r["log_mass"], r["median"]):
            sel = (np.abs(lm - centre) <= r["bin_half_width"]) & np.isfinite(v)
            if sel.sum() >= r["min_n"]:
                out.append(_check(f"dn4000_median_logm_{centre}", float(np.median(v[sel])), med, r["tolerance"],
                                  r["source"], int(sel.sum()), approx=r["approx"]))
    return out


def _star_forming(t: pd.DataFrame) -> np.ndarray:
    return (t["m_bpt_class"] == 0).to_numpy()


def _lines(t: pd.DataFrame, ref: dict) -> list[dict]:
    out = []
    sf = _star_forming(t)
    r = ref["halpha_ew_star_forming"]
    ew = t["m_halpha_ew"].to_numpy(float)
    # measure's star-forming class (EW(Halpha) >= 3 A): a BPT selection would keep only the strongest lines.
    ok = (t["m_sf_class"] == 1).to_numpy() & np.isfinite(ew)
    out.append(_check("halpha_ew_star_forming_median", float(np.median(ew[ok])) if ok.any() else np.nan,
                      r["median_a"], r["tolerance_rel"], r["source"], int(ok.sum()), relative=True,
                      approx=r["approx"]))
    r = ref["oii_to_halpha_ew"]
    o2 = t["m_oii_3727_ew"].to_numpy(float)
    han2 = ew + t["m_nii_6584_ew"].to_numpy(float)
    ok = sf & np.isfinite(o2) & np.isfinite(han2) & (han2 > 0)
    out.append(_check("oii_over_halpha_nii_ew_median", float(np.median(o2[ok] / han2[ok])) if ok.any() else np.nan,
                      r["ratio"], r["tolerance_rel"], r["source"], int(ok.sum()), relative=True))
    bpt = t["m_bpt_class"].to_numpy()
    n = len(t)
    on = bpt >= 0
    r = ref["emission_line_fraction"]
    out.append(_check("emission_line_fraction", on.mean(), r["fraction"], r["tolerance"], r["source"], n,
                      approx=r["approx"]))
    r = ref["agn_fraction_all"]
    out.append(_check("agn_fraction_all_kauffmann03", (bpt >= 1).mean(), r["fraction"], r["tolerance"],
                      r["source"], n))
    r = ref["bpt_shares_emission_line"]
    if on.sum() >= 5:
        for code, key in ((0, "star_forming"), (1, "composite"), (2, "agn")):
            out.append(_check(f"bpt_share_{key}", (bpt[on] == code).mean(), r[key], r["tolerance"], r["source"],
                              int(on.sum())))
        agn = bpt == 2
        if agn.sum() >= 3:
            x, y = t["m_log_nii_halpha"].to_numpy(float), t["m_log_oiii_hbeta"].to_numpy(float)
            sey = (y > SCHAWINSKI_SLOPE * x + SCHAWINSKI_ICPT)[agn].mean()
            out.append(_check("seyfert_share_of_agn", sey, r["seyfert_share_of_agn"], r["tolerance_seyfert_share"],
                              r["source"] + "; Seyfert/LINER divide of Schawinski et al. 2007", int(agn.sum())))
    return out


def _colours(t: pd.DataFrame, ref: dict) -> list[dict]:
    r = ref["colour_magnitude"]
    sel = (t["z"].between(*r["z_range"]) & t["abs_mag_r"].between(*r["abs_mag_range"])).to_numpy()
    gr = t["g_r"].to_numpy(float)[sel]
    conv = lambda c: r["ps1_offset"] + r["ps1_slope"] * c  # noqa: E731  SDSS -> PS1 g - r
    blue, red = _peaks(gr, conv(r["split_sdss"]))
    return [_check("g_r_red_sequence_peak_ps1", red, _r(conv(r["red_sequence_sdss"])), r["tolerance"], r["source"],
                   int(sel.sum()), approx=r["approx"]),
            _check("g_r_blue_cloud_peak_ps1", blue, _r(conv(r["blue_cloud_sdss"])), r["tolerance"], r["source"],
                   int(sel.sum()), approx=r["approx"])]


def shen03_log_r50(abs_mag: np.ndarray, early: bool, ref: dict) -> np.ndarray:
    """Shen et al. 2003 median log10 R50 (kpc) at ^{0.1}M_r for early or late types."""
    m = np.asarray(abs_mag, float)
    if early:
        e = ref["size_luminosity"]["early"]
        return -0.4 * e["a"] * m + e["b"]
    p = ref["size_luminosity"]["late"]
    return (-0.4 * p["alpha"] * m + (p["beta"] - p["alpha"]) * np.log10(1 + 10 ** (-0.4 * (m - p["m0"])))
            + p["gamma"])


def _sizes(t: pd.DataFrame, ref: dict) -> list[dict]:
    r = ref["size_luminosity"]
    out = []
    logr = np.log10(t["r50_kpc"].to_numpy(float))
    mag = t["abs_mag_r"].to_numpy(float)
    for early, label in ((True, "early"), (False, "late")):
        for lo, hi in r["abs_mag_bins"]:
            sel = (t["early_type"].to_numpy() == early) & (mag >= lo) & (mag < hi)
            if sel.sum() < r["min_n"]:
                continue
            centre = float(np.median(mag[sel]))
            out.append(_check(f"log_r50_{label}_M{lo:+.1f}", float(np.median(logr[sel])),
                              _r(float(shen03_log_r50(centre, early, ref))), r["tolerance_dex"], r["source"],
                              int(sel.sum()), abs_mag_median=_r(centre)))
    return out


def _redshift_snr(t: pd.DataFrame, ref: dict) -> list[dict]:
    r = ref["redshift"]
    out = [_check("redshift_median", float(t["z"].median()), r["median"], r["tolerance_rel"], r["source"], len(t),
                  relative=True, approx=r["approx"])]
    r = ref["spectral_snr"]
    snr, mag = t["snr_g"].to_numpy(float), t["fibre_mag_g"].to_numpy(float)
    ok = np.isfinite(snr) & (snr > 0) & np.isfinite(mag)
    snr_at = float("nan")
    if ok.sum() >= 10:
        slope, icpt = np.polyfit(mag[ok], np.log10(snr[ok]), 1)
        snr_at = float(10 ** (icpt + slope * r["fibre_mag"]))
    mid = 0.5 * (r["snr_min"] + r["snr_max"])
    out.append(_check(f"snr_per_pixel_at_fibre_g_{r['fibre_mag']}", snr_at, mid, 0.5 * (r["snr_max"] - r["snr_min"]),
                      r["source"], int(ok.sum())))
    return out


COMPARISONS: tuple[Callable[[pd.DataFrame, dict], list[dict]], ...] = (_dn4000, _lines, _colours, _sizes,
                                                                          _redshift_snr)


def compare(t: pd.DataFrame, ref: dict) -> dict:
    """Every comparison of the mock table with the reference: {name: result} plus a summary."""
    results = [c for fn in COMPARISONS for c in fn(t, ref)]
    return {"n_galaxies": int(len(t)), "n_agree": sum(c["agrees"] for c in results), "n_checks": len(results),
            "checks": {c["name"]: c for c in results}}


# ---------------------------------------------------------------- driver
def generate_mock(params: Params, n: int, root: Path) -> Path:
    """Run the mock `select` stage for `n` galaxies into `root`; returns its truth directory."""
    from . import stages

    mock = params.mock.model_copy(update={"n_galaxies": int(n)})
    paths = Paths(Path(root))
    stages.select(params.model_copy(update={"mock": mock}), paths)
    return paths.truth_dir


def run_realism(params: Params, out_json: Path, figure_dir: Path, truth_dir: Path | None = None,
                n_generate: int = 300, reference: Path | None = None) -> dict:
    """Compare a mock (an existing truth directory, or a freshly generated one) with the SDSS."""
    from .realism_figures import make_figures

    ref = load_reference(reference)
    with tempfile.TemporaryDirectory(prefix="img2spec-realism-") as tmp:
        if truth_dir is None or not (Path(truth_dir) / truth.PARAMS_FILE).exists():
            log.info("mock-realism: generating %d galaxies", n_generate)
            truth_dir = generate_mock(params, n_generate, Path(tmp))
            origin = f"generated ({n_generate} galaxies, seed {params.mock.seed})"
        else:
            origin = str(truth_dir)
        table = realism_table(params, Path(truth_dir))
    report = {"mock": origin, **compare(table, ref)}
    report["figures"] = [str(p) for p in make_figures(table, ref, report, Path(figure_dir))]
    write_json(Path(out_json), report)
    return report


def markdown_table(report: dict, before: dict | None = None) -> str:
    """The report as a Markdown table (mock, SDSS, tolerance, verdict; `before` adds a column)."""
    head = "| quantity | " + ("before | " if before else "") + "mock | SDSS | tolerance | agrees |\n"
    head += "|---|" + ("---:|" if before else "") + "---:|---:|---:|:---:|\n"
    rows = []
    for name, c in report["checks"].items():
        tol = f"{c['tolerance']:.0%}" if c["tolerance_kind"] == "relative" else f"±{c['tolerance']}"
        old = (before or {}).get("checks", {}).get(name, {}).get("mock")
        cells = [name] + ([str(old) if old is not None else "-"] if before else [])
        cells += [str(c["mock"]), str(c["reference"]), tol, "yes" if c["agrees"] else "**no**"]
        rows.append("| " + " | ".join(cells) + " |\n")
    return head + "".join(rows) + f"\n{report['n_agree']} of {report['n_checks']} within tolerance ({report['mock']}).\n"
