"""Per-chunk work of the prepare stage (runs in worker processes).

A chunk is a list of objects; for each the worker reads the spectrum and the
cutout, prepares both, and either keeps the object or records one reason to
drop it. Any failure to read or check one object, including a file in another
product's layout (the io readers' `FileFormatError`, with its stable `reason`), is
a `Skip`: one bad file never stops the stage.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..config.prepare import PrepareParams
from ..io.errors import FileFormatError
from ..io.fastfits import fast_read_cutout, fast_read_spectrum
from ..io.ps1_cutout import BAD_IMAGE_HEADER, CORRUPT_IMAGE, IMAGE_WRONG_LAYOUT, MISSING_BAND, Cutout, read_cutout
from ..io.sdss_spectrum import SDSSSpectrum, read_spectrum
from .images import check_image, sky_level_and_sigma, to_nanomaggies
from .spectra import LogGrid, prepare_spectrum, prepare_truth

log = logging.getLogger(__name__)

WRONG_IMAGE_SHAPE = "wrong_image_shape"
"""Reason code: a band is not data.cutout_size pixels square."""
UNEXPECTED_ERROR = "unexpected_error"
"""Reason code: reading or checking this object raised something no check anticipated (detail: type, message)."""


class Skip(Exception):
    """This object is dropped for `reason` (counted and listed, never silent)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class WorkerConfig:
    prepare: PrepareParams
    grid: LogGrid
    bands: tuple[str, ...]
    cutout_size: int
    truth_path: str | None = None
    truth_loglam: np.ndarray | None = None


@dataclass(frozen=True)
class ObjectTask:
    objid: int
    specpath: str
    imagepath: str
    ra: float
    dec: float
    norm: float
    truth_row: int = -1


@dataclass
class ChunkResult:
    keep: list[int] = field(default_factory=list)  # positions in the chunk
    flux: list[np.ndarray] = field(default_factory=list)
    ivar: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # nanomaggies, stretched later
    truth: list[np.ndarray] = field(default_factory=list)
    info: list[dict] = field(default_factory=list)
    dropped: list[tuple[int, str, str, str]] = field(default_factory=list)  # (position, file, reason, detail)


def load_spectrum(path: str) -> SDSSSpectrum:
    """Fast reader, else the io reader; any unreadable or foreign file is a Skip with the reader's reason."""
    spec = fast_read_spectrum(path)
    if spec is not None:
        return spec
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's truncation warnings: we report the skip ourselves
            return read_spectrum(path)
    except FileFormatError as exc:
        raise Skip(exc.reason, str(exc)) from None


def load_cutout(path: str, bands: tuple[str, ...], size: int) -> Cutout:
    """Fast reader, else the io reader; an unreadable file, a missing band or a wrong size is a Skip."""
    cut = fast_read_cutout(path, bands)
    if cut is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cut = read_cutout(path, bands)
        except FileFormatError as exc:
            raise Skip(exc.reason, str(exc)) from None
    for band in bands:
        if cut.data[band].shape != (size, size):
            raise Skip(WRONG_IMAGE_SHAPE, f"{path}: band {band} is {cut.data[band].shape}, "
                                          f"expected data.cutout_size={size} square")
    return cut


def angular_sep_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle separation (haversine), arcsec."""
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(min(1.0, h)))) * 3600.0)


def process_object(cfg: WorkerConfig, task: ObjectTask, truth: np.ndarray | None):
    """(flux, ivar, nanomaggy image, truth or None, info) for one object, or raise Skip."""
    p = cfg.prepare
    spec = load_spectrum(task.specpath)
    sep = angular_sep_arcsec(spec.ra, spec.dec, task.ra, task.dec)
    if not sep <= p.match_tolerance_arcsec:
        raise Skip("spectrum_position_mismatch", f"PLUG_RA/DEC {sep:.2f} arcsec from the catalogue")
    if cfg.grid.frame == "rest" and not (np.isfinite(spec.z) and spec.z > -1):
        raise Skip("bad_redshift", f"Z={spec.z}")
    prepared = prepare_spectrum(spec, cfg.grid, p, task.norm)
    if prepared.good_fraction == 0:
        raise Skip("no_good_pixels")
    if prepared.good_fraction < p.min_good_fraction:
        raise Skip("few_good_pixels", f"good fraction {prepared.good_fraction:.3f} < {p.min_good_fraction}")
    cut = load_cutout(task.imagepath, cfg.bands, cfg.cutout_size)
    nmgy = to_nanomaggies(cut.stack(cfg.bands), [cut.magzp[b] for b in cfg.bands])
    level, sigma = sky_level_and_sigma(nmgy)
    reason = check_image(nmgy, cut.pixel_scale, p.images, sky_level=level)
    if reason:
        raise Skip(reason)
    truth_flux = None
    if truth is not None:
        if task.truth_row < 0:
            raise Skip("missing_truth", "objid not in truth/params.parquet")
        truth_flux = prepare_truth(truth[task.truth_row], cfg.truth_loglam, spec.z, cfg.grid, task.norm)
    info = {
        "good_fraction": prepared.good_fraction,
        "snr_median": prepared.snr_median,
        "spec_z": spec.z,
        "sky_sigma": sigma,
    }
    return prepared.flux, prepared.ivar, nmgy, truth_flux, info


def process_chunk(cfg: WorkerConfig, tasks: list[ObjectTask]) -> ChunkResult:
    """Prepare every object of a chunk; every failure of one object is a recorded Skip."""
    truth = np.load(cfg.truth_path, mmap_mode="r") if cfg.truth_path else None
    out = ChunkResult()
    for pos, task in enumerate(tasks):
        try:
            flux, ivar, img, tflux, info = process_object(cfg, task, truth)
        except Skip as skip:
            file = task.imagepath if skip.reason in _IMAGE_REASONS else task.specpath
            out.dropped.append((pos, file, skip.reason, skip.detail))
            continue
        except MemoryError:
            raise  # the machine's problem, not this object's
        except Exception as exc:  # noqa: BLE001
            # The contract: one object never stops the stage. Counted and listed with the
            # exception, so a systematic bug shows as a wall of identical skips, not as silence.
            log.warning("objid %s: unexpected %s while preparing it", task.objid, type(exc).__name__, exc_info=True)
            out.dropped.append((pos, task.specpath, UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}"))
            continue
        out.keep.append(pos)
        out.flux.append(flux)
        out.ivar.append(ivar)
        out.images.append(img)
        out.info.append(info)
        if tflux is not None:
            out.truth.append(tflux)
    return out


_IMAGE_REASONS = {CORRUPT_IMAGE, MISSING_BAND, IMAGE_WRONG_LAYOUT, BAD_IMAGE_HEADER, WRONG_IMAGE_SHAPE,
                  "nan_centre", "saturated_centre", "off_centre"}
