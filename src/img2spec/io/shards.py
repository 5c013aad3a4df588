"""HDF5 shards: cutouts packed per HEALPix pixel (`img2spec pack`) and their predicted spectra (`img2spec survey`).

Layout `<root>/healpix=<N>/<part>.hdf5` (hive-style, so the Parquet catalogue beside the
spectra reads as one partitioned dataset). Field names follow the Multimodal Universe
data set: `object_id`, `ra`, `dec`, `image_flux` (N, bands, H, W) float32, per-band
`magzp`, the band names, optional `z`, `rKronMag` and `mag` (every band's catalogue magnitude).

A survey writes per cutout shard either a spectra shard (flux and sigma, `--store spectra`) or
a latent shard (`--store compact`, the default): what the spectra are a deterministic function
of (latent mean and 1-sigma, the decode redshift and its error), decoded on read by
`img2spec.survey.open_survey`.

Every shard carries a `content_hash` attribute (sha256 of what it holds), computed when
it is written; a survey output records the content hash of the cutout shard it came from
and the bundle hash, which is how `survey` knows an output is already done. Writes are
atomic (`io.atomic.atomic_path`): a killed writer never leaves a partial shard.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from .atomic import atomic_path
from .errors import FileFormatError
from .ps1_cutout import Cutout

CUTOUT_FORMAT = "img2spec-cutout-shard"
SPECTRA_FORMAT = "img2spec-spectra-shard"
LATENT_FORMAT = "img2spec-latent-shard"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".hdf5"
PARTITION_PREFIX = "healpix="
_PARTITION = re.compile(r"^healpix=(\d+)$")
T = TypeVar("T")


class ShardFormatError(FileFormatError):
    """A shard file is unreadable or not the layout this module writes."""

    default_reason = "bad_shard"


def part_path(root: str | Path, healpix: int, part: str) -> Path:
    """`<root>/healpix=<N>/<part>.hdf5`."""
    return Path(root) / f"{PARTITION_PREFIX}{int(healpix)}" / f"{part}{SHARD_SUFFIX}"


def list_parts(root: str | Path) -> list[tuple[int, Path]]:
    """(healpix, path) of every shard under `root`, sorted (temporaries excluded)."""
    out = []
    for pdir in sorted(Path(root).glob(f"{PARTITION_PREFIX}*")):
        m = _PARTITION.match(pdir.name)
        if not (m and pdir.is_dir()):
            continue
        for path in sorted(pdir.glob(f"*{SHARD_SUFFIX}")):
            if not path.name.startswith("."):
                out.append((int(m.group(1)), path))
    return out


def _str_array(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def _hash_arrays(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        if arr is None:
            h.update(b"\0none")
            continue
        arr = np.asarray(arr)
        if arr.dtype == object:
            h.update("\0".join(map(str, arr.tolist())).encode())
        else:
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


@dataclass
class CutoutShard:
    """The cutouts of one shard (row i = object i)."""

    object_id: np.ndarray
    """(N,) object ids as str."""
    ra: np.ndarray
    dec: np.ndarray
    image_flux: np.ndarray
    """(N, bands, H, W) float32 linear counts."""
    magzp: np.ndarray
    """(N, bands) AB zero points: mag = -2.5 log10(counts) + magzp."""
    bands: tuple[str, ...]
    pixel_scale: np.ndarray
    """(N,) arcsec per pixel."""
    z: np.ndarray | None = None
    rKronMag: np.ndarray | None = None
    mag: np.ndarray | None = None
    """(N, bands) float32 catalogue PS1 Kron AB magnitudes in `bands` order (NaN: none), the
    photometry a hybrid bundle takes beside the images; None when the pack had no catalogue photometry."""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.object_id)

    def cutout(self, i: int) -> Cutout:
        """Object i as a `Cutout` (views on the shard's arrays)."""
        return Cutout(
            objid=str(self.object_id[i]), ra=float(self.ra[i]), dec=float(self.dec[i]),
            data={b: self.image_flux[i, k] for k, b in enumerate(self.bands)},
            magzp={b: float(self.magzp[i, k]) for k, b in enumerate(self.bands)},
            pixel_scale=float(self.pixel_scale[i]),
        )

    def magnitudes(self, bands: tuple[str, ...], rows: slice | np.ndarray = slice(None)) -> np.ndarray | None:
        """(n, len(bands)) catalogue magnitudes of `rows` in `bands` order (NaN for a band not packed);
        None when the shard has no `mag`."""
        if self.mag is None:
            return None
        mag = np.asarray(self.mag[rows], np.float64)
        cols = [mag[:, self.bands.index(b)] if b in self.bands else np.full(len(mag), np.nan) for b in bands]
        return np.column_stack(cols) if cols else np.zeros((len(mag), 0))

    def content_hash(self) -> str:
        return _hash_arrays(self.object_id, self.ra, self.dec, self.image_flux, self.magzp,
                            np.asarray(self.bands, dtype=object), self.pixel_scale, self.z, self.rKronMag,
                            *(() if self.mag is None else (self.mag,)))  # unchanged hashes of shards without


CUTOUT_COLUMNS = (("object_id", "object_id", str), ("ra", "ra", np.float64), ("dec", "dec", np.float64),
                  # contiguous and uncompressed: a survey task reads the whole part at disk speed
                  ("image_flux", "image_flux", np.float32), ("magzp", "magzp", np.float32), ("bands", "bands", str),
                  ("pixel_scale", "pixel_scale", np.float32), ("z", "z", np.float64),
                  ("rKronMag", "rKronMag", np.float32), ("mag", "mag", np.float32))
"""Datasets of a cutout shard: (field, dataset name, dtype; `str` for text), optional ones written when not None."""


def _write_shard(path: str | Path, fmt: str, shard: Any, columns: tuple, attrs: dict[str, Any]) -> None:
    """Write the `columns` of `shard` that are not None and its attributes, atomically."""
    import h5py

    with atomic_path(path, suffix=f"{SHARD_SUFFIX}.tmp") as tmp, h5py.File(tmp, "w") as f:
        for name, dataset, dtype in columns:
            value = getattr(shard, name)
            if value is None:
                continue
            if dtype is str:
                f.create_dataset(dataset, data=_str_array(value), dtype=h5py.string_dtype())
            else:
                f.create_dataset(dataset, data=np.asarray(value, dtype))
        f.attrs.update({**attrs, "format": fmt, "format_version": FORMAT_VERSION, "n_objects": len(shard)})


def _strings(ds) -> np.ndarray:
    return np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]], dtype=object)


