"""Galaxy classes from measurements: star-forming / quiescent and the BPT diagram.

BPT (Baldwin, Phillips & Terlevich 1981) in the [NII]/Halpha vs [OIII]/Hbeta plane:
x = log10([NII] 6584 / Halpha), y = log10([OIII] 5007 / Hbeta).
- star-forming: below the empirical Kauffmann et al. (2003, MNRAS 346, 1055, eq. 1) line,
  y < 0.61 / (x - 0.05) + 1.3 with x < 0.05;
- AGN: above the theoretical maximum-starburst line of Kewley et al. (2001, ApJ 556, 121,
  eq. 5), y > 0.61 / (x - 0.47) + 1.19, or x >= 0.47;
- composite: between the two.
A galaxy enters the diagram only when all four line fluxes are positive and detected at
flux / error >= measure.classes.bpt_min_snr (an unknown error fails the cut).
"""

from __future__ import annotations

import numpy as np

from ..config.measure import ClassParams

# Kauffmann et al. 2003 (MNRAS 346, 1055), eq. 1: y = K03_A / (x - K03_X0) + K03_B.
K03_A, K03_X0, K03_B = 0.61, 0.05, 1.30
# Kewley et al. 2001 (ApJ 556, 121), eq. 5: y = K01_A / (x - K01_X0) + K01_B.
K01_A, K01_X0, K01_B = 0.61, 0.47, 1.19

UNCLASSIFIED = -1
SF_LABELS = {UNCLASSIFIED: "unclassified", 0: "quiescent", 1: "star_forming"}
BPT_LABELS = {UNCLASSIFIED: "unclassified", 0: "star_forming", 1: "composite", 2: "agn"}
AGN_LABELS = {UNCLASSIFIED: "unclassified", 0: "not_agn", 1: "agn"}
CLASS_COLUMNS = {"sf_class": SF_LABELS, "bpt_class": BPT_LABELS, "agn_class": AGN_LABELS}
"""`classify`'s output columns and their labels."""
BPT_LINES = ("hbeta", "oiii_5007", "halpha", "nii_6584")


def kauffmann03(x: np.ndarray) -> np.ndarray:
    """log([OIII]/Hbeta) of the Kauffmann et al. 2003 star-forming boundary at x (x < 0.05)."""
    with np.errstate(divide="ignore"):
        return K03_A / (np.asarray(x, np.float64) - K03_X0) + K03_B


def kewley01(x: np.ndarray) -> np.ndarray:
    """log([OIII]/Hbeta) of the Kewley et al. 2001 maximum-starburst line at x (x < 0.47)."""
    with np.errstate(divide="ignore"):
        return K01_A / (np.asarray(x, np.float64) - K01_X0) + K01_B


def log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """log10(num / den), NaN unless both fluxes are positive and finite."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    ok = np.isfinite(num) & np.isfinite(den) & (num > 0) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, np.log10(np.where(ok, num, 1.0) / np.where(ok, den, 1.0)), np.nan)


def bpt_region(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BPT class code (0 star-forming, 1 composite, 2 AGN, -1 where x or y is NaN)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    agn = (x >= K01_X0) | (y > kewley01(x))
    sf = (x < K03_X0) & (y < kauffmann03(x))
    out = np.where(agn, 2, np.where(sf, 0, 1)).astype(np.int8)
    return np.where(np.isfinite(x) & np.isfinite(y), out, UNCLASSIFIED).astype(np.int8)


def classify(table: dict[str, np.ndarray], cp: ClassParams) -> dict[str, np.ndarray]:
    """Class columns from a `measure_spectra` table: `log_nii_halpha`, `log_oiii_hbeta`,
    `bpt_class` (BPT_LABELS), `agn_class` (AGN_LABELS: AGN = above Kewley et al. 2001, among
    objects on the diagram) and `sf_class` (SF_LABELS)."""
    x = log_ratio(table["nii_6584_flux"], table["halpha_flux"])
    y = log_ratio(table["oiii_5007_flux"], table["hbeta_flux"])
    detected = np.ones(x.shape, bool)
    for name in BPT_LINES:
        f, e = np.asarray(table[f"{name}_flux"], np.float64), np.asarray(table[f"{name}_flux_err"], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = f / e
        detected &= np.isfinite(f) & (f > 0) & ((snr >= cp.bpt_min_snr) if cp.bpt_min_snr > 0 else True)
    bpt = np.where(detected, bpt_region(x, y), UNCLASSIFIED).astype(np.int8)
    agn = np.where(bpt == UNCLASSIFIED, UNCLASSIFIED, (bpt == 2).astype(np.int8)).astype(np.int8)

    if cp.sf_criterion == "halpha_ew":
        v = np.asarray(table["halpha_ew"], np.float64)
        sf = v >= cp.halpha_ew_min
    else:
        v = np.asarray(table["dn4000"], np.float64)
        sf = v < cp.dn4000_max
    sf_class = np.where(np.isfinite(v), sf.astype(np.int8), UNCLASSIFIED).astype(np.int8)
    return {"log_nii_halpha": x, "log_oiii_hbeta": y, "bpt_class": bpt, "agn_class": agn, "sf_class": sf_class}
