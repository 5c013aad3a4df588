"""Catalogue photometry at inference: which objects a hybrid CNN sees with their magnitudes.

A hybrid bundle (`ManifestView.photometry_bands`) takes each object's catalogue magnitudes
beside its images. An object without a finite magnitude in every band is predicted from its
images alone (the same network with its missing indicator set; never a magnitude of 0), with
the images-only photo-z error factor; the fallback is logged and returned per object
(`BatchResult.photometry_used`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)
LOGGED_OBJECTS = 5
"""A fallback warning names at most this many objects."""


def check_photometry(photometry: np.ndarray | None, n: int, bands: Sequence[str],
                     object_ids: Sequence | None = None, *, quiet: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    """((N, bands) float64 magnitudes or None, (N,) bool: usable in every band) for a hybrid bundle.

    ValueError on a wrong shape; unless `quiet`, a warning names the objects and bands that fall
    back to images alone."""
    if photometry is None:
        return None, np.zeros(n, bool)
    mags = np.asarray(photometry, np.float64)
    if mags.shape != (n, len(bands)):
        raise ValueError(f"photometry: expected ({n}, {len(bands)}) magnitudes in bands {tuple(bands)}, "
                         f"got shape {mags.shape}")
    finite = np.isfinite(mags)
    used = finite.all(axis=1)
    missing = np.flatnonzero(~used)
    if missing.size and not quiet:  # a wholly absent catalogue is the caller's choice, not a fallback
        names = [f"{object_ids[i] if object_ids is not None else i} ({','.join(b for b, ok in zip(bands, finite[i]) if not ok)})"
                 for i in missing[:LOGGED_OBJECTS]]
        log.warning("photometry: %d of %d objects lack a finite magnitude, predicted from images alone: %s%s",
                    missing.size, n, "; ".join(names), " ..." if missing.size > LOGGED_OBJECTS else "")
    return mags, used


def merge_rows(parts: Sequence[tuple[np.ndarray, object]], n: int):
    """One prediction of n objects from predictions of row subsets [(rows, prediction)]: (N, ...) fields
    are put back in row order, other fields (grids, decoded pixels, None) come from the first part."""
    first = parts[0][1]
    values = {}
    for f in dataclasses.fields(first):
        value = getattr(first, f.name)
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(parts[0][0]) and \
                f.name not in ("rest_wave", "rest_columns"):
            out = np.empty((n, *value.shape[1:]), value.dtype)
            for rows, pred in parts:
                out[rows] = getattr(pred, f.name)
            value = out
        values[f.name] = value
    return type(first)(**values)


def call_groups(used: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """(rows, with photometry) of each `predict_split` call for objects `used`: one group when every
    object has photometry or none has, else those with it, then those without (each in row order).
    A survey stores this grouping so that its reader decodes the same rows together."""
    used = np.asarray(used, bool)
    if used.all() or not used.any():
        return [(np.arange(len(used)), bool(used.all()))]
    return [(np.flatnonzero(used), True), (np.flatnonzero(~used), False)]


def predict_split(predict: Callable[..., object], images: np.ndarray, mags: np.ndarray | None, used: np.ndarray,
                  z: np.ndarray | None, scale_with: float, scale_without: float):
    """`predict(images, photometry=..., z=..., z_err_scale=...)` with each object's error factor, one
    call per `call_groups` group, merged back in order."""
    groups = call_groups(used)
    if len(groups) == 1:
        with_phot = groups[0][1]
        return predict(images, photometry=mags if with_phot else None, z=z,
                       z_err_scale=scale_with if with_phot else scale_without)
    parts = []
    for rows, with_phot in groups:
        parts.append((rows, predict(images[rows], photometry=mags[rows] if with_phot else None,
                                    z=None if z is None else np.asarray(z)[rows],
                                    z_err_scale=scale_with if with_phot else scale_without)))
    return merge_rows(parts, len(images))
