"""Read a survey: `open_survey(OUT)` -> the catalogue as a Dask DataFrame and the spectra of any
selection, decoded on read from the latents of a `compact` survey (or read from the files of a
`spectra` one).

    survey = open_survey("survey/")                     # the bundle recorded in survey.json
    survey.catalogue                                    # dask.dataframe over catalogue/healpix=*/...
    s = survey.spectra("z_pred < 0.1 and bpt_class == 2")   # a pandas query on the catalogue
    s = survey.spectra(["1237...", "1238..."])          # object ids
    s = survey.spectra(healpix=1234)                    # one HEALPix pixel
    s.flux, s.sigma, s.wave, s.rest_flux, s.rest_sigma, s.rest_wave

`spectra` returns NumPy arrays, decoded when it is called (memory: the selection's spectra,
~14 KB per object with sigma); `iter_spectra` yields them one output shard at a time for
selections too big for memory. Only the shards holding selected objects are read, and only the
decode groups (`store.decode_rows`) holding them are decoded: the same rows in the same calls as
the survey's workers, with the same function, so the spectra equal what `--store spectra` writes.
Shards are decoded `parallel` at a time on threads (one per core by default: the decode is
NumPy, SciPy FFT and ONNX Runtime work that runs outside the GIL) and come back in shard order;
each call inside keeps the workers' thread counts, so parallel reading changes no bit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pandas as pd

from ..io.ordered import in_order
from ..io.shards import LatentShard, list_parts, read_attrs, read_latent_shard, read_spectra_shard
from ..models.inference import hold_blas_threads
from ..predict.bundle_info import locate_bundle
from ..predict.predictor import BatchResult, Predictor
from .store import StoreError, decode_predictor, decode_rows, store_of, take_rows
from .task import CATALOGUE_DIR

log = logging.getLogger(__name__)
SURVEY_REPORT = "survey.json"
SELECT_COLUMNS = ("object_id", "shard", "predicted")
"""Catalogue columns every selection reads (the query's own columns come with them)."""


T = TypeVar("T")
R = TypeVar("R")


def default_parallel() -> int:
    """Shards decoded at once by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], parallel: int) -> Iterator[R]:
    """`map(fn, items)` on `parallel` threads, results in the order of `items`, at most `parallel`
    calls running or finished and not yet taken (memory: that many results); `parallel` 1: in this thread."""
    if parallel <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="img2spec-decode") as pool:
        yield from in_order(lambda x: pool.submit(fn, x), items, parallel)


class BundleMismatchError(StoreError):
    """The bundle given to decode a survey is not the one that wrote it."""


@dataclass
class SurveySpectra:
    """Spectra of a selection, row i = object i of `catalogue` (the selection's catalogue rows)."""

    catalogue: pd.DataFrame
    """The selected predicted objects' catalogue rows (every column), in the order of the arrays."""
    wave: np.ndarray
    """(P,) observed-frame wavelength grid [Angstrom] of `flux`."""
    result: BatchResult
    """flux, sigma (NaN when decoded without), z, z_err, z_used, z_given, rest_* as `predict` gives them."""
    norm_mag: np.ndarray
    """(N,) float32 magnitude of the flux normalisation (NaN: none): flux x `catalogue.norm` is 1e-17 erg/s/cm^2/A."""
    predictor: Predictor
    """The bundle with the options the spectra were decoded with (FITS headers name it)."""

    def __len__(self) -> int:
        return len(self.catalogue)

    @property
    def object_id(self) -> np.ndarray:
        return self.catalogue["object_id"].to_numpy()

    @property
    def flux(self) -> np.ndarray:
        """(N, P) float32 normalised flux."""
        return self.result.flux

    @property
    def sigma(self) -> np.ndarray:
        """(N, P) float32 1-sigma of `flux` (NaN when read with `with_sigma=False`)."""
        return self.result.sigma

    @property
    def rest_wave(self) -> np.ndarray | None:
        """(R,) rest-frame vacuum grid of a rest-frame bundle, else None."""
        return self.result.rest_wave

    @property
    def rest_flux(self) -> np.ndarray | None:
        return self.result.rest_flux

    @property
    def rest_sigma(self) -> np.ndarray | None:
        return self.result.rest_sigma


class Survey:
    """An `img2spec survey` output directory with the bundle that decodes it (`open_survey`)."""

    def __init__(self, out_dir: Path, predictor: Predictor, bundle_hash: str, parallel: int | None = None) -> None:
        self.out_dir = out_dir
        self.predictor = predictor
        self.bundle_hash = bundle_hash
        self.parallel = default_parallel() if parallel is None else max(1, int(parallel))
        """Output shards decoded at once (threads)."""
        self._decoders: dict[tuple[str, int], Predictor] = {}
        self._decoders_lock = threading.Lock()

    @property
    def catalogue(self):
        """The catalogue parts as one Dask DataFrame (`healpix` partition column included)."""
        import dask.dataframe as dd

        return dd.read_parquet(str(self.out_dir / CATALOGUE_DIR))

    def select(self, selection: str | Sequence[str] | None = None, *, healpix: int | None = None) -> pd.DataFrame:
        """Catalogue rows (every column) of the predicted objects of a selection: a pandas query
        string, a list of object ids (StoreError naming unknown or unpredicted ones), `healpix=N`,
        or everything when neither is given; sorted by output shard, then shard order (ids: as given)."""
        if healpix is not None:
            part = self.out_dir / CATALOGUE_DIR / f"healpix={int(healpix)}"
            rows = pd.read_parquet(part) if part.is_dir() else pd.DataFrame(columns=list(SELECT_COLUMNS))
        else:
            rows = None
        if isinstance(selection, str):
            frame = self.catalogue if rows is None else rows
            try:
                rows = frame.query(selection)
                rows = rows.compute() if hasattr(rows, "compute") else rows
            except Exception as exc:  # pandas/numexpr raise many kinds for a bad query string
                raise StoreError(f"query {selection!r} on {self.out_dir / CATALOGUE_DIR}: {exc}") from exc
        elif selection is not None:
            ids = [str(i) for i in selection]
            frame = self.catalogue if rows is None else rows
            rows = frame[frame["object_id"].isin(ids)]
            rows = rows.compute() if hasattr(rows, "compute") else rows
            missing = sorted(set(ids) - set(rows["object_id"]))
            unpredicted = sorted(set(rows.loc[~rows["predicted"].astype(bool), "object_id"]))
            if missing or unpredicted:
                raise StoreError(f"{self.out_dir}: {len(missing)} object id(s) not in the catalogue "
                                 f"{missing[:5]}, {len(unpredicted)} skipped (no spectrum) {unpredicted[:5]}")
            rows = rows.drop_duplicates("object_id").set_index("object_id", drop=False).loc[ids].reset_index(drop=True)
            return rows
        elif rows is None:
            rows = self.catalogue.compute()
        rows = rows[rows["predicted"].astype(bool)] if len(rows) else rows
        return rows.sort_values("shard", kind="stable").reset_index(drop=True)

    def spectra(self, selection: str | Sequence[str] | None = None, *, healpix: int | None = None,
                with_sigma: bool = True) -> SurveySpectra:
        """The spectra of a selection (see `select`) as NumPy arrays, in the order of `select`.
        `with_sigma=False` decodes the flux alone (sigma NaN): no Jacobian or latent draws, several times faster."""
        rows = self.select(selection, healpix=healpix)
        parts = list(self.decode_selected(rows, with_sigma))
        if not parts:
            empty = rows.iloc[:0]
            return SurveySpectra(empty, self.predictor.wave, BatchResult(
                flux=np.zeros((0, len(self.predictor.wave)), np.float32),
                sigma=np.zeros((0, len(self.predictor.wave)), np.float32)), np.zeros(0, np.float32), self.predictor)
        order = np.concatenate([p[0] for p in parts])
        result = BatchResult.concat([p[1].result for p in parts])
        back = np.empty(len(order), np.int64)
        back[order] = np.arange(len(order))
        norm_mag = np.concatenate([p[1].norm_mag for p in parts])[back]
        return SurveySpectra(rows, self.predictor.wave, take_rows(result, back), norm_mag, parts[0][1].predictor)

    def iter_spectra(self, selection: str | Sequence[str] | None = None, *, healpix: int | None = None,
                     with_sigma: bool = True) -> Iterator[SurveySpectra]:
        """`spectra` one output shard at a time (memory: one shard's selected spectra)."""
        for _, part in self.decode_selected(self.select(selection, healpix=healpix), with_sigma):
            yield part

    def decode_selected(self, rows: pd.DataFrame, with_sigma: bool = True) -> Iterator[tuple[np.ndarray, SurveySpectra]]:
        """(positions in `rows`, their spectra) per output shard in shard order, for catalogue rows
        from `select`; `parallel` shards decoded at once."""
        if not len(rows):
            return

        def one(item: tuple[Any, np.ndarray]) -> tuple[np.ndarray, SurveySpectra]:
            rel, idx = item
            return np.asarray(idx), self._read_shard(str(rel), rows.iloc[idx].reset_index(drop=True), with_sigma)

        shards = list(rows.groupby("shard", sort=True).indices.items())
        # the tail's BLAS count set from this thread for the whole read (also while the caller
        # handles a yielded shard): the decoding threads join it instead of setting their own
        with hold_blas_threads(self.predictor.decoder):
            yield from ordered_map(one, shards, min(self.parallel, len(shards)))

    def _read_shard(self, rel: str, rows: pd.DataFrame, with_sigma: bool) -> SurveySpectra:
        path = self.out_dir / rel
        attrs = read_attrs(path)
        store = store_of(attrs)
        if store is None:
            raise StoreError(f"{path}: no survey output shard for these catalogue rows (missing or unreadable)")
        if attrs.get("bundle_hash") != self.bundle_hash:
            raise BundleMismatchError(
                f"{path}: written by bundle {attrs.get('bundle_hash')}, decoding with bundle {self.bundle_hash} "
                f"({self.predictor.bundle_dir}); give the bundle that wrote it (model=...)")
        shard = read_latent_shard(path) if store == "compact" else read_spectra_shard(path)
        index = pd.Index(shard.object_id)
        if not index.is_unique:
            raise StoreError(f"{path}: duplicate object ids in one shard; select by healpix or query instead")
        where = index.get_indexer(rows["object_id"].astype(str))
        if (where < 0).any():
            raise StoreError(f"{path}: {int((where < 0).sum())} selected object(s) missing from the shard")
        if isinstance(shard, LatentShard):
            predictor = self._decoder(attrs, path)
            result = decode_rows(predictor, shard, where, with_sigma=with_sigma)
        else:
            predictor = self.predictor.with_options(sigma_method=str(attrs.get("sigma_method", self.predictor.sigma_method)))
            result = take_rows(BatchResult(flux=shard.flux, sigma=shard.sigma, z=shard.z, z_err=shard.z_err,
                                           z_used=shard.z_used, rest_wave=shard.rest_wave, rest_flux=shard.rest_flux,
                                           rest_sigma=shard.rest_sigma), where)
            if result.z_used is not None:  # a spectra shard keeps no given flag: it is the catalogue's z source
                result.z_given = (rows["z_lines_source"] == "catalogue").to_numpy()
        norm_mag = np.full(len(rows), np.nan, np.float32) if shard.norm_mag is None else shard.norm_mag[where]
        return SurveySpectra(rows, self.predictor.wave, result, norm_mag, predictor)

    def _decoder(self, attrs: dict[str, Any], path: Path) -> Predictor:
        key = (str(attrs["sigma_method"]), int(attrs["n_samples"]))
        with self._decoders_lock:  # shards decode on several threads
            if key not in self._decoders:
                self._decoders[key] = decode_predictor(self.predictor, attrs, str(path))
            return self._decoders[key]


def survey_report(out_dir: str | Path) -> dict[str, Any]:
    """`survey.json` of a survey output directory; StoreError when there is none."""
    path = Path(out_dir) / SURVEY_REPORT
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: not a readable survey report ({exc}); is {out_dir} an `img2spec survey` output?") \
            from exc


def workers_runtime(out_dir: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(runtime, (intra-op, inter-op) threads) the survey's workers decoded with, from its first
    latent shard; (None, None) when none records them (a spectra store, an older output)."""
    for _, path in list_parts(out_dir):
        attrs = read_attrs(path) or {}
        if store_of(attrs) == "compact" and "runtime_threads" in attrs:
            intra, inter = (int(t) for t in attrs["runtime_threads"])
            return str(attrs.get("runtime")), (intra, inter)
    return None, None


def open_survey(out_dir: str | Path, model: str | Path | Predictor | None = None, *,
                threads: tuple[int, int] | None = None, parallel: int | None = None) -> Survey:
    """A survey output directory and the bundle that decodes it.

    `model`: a bundle directory, `models:/...` URI or loaded `Predictor`; None: the bundle path
    recorded in `survey.json`. Its hash must be the survey's (`survey.json`, and each shard's stamp
    when read): BundleMismatchError names both hashes and the path otherwise. The networks run on
    the runtime the workers used, with `threads` (intra-op, inter-op) threads; None: the workers'
    threads (1 by default), on which the decoded values are the workers' bit for bit (more threads
    sum the decoder's products in another order: float32 rounding). A loaded `Predictor` is used
    as it is. `parallel`: output shards decoded at once, on threads (None: one per core); it
    changes the speed, never the values."""
    out_dir = Path(out_dir)
    report = survey_report(out_dir)
    recorded = report.get("model", {})
    want = recorded.get("bundle_hash")
    if isinstance(model, Predictor):
        predictor = model
    else:
        where = model if model is not None else recorded.get("path")
        if where is None:
            raise StoreError(f"{out_dir / SURVEY_REPORT}: no bundle path recorded; give model=")
        runtime, workers = workers_runtime(out_dir)
        path, provenance = locate_bundle(where)
        predictor = Predictor.from_path(path, provenance=provenance, runtime=runtime, threads=threads or workers)
    if want is not None and predictor.bundle_hash != want:
        raise BundleMismatchError(
            f"{out_dir}: surveyed with bundle {want}, decoding with bundle {predictor.bundle_hash} "
            f"({predictor.bundle_dir}); give the bundle that wrote it (model=...)")
    return Survey(out_dir, predictor, want or predictor.bundle_hash, parallel)