def _read_shard(path: str | Path, fmt: str, kind: str, columns: tuple, build: Callable[[dict[str, Any]], T]) -> T:
    """`build` applied to {field: array present in the file, 'attrs': attributes}; ShardFormatError names
    the file when it is not a `kind` shard or cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != fmt:
                raise ShardFormatError(f"{path}: not an img2spec {kind} shard (format {f.attrs.get('format')!r})")
            fields = {name: _strings(f[dataset]) if dtype is str else f[dataset][()]
                      for name, dataset, dtype in columns if dataset in f}
            return build({**fields, "attrs": dict(f.attrs)})
    except ShardFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ShardFormatError(f"{path}: unreadable {kind} shard ({exc})") from exc


def write_cutout_shard(path: str | Path, shard: CutoutShard, attrs: dict[str, Any] | None = None) -> str:
    """Write `shard` atomically; returns its content hash (also stored as an attribute)."""
    n = len(shard)
    if shard.image_flux.shape[:2] != (n, len(shard.bands)):
        raise ValueError(f"image_flux shape {shard.image_flux.shape} does not match {n} objects x {len(shard.bands)} bands")
    digest = shard.content_hash()
    _write_shard(path, CUTOUT_FORMAT, shard, CUTOUT_COLUMNS, {**(attrs or {}), **shard.attrs, "content_hash": digest})
    return digest


PREFETCH_CHUNK = 4 << 20
"""Bytes per read-ahead request of `prefetch`: Linux reads at most its readahead window (a few MB)
per POSIX_FADV_WILLNEED call, so a whole shard takes one call per chunk."""


def prefetch(path: str | Path) -> bool:
    """Ask the kernel to start reading `path` into its page cache (POSIX_FADV_WILLNEED) and return at
    once: a later read of the file then comes from memory. Best effort: False where the platform has
    no fadvise or the file cannot be opened (its reader reports that)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        for offset in range(0, os.fstat(fd).st_size, PREFETCH_CHUNK):
            advise(fd, offset, PREFETCH_CHUNK, os.POSIX_FADV_WILLNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read_cutout_shard(path: str | Path) -> CutoutShard:
    """Read a cutout shard; ShardFormatError names the file when it is not one."""
    shard = _read_shard(path, CUTOUT_FORMAT, "cutout", CUTOUT_COLUMNS,
                        lambda fields: CutoutShard(**{**fields, "bands": tuple(fields["bands"])}))
    n = len(shard)
    if not (len(shard.ra) == len(shard.dec) == len(shard.magzp) == len(shard.image_flux) == n) \
            or shard.image_flux.ndim != 4 or shard.image_flux.shape[1] != len(shard.bands):
        raise ShardFormatError(f"{path}: inconsistent field lengths or image_flux shape {shard.image_flux.shape}")
    return shard


@dataclass
class SpectraShard:
    """Predicted spectra of one shard (row i = object i)."""

    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    """(N, P) float32 normalised flux."""
    sigma: np.ndarray
    wave: np.ndarray
    """(P,) wavelength grid [Angstrom], stored once."""
    z: np.ndarray | None = None
    """(N,) predicted redshift, when the model gives one."""
    z_err: np.ndarray | None = None
    z_used: np.ndarray | None = None
    """(N,) redshift `flux` was decoded at (rest-frame bundles: the input z where given, else `z`)."""
    rest_wave: np.ndarray | None = None
    """(R,) rest-frame vacuum wavelength grid [Angstrom] of `rest_flux` (rest-frame bundles), stored once."""
    rest_flux: np.ndarray | None = None
    """(N, R) float32 rest-frame prediction, normalised like `flux`."""
    rest_sigma: np.ndarray | None = None
    """(N, R) float32 1-sigma of `rest_flux`."""
    norm_mag: np.ndarray | None = None
    """(N,) float32 magnitude of the flux normalisation (the cutout shard's rKronMag; NaN: none)."""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.object_id)


