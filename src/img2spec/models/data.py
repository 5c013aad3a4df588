"""tf.data input pipelines that stream rows from the (memmapped) prepared arrays.

Only the index list lives in the dataset; each batch gathers its rows from the `.npy`
memmaps in a `numpy_function` (sorted indices for sequential reads), so memory stays
one batch deep however large the survey is.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from .augment import augment_batch
from .cnn import PHOTOMETRY_BANDS, PHOTOMETRY_INPUT

AUTOTUNE_PREFETCH = 2
"""Batches prepared ahead of the training step."""
WITHHOLD_SEED_OFFSET = 1_000_003
"""Offsets the photometry-withholding draws from the augmentation's (same seed, same step)."""
IMAGES_INPUT = "images"


def catalogue_magnitudes(catalog) -> np.ndarray:
    """(N, 5) float64 PS1 Kron magnitudes `mag_<band>` in `PHOTOMETRY_BANDS` order (NaN where absent)."""
    missing = [f"mag_{b}" for b in PHOTOMETRY_BANDS if f"mag_{b}" not in catalog]
    if missing:
        raise KeyError(f"catalogue lacks {missing}: needed for the hybrid CNN (cnn.photometry)")
    return np.column_stack([catalog[f"mag_{b}"].to_numpy(np.float64) for b in PHOTOMETRY_BANDS])


def withhold_photometry(photometry: tf.Tensor, fraction: float, seed) -> tf.Tensor:
    """Set the missing indicator (last column) of a random `fraction` of rows (stateless draw from `seed`)."""
    if fraction <= 0:
        return photometry
    drop = tf.random.stateless_uniform(tf.shape(photometry)[:1], seed=seed) < fraction
    flag = tf.maximum(photometry[:, -1], tf.cast(drop, photometry.dtype))
    return tf.concat([photometry[:, :-1], flag[:, None]], axis=-1)


def clean_flux(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies with non-finite or masked flux set to 0 and non-finite ivar to 0."""
    flux = np.asarray(flux, np.float32)
    ivar = np.asarray(ivar, np.float32)
    ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0).astype(np.float32)
    flux = np.where((ivar > 0) & np.isfinite(flux), flux, 0.0).astype(np.float32)
    return flux, ivar


def image_dataset(
    images: np.ndarray,
    indices: np.ndarray,
    targets: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    shift_pixels: float = 0.0,
    photometry: np.ndarray | None = None,
    withhold_fraction: float = 0.0,
) -> tf.data.Dataset:
    """(images, {name: target}) batches for rows `indices`; ({"images", "photometry"}, targets)
    when `photometry` ((N, F + 1) `cnn.photometry_features`, catalogue order) is given.

    training=True: shuffled, repeated forever (use `steps_per_epoch`), augmented.
    training=False: catalogue order, one pass, no augmentation.
    `targets` arrays are indexed by catalogue row like `images` (memmaps are fine);
    flux/ivar targets are cleaned (masked pixels -> 0) as they are gathered. In training the
    photometry of a random `withhold_fraction` of each batch is withheld (indicator set).
    """
    indices = np.asarray(indices, np.int64)
    names = list(targets)
    shape = tuple(images.shape[1:])
    tdims = {k: tuple(np.shape(targets[k])[1:]) for k in names}
    phot = None if photometry is None else np.asarray(photometry, np.float32)
    n_x = 1 if phot is None else 2

    def gather(idx: np.ndarray):
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        undo = np.empty_like(order)
        undo[order] = np.arange(len(order))
        out = [np.asarray(images[rows], np.float32)[undo]]
        if phot is not None:
            out.append(phot[idx])
        got = {k: np.asarray(targets[k][rows], np.float32)[undo] for k in names}
        if "flux" in got and "ivar" in got:
            got["flux"], got["ivar"] = clean_flux(got["flux"], got["ivar"])
        out += [got[k] for k in names]
        return out

    def load(idx):
        arrays = tf.numpy_function(gather, [idx], [tf.float32] * (n_x + len(names)), stateful=False)
        x = tf.ensure_shape(arrays[0], (None, *shape))
        if phot is not None:
            x = {IMAGES_INPUT: x, PHOTOMETRY_INPUT: tf.ensure_shape(arrays[1], (None, phot.shape[1]))}
        y = {k: tf.ensure_shape(a, (None, *tdims[k])) for k, a in zip(names, arrays[n_x:])}
        return x, y

    def augment(xy, step):
        seed_pair = tf.stack([tf.cast(seed, tf.int64), step])
        x, y = xy
        if phot is None:
            return augment_batch(x, seed_pair, shift_pixels), y
        return {IMAGES_INPUT: augment_batch(x[IMAGES_INPUT], seed_pair, shift_pixels),
                PHOTOMETRY_INPUT: withhold_photometry(x[PHOTOMETRY_INPUT], withhold_fraction,
                                                      seed_pair + tf.constant([WITHHOLD_SEED_OFFSET, 0], tf.int64))}, y

    ds = tf.data.Dataset.from_tensor_slices(indices)
    if training:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size).map(load, num_parallel_calls=1, deterministic=True)
    if training:
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(augment, num_parallel_calls=1, deterministic=True)
    return ds.prefetch(AUTOTUNE_PREFETCH)


def spectra_dataset(flux: np.ndarray, ivar: np.ndarray, *, batch_size: int, training: bool, seed: int = 0,
                    z: np.ndarray | None = None) -> tf.data.Dataset:
    """((flux, ivar),) batches from in-memory cleaned arrays (spectra are small next to images);
    ((flux, ivar, z),) with the redshifts a rest-frame decoder needs."""
    ds = tf.data.Dataset.from_tensor_slices(((flux, ivar),) if z is None else ((flux, ivar, np.asarray(z, np.float32)),))
    if training:
        ds = ds.shuffle(len(flux), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE_PREFETCH)
