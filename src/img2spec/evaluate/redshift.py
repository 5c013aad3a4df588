"""Photometric-redshift metrics: the CNN's redshift head beside a colour-kNN photo-z.

Conventions (Pasquet et al. 2019, A&A 621, A26), with dz = z_phot - z_spec:
- sigma_NMAD = 1.4826 median(|dz - median(dz)| / (1 + z_spec));
- bias = mean(dz / (1 + z_spec));
- outlier fraction: share of objects with |dz| / (1 + z_spec) > `OUTLIER_THRESHOLD`.
The kNN photo-z uses exactly the colour features of the spectrum kNN baseline
(`baselines.colour_features`), fitted on the train split only.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .baselines import colour_features

log = logging.getLogger(__name__)

NMAD_SCALE = 1.4826
"""Median absolute deviation -> Gaussian sigma."""
OUTLIER_THRESHOLD = 0.05
"""|dz| / (1 + z) above this is a catastrophic outlier (at these low redshifts)."""
REDSHIFT_COLUMN = "z"


def photoz_metrics(z_pred: np.ndarray, z_true: np.ndarray, outlier_threshold: float = OUTLIER_THRESHOLD) -> dict:
    """sigma_nmad, bias, outlier_fraction and n over the objects where both are finite."""
    z_pred = np.asarray(z_pred, np.float64)
    z_true = np.asarray(z_true, np.float64)
    if z_pred.shape != z_true.shape:
        raise ValueError(f"z_pred {z_pred.shape} and z_true {z_true.shape} differ in shape")
    ok = np.isfinite(z_pred) & np.isfinite(z_true)
    n = int(ok.sum())
    if n == 0:
        return {"sigma_nmad": float("nan"), "bias": float("nan"), "outlier_fraction": float("nan"), "n": 0}
    dz = z_pred[ok] - z_true[ok]
    one_plus = 1.0 + z_true[ok]
    return {
        "sigma_nmad": float(NMAD_SCALE * np.median(np.abs(dz - np.median(dz)) / one_plus)),
        "bias": float(np.mean(dz / one_plus)),
        "outlier_fraction": float(np.mean(np.abs(dz) / one_plus > outlier_threshold)),
        "n": n,
    }


def knn_photoz(catalog, train: np.ndarray, test: np.ndarray, k: int, use_magnitude: bool) -> tuple[np.ndarray, dict]:
    """Mean spectroscopic z of the k nearest train neighbours in standardised colour space.

    Test objects without finite colours get NaN (counted, and left out of the metrics)."""
    feats = colour_features(catalog, use_magnitude)
    z = catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
    ok_train = train[np.isfinite(feats[train]).all(axis=1) & np.isfinite(z[train])]
    if len(ok_train) == 0:
        raise ValueError("knn photo-z: no train object has finite colours and redshift")
    mu, sd = feats[ok_train].mean(axis=0), feats[ok_train].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    nn = NearestNeighbors(n_neighbors=min(k, len(ok_train))).fit((feats[ok_train] - mu) / sd)
    pred = np.full(len(test), np.nan)
    finite = np.isfinite(feats[test]).all(axis=1)
    if finite.any():
        _, nbr = nn.kneighbors((feats[test][finite] - mu) / sd)
        pred[finite] = z[ok_train][nbr].mean(axis=1)
    return pred, {"k": int(nn.n_neighbors), "n_no_colours": int((~finite).sum())}


def redshift_metrics(z_cnn: np.ndarray | None, catalog, train: np.ndarray, test: np.ndarray, k: int,
                     use_magnitude: bool) -> dict:
    """{"cnn": metrics or absent, "knn_colour": metrics, "notes": ...} on the test split."""
    z_true = catalog[REDSHIFT_COLUMN].to_numpy(np.float64)[test]
    z_knn, info = knn_photoz(catalog, train, test, k, use_magnitude)
    out: dict = {"knn_colour": photoz_metrics(z_knn, z_true)}
    notes = {"knn_colour": info, "outlier_threshold": OUTLIER_THRESHOLD,
             "bias": "mean((z_pred - z_spec) / (1 + z_spec))"}
    if z_cnn is not None:
        out["cnn"] = photoz_metrics(np.asarray(z_cnn, np.float64), z_true)
    else:
        notes["cnn"] = "the CNN has no redshift head (cnn.redshift_weight: 0 or an older model)"
    out["notes"] = notes
    for name in ("cnn", "knn_colour"):
        if name in out:
            m = out[name]
            log.info("photo-z %-10s sigma_NMAD = %.4f, bias = %+.4f, outliers = %.1f%% (n=%d)", name,
                     m["sigma_nmad"], m["bias"], 100 * m["outlier_fraction"], m["n"])
    return out