SPECTRA_COLUMNS = (("object_id", "object_id", str), ("ra", "ra", np.float64), ("dec", "dec", np.float64),
                   ("flux", "flux", np.float32), ("sigma", "sigma", np.float32), ("wave", "wave", np.float64),
                   ("z", "z_pred", np.float32), ("z_err", "z_pred_err", np.float32), ("z_used", "z_used", np.float32),
                   ("rest_wave", "rest_wave", np.float64), ("rest_flux", "rest_flux", np.float32),
                   ("rest_sigma", "rest_sigma", np.float32), ("norm_mag", "norm_mag", np.float32))
"""Datasets of a spectra shard (field, dataset name, dtype); the rest-frame ones only from a rest-frame bundle."""


def write_spectra_shard(path: str | Path, shard: SpectraShard) -> None:
    """Write predicted spectra atomically (the file under its final name is complete)."""
    _write_shard(path, SPECTRA_FORMAT, shard, SPECTRA_COLUMNS, shard.attrs)


def read_spectra_shard(path: str | Path) -> SpectraShard:
    """Read a spectra shard; ShardFormatError names the file when it is not one."""
    return _read_shard(path, SPECTRA_FORMAT, "spectra", SPECTRA_COLUMNS, lambda fields: SpectraShard(**fields))


def read_attrs(path: str | Path) -> dict[str, Any] | None:
    """A shard's attributes, or None when the file is missing or unreadable (cheap: no data read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return None


def iter_parts(root: str | Path) -> Iterator[tuple[int, Path, str]]:
    """(healpix, path, path relative to root) for every shard under root."""
    for healpix, path in list_parts(root):
        yield healpix, path, path.relative_to(root).as_posix()


@dataclass
class LatentShard:
    """What the spectra of one shard are a function of (row i = predicted object i, shard order).

    `survey.read` decodes it with the bundle named by `attrs['bundle_hash']`: rows with the same
    `decode_group` were decoded together in the survey (one call, in row order), and are again."""

    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    latent_mu: np.ndarray
    """(N, L) float32 predicted latent mean."""
    latent_std: np.ndarray
    """(N, L) float32 latent 1-sigma the spectrum's sigma is propagated from."""
    decode_group: np.ndarray
    """(N,) int32: rows decoded in one call share a value."""
    z: np.ndarray | None = None
    """(N,) float32 predicted redshift (CNN with a redshift head)."""
    z_err: np.ndarray | None = None
    """(N,) float32 calibrated 1-sigma of `z`: the width a rest-frame decoder averages over."""
    z_used: np.ndarray | None = None
    """(N,) float32 redshift decoded at (rest-frame bundles)."""
    z_given: np.ndarray | None = None
    """(N,) bool: `z_used` is the shard's (catalogue) z, decoded exactly at it (rest-frame bundles)."""
    photometry_used: np.ndarray | None = None
    """(N,) bool: a hybrid bundle saw the object's catalogue photometry."""
    norm_mag: np.ndarray | None = None
    """(N,) float32 magnitude of the flux normalisation (NaN: none)."""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.object_id)


LATENT_COLUMNS = (("object_id", "object_id", str), ("ra", "ra", np.float64), ("dec", "dec", np.float64),
                  ("latent_mu", "latent_mu", np.float32), ("latent_std", "latent_std", np.float32),
                  ("decode_group", "decode_group", np.int32), ("z", "z_pred", np.float32),
                  ("z_err", "z_pred_err", np.float32), ("z_used", "z_used", np.float32), ("z_given", "z_given", bool),
                  ("photometry_used", "photometry_used", bool), ("norm_mag", "norm_mag", np.float32))
"""Datasets of a latent shard (field, dataset name, dtype), optional ones written when not None."""


def write_latent_shard(path: str | Path, shard: LatentShard) -> None:
    """Write a latent shard atomically (the file under its final name is complete)."""
    n = len(shard)
    if shard.latent_mu.shape != shard.latent_std.shape or len(shard.latent_mu) != n or len(shard.decode_group) != n:
        raise ValueError(f"latent shard: {n} objects, latent_mu {shard.latent_mu.shape}, "
                         f"latent_std {shard.latent_std.shape}, decode_group {np.shape(shard.decode_group)}")
    _write_shard(path, LATENT_FORMAT, shard, LATENT_COLUMNS, shard.attrs)


def read_latent_shard(path: str | Path) -> LatentShard:
    """Read a latent shard; ShardFormatError names the file when it is not one."""
    return _read_shard(path, LATENT_FORMAT, "latent", LATENT_COLUMNS, lambda fields: LatentShard(**fields))
