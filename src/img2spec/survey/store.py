"""The two survey stores: what `img2spec survey` writes per shard beside the catalogue part.

- `compact` (default): a latent shard (`io.shards.LatentShard`): per predicted object the latent
  mean and 1-sigma, the redshift decoded at with its given flag and error, the photo-z, the
  normalisation magnitude, and which rows were decoded together (`decode_group`), plus the decoding
  options in its attributes. `decode_rows` turns it back into spectra with the bundle.
- `spectra`: a spectra shard (`io.shards.SpectraShard`): flux and sigma, and a rest-frame bundle's
  rest-frame arrays.

Both are written by `output_shard` from the same `BatchResult` and carry the same stamps
(bundle hash, input hash); the file's `format` attribute says which store it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config.survey import SURVEY_STORES
from ..io.shards import LATENT_FORMAT, SPECTRA_FORMAT, LatentShard, SpectraShard
from ..predict.photometry import call_groups
from ..predict.predictor import BatchResult, Predictor

STORE_FORMATS = {"compact": LATENT_FORMAT, "spectra": SPECTRA_FORMAT}
"""Store name -> `format` attribute of its shard files."""
assert set(STORE_FORMATS) == set(SURVEY_STORES)
DECODE_ATTRS = ("sigma_method", "n_samples", "seed", "sigma_scale", "sigma_scale_given_z", "batch_size", "runtime",
                "runtime_threads")
"""Attributes of a latent shard that the decoding depends on besides the bundle (`decode_rows`; the
runtime and its (intra-op, inter-op) threads only for the last bits: `read.open_survey`)."""


class StoreError(ValueError):
    """A survey output cannot be read as asked (another store, another bundle, unknown objects)."""


def check_store(store: str) -> str:
    """`store` if it is one of `SURVEY_STORES`, else a clear error."""
    if store not in STORE_FORMATS:
        raise StoreError(f"store {store!r}: choose {' or '.join(SURVEY_STORES)}")
    return store


def store_of(attrs: dict[str, Any] | None) -> str | None:
    """The store an output shard belongs to (from its attributes), None when it is neither."""
    fmt = (attrs or {}).get("format")
    return next((name for name, f in STORE_FORMATS.items() if f == fmt), None)


def batch_groups(result: BatchResult, first: int) -> np.ndarray:
    """(N,) decode group of each row of one `predict_batch` result, numbered from `first`: the rows
    of each call `predict_batch` made (`predict.photometry.call_groups` for a hybrid bundle)."""
    groups = np.full(len(result), first, np.int32)
    if result.photometry_used is not None:
        for k, (rows, _) in enumerate(call_groups(result.photometry_used)):
            groups[rows] = first + k
    return groups


def output_shard(store: str, *, result: BatchResult, groups: np.ndarray, object_id: np.ndarray, ra: np.ndarray,
                 dec: np.ndarray, norm_mag: np.ndarray, wave: np.ndarray, attrs: dict[str, Any],
                 predictor: Predictor, batch_size: int) -> LatentShard | SpectraShard:
    """The shard file of `store` for the predicted rows of one cutout shard."""
    if check_store(store) == "spectra":
        return SpectraShard(
            object_id=object_id, ra=ra, dec=dec, flux=result.flux, sigma=result.sigma, wave=wave, z=result.z,
            z_err=result.z_err, z_used=result.z_used, rest_wave=result.rest_wave, rest_flux=result.rest_flux,
            rest_sigma=result.rest_sigma, norm_mag=norm_mag, attrs=attrs)
    options = {"sigma_method": predictor.sigma_method, "n_samples": predictor.n_samples, "seed": predictor.seed,
               "sigma_scale": predictor.sigma_scale, "sigma_scale_given_z": predictor.sigma_scale_given_z,
               "batch_size": int(batch_size),
               # what ran the networks, on how many threads: a reader on the same decodes the same bits
               "runtime": predictor.runtime, "runtime_threads": [int(t) for t in predictor.threads]}
    return LatentShard(
        object_id=object_id, ra=ra, dec=dec, latent_mu=result.latent_mu, latent_std=result.latent_std,
        decode_group=groups, z=result.z, z_err=result.z_err, z_used=result.z_used, z_given=result.z_given,
        photometry_used=result.photometry_used, norm_mag=norm_mag, attrs={**attrs, **options})


def decode_predictor(predictor: Predictor, attrs: dict[str, Any], where: str) -> Predictor:
    """`predictor` with the decoding options a latent shard was written with; StoreError if the
    bundle's calibration differs from the one the shard records (another bundle)."""
    pred = predictor.with_options(sigma_method=str(attrs["sigma_method"]), n_samples=int(attrs["n_samples"]))
    for key in ("sigma_scale", "sigma_scale_given_z"):
        if float(getattr(pred, key)) != float(attrs[key]):
            raise StoreError(f"{where}: {key} {attrs[key]} in the survey, {getattr(pred, key)} in the bundle")
    return pred


def decode_rows(predictor: Predictor, shard: LatentShard, rows: np.ndarray, *, with_sigma: bool = True) -> BatchResult:
    """The spectra of `rows` (indices into `shard`, any order) decoded from the latents: every decode
    group they touch is decoded whole, in one call, as the survey decoded it (same bits), and the
    rows are picked from it. `predictor`: the shard's bundle with its options (`decode_predictor`)."""
    rows = np.asarray(rows, np.int64)
    attrs = shard.attrs
    groups = [np.flatnonzero(shard.decode_group == g) for g in np.unique(shard.decode_group[rows])]
    parts: list[BatchResult] = []
    for members in groups or [rows]:  # no rows: one empty decode, for the arrays' shapes

        def sub(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[members]

        res = predictor.decode_batch(shard.latent_mu[members], shard.latent_std[members], z_used=sub(shard.z_used),
                                     z_given=sub(shard.z_given), z_err=sub(shard.z_err),
                                     batch_size=int(attrs["batch_size"]), seed=int(attrs["seed"]),
                                     with_sigma=with_sigma)
        res.z, res.z_err, res.photometry_used = sub(shard.z), sub(shard.z_err), sub(shard.photometry_used)
        parts.append(res)
    decoded = BatchResult.concat(parts)
    position = np.empty(len(shard), np.int64)
    order = np.concatenate(groups) if groups else rows
    position[order] = np.arange(len(order))
    return take_rows(decoded, position[rows])


def take_rows(result: BatchResult, idx: np.ndarray) -> BatchResult:
    """Rows `idx` of a `BatchResult` (grids stay whole); `result` itself when `idx` takes every row in order
    (a whole shard read back: no copy of its spectra)."""
    n = len(result.flux) if result.flux is not None else -1
    if len(idx) == n and np.array_equal(idx, np.arange(n)):
        return result

    def pick(name: str):
        value = getattr(result, name)
        return None if value is None else value[idx]

    return BatchResult(flux=pick("flux"), sigma=pick("sigma"), z=pick("z"), z_err=pick("z_err"), z_used=pick("z_used"),
                       z_given=pick("z_given"), rest_wave=result.rest_wave, rest_flux=pick("rest_flux"),
                       rest_sigma=pick("rest_sigma"), photometry_used=pick("photometry_used"),
                       latent_mu=pick("latent_mu"), latent_std=pick("latent_std"))
