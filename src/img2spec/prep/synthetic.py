"""Small synthetic data sets for tests and the benchmark, written by the real writers.

Not the mock survey (that lives in `sources/mock` and does real population
synthesis): these are quick, analytic galaxies.
- raw contract (`write_raw` ...): a continuum with a 4000 A break and an H-alpha
  line, a round exponential blob, written through the io FITS writers, so that
  `match` and `prepare` can be exercised in seconds;
- `write_synthetic_processed`: THE fake of `data/processed/` (the only one: tests and
  benchmarks that need prepared data without running prepare use it). Its grid,
  meta.json and files come from the prepare stage's own `make_grid`,
  `processed_meta` and `io.processed` writer, so readers see exactly what prepare writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import BANDS
from ..config.constants import C_KMS, LINE_REST_VACUUM_A
from ..io.atomic import write_csv
from ..io.ps1_cutout import Cutout, magzp_for_exptime, write_cutout
from ..io.sdss_spectrum import SDSSSpectrum, sdss_loglam_grid, write_spectrum
from ..io.processed import SPLITS, write_processed
from ..paths import Paths
from .normalise import effective_wavelength, mag_to_flambda

EXPTIME_S = 600.0
SKY_SIGMA_COUNTS = 30.0
SPEC_NOISE = 0.05
"""Per-pixel noise as a fraction of the continuum."""
OBJID_BASE = 1237650000000000000
SPECOBJID_BASE = 300000000000000000


@dataclass
class SyntheticObject:
    objid: int
    ra: float
    dec: float
    z: float
    plate: int
    mjd: int
    fiberid: int
    mags: dict[str, float]


def synthetic_objects(n: int, seed: int = 0) -> list[SyntheticObject]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        r = float(rng.uniform(15.5, 17.5))
        colours = {"g": 0.8, "r": 0.0, "i": -0.35, "z": -0.6, "y": -0.75}
        out.append(SyntheticObject(
            objid=OBJID_BASE + 7919 * k, ra=150.0 + 0.01 * k, dec=2.0 + 0.003 * (k % 50),
            z=float(rng.uniform(0.05, 0.1)), plate=266 + k // 600, mjd=51630, fiberid=1 + k % 600,
            mags={b: r + c + float(rng.normal(0, 0.05)) for b, c in colours.items()},
        ))
    return out


def model_flux(obj: SyntheticObject, loglam: np.ndarray) -> np.ndarray:
    """Noiseless observed-frame f_lambda (1e-17 units) roughly matching the r magnitude."""
    wave = 10.0**loglam
    rest = wave / (1 + obj.z)
    cont = np.where(rest < 4000.0, 0.55, 1.0) * (rest / 6000.0) ** 0.5
    line = 3.0 * np.exp(-0.5 * ((rest - LINE_REST_VACUUM_A["halpha"]) / 3.0) ** 2)
    scale = float(mag_to_flambda(obj.mags["r"], "r"))
    return (scale * (cont + line)).astype(np.float64)


def make_spectrum(obj: SyntheticObject, rng: np.random.Generator) -> SDSSSpectrum:
    loglam = sdss_loglam_grid(3810.0, 9190.0)
    truth = model_flux(obj, loglam)
    sigma = SPEC_NOISE * np.median(truth)
    flux = truth + rng.normal(0, sigma, truth.shape)
    ivar = np.full(truth.shape, 1 / sigma**2)
    and_mask = np.zeros(truth.shape, np.int32)
    return SDSSSpectrum(loglam=loglam, flux=flux, ivar=ivar, and_mask=and_mask, z=obj.z, plate=obj.plate,
                        mjd=obj.mjd, fiberid=obj.fiberid, ra=obj.ra, dec=obj.dec,
                        extra={"OBJID": obj.objid})


def make_cutout(obj: SyntheticObject, size: int, rng: np.random.Generator, offset_pix: tuple[float, float] = (0, 0)) -> Cutout:
    """An exponential disc of the object's magnitudes, plus Gaussian sky noise, in counts."""
    zp = magzp_for_exptime(EXPTIME_S)
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r = np.hypot(yy - c - offset_pix[0], xx - c - offset_pix[1])
    profile = np.exp(-r / 4.0)
    profile /= profile.sum()
    data = {}
    for b in BANDS:
        total = 10 ** (-0.4 * (obj.mags[b] - zp))
        data[b] = (total * profile + rng.normal(0, SKY_SIGMA_COUNTS, profile.shape)).astype(np.float32)
    return Cutout(objid=obj.objid, ra=obj.ra, dec=obj.dec, data=data, magzp={b: zp for b in BANDS},
                  exptime={b: EXPTIME_S for b in BANDS}, seeing={b: 1.1 for b in BANDS})


def write_files(paths: Paths, objects: list[SyntheticObject], size: int = 64, seed: int = 0,
                link_images: int = 0) -> None:
    """Write each object's spectrum and cutout files.

    `link_images` > 0 writes only that many distinct cutouts and hard-links the
    rest to them (the benchmark's 36,000 objects without 3 GB of image writes; the
    bytes read are the same). Spectra are always distinct.
    """
    rng = np.random.default_rng(seed)
    for d in (paths.spectra_dir, paths.images_dir):
        d.mkdir(parents=True, exist_ok=True)
    for k, obj in enumerate(objects):
        write_spectrum(paths.spectrum_file(obj.plate, obj.mjd, obj.fiberid), make_spectrum(obj, rng))
        img_path = paths.image_file(obj.objid)
        if link_images and k >= link_images:
            img_path.unlink(missing_ok=True)
            os.link(paths.image_file(objects[k % link_images].objid), img_path)
        else:
            write_cutout(img_path, make_cutout(obj, size, rng))


def write_raw(root: Path, objects: list[SyntheticObject], size: int = 64, seed: int = 0,
              truth: bool = False) -> Paths:
    """Write candidates.csv, spectra, images and photometry.csv (and truth/) under `root`."""
    paths = Paths(Path(root))
    write_files(paths, objects, size, seed)
    write_tables(paths, objects)
    if truth:
        write_truth(paths, objects)
    return paths


def write_tables(paths: Paths, objects: list[SyntheticObject], extra_candidates: list[SyntheticObject] = ()) -> None:
    cand = pd.DataFrame([{
        "objid": o.objid, "specobjid": SPECOBJID_BASE + k, "ra": o.ra, "dec": o.dec, "z": o.z,
        "plate": o.plate, "mjd": o.mjd, "fiberid": o.fiberid,
    } for k, o in enumerate([*objects, *extra_candidates])])
    write_csv(paths.candidates, cand)
    phot = pd.DataFrame([{
        "objid": o.objid, "ps1_objid": 100000000000000000 + k, "ra": o.ra, "dec": o.dec,
        **{f"{b}KronMag": o.mags[b] for b in BANDS}, **{f"{b}KronMagErr": 0.01 for b in BANDS},
    } for k, o in enumerate(objects)])
    write_csv(paths.photometry, phot)


def write_truth(paths: Paths, objects: list[SyntheticObject]) -> None:
    paths.truth_dir.mkdir(parents=True, exist_ok=True)
    loglam = sdss_loglam_grid()
    types = ("red", "green", "blue")
    pd.DataFrame({"objid": [o.objid for o in objects],
                  "galaxy_type": [types[k % 3] for k in range(len(objects))]}).to_parquet(
        paths.truth_dir / "params.parquet", index=False)
    np.save(paths.truth_dir / "fibre_spectra.npy",
            np.stack([model_flux(o, loglam) for o in objects]).astype(np.float32))


# ------------------------------------------------------------------ data/processed
SYN_WAVE = (3800.0, 9200.0)
"""Grid range (Angstrom) of the synthetic processed set, in its frame."""
LINE_REST = 6563.0
LINE_WIDTH_A = 30.0


def synthetic_params(n_pix: int, size: int, frame: str = "observed", norm_band: str = "r"):
    """Params whose prepare grid has exactly `n_pix` pixels over SYN_WAVE (and `size` cutouts)."""
    from ..config import params_from_dict

    step = C_KMS * float(np.log(SYN_WAVE[1] / SYN_WAVE[0])) / n_pix
    return params_from_dict({
        "data": {"cutout_size": size},
        "prepare": {"frame": frame, "norm_band": norm_band, "wave_min": SYN_WAVE[0],
                    "wave_max": SYN_WAVE[1] * (1 + 1e-9), "velocity_step_kms": step},
    }, "synthetic processed params")


def write_synthetic_processed(root: str | Path, n: int = 120, n_pix: int = 96, size: int = 16, seed: int = 0,
                              mask_fraction: float = 0.05, *, frame: str = "observed", norm_band: str = "r",
                              split_fractions: tuple[float, float] = (0.6, 0.2), poison_test: float | None = None,
                              images: np.ndarray | None = None, image_scaling: dict | None = None) -> Path:
    """Write a `data/processed/` directory with `n` objects into `root`; returns `root`.

    Two hidden parameters per galaxy (a colour-like slope `a` and an emission-line
    strength `b`) drive both the spectrum and the 5-band image, so a CNN can learn the
    mapping. Noise, masked pixels (garbage flux under ivar = 0) and a noiseless
    `truth_flux` follow the contract. `frame="rest"` puts every object on one rest grid
    (the line at LINE_REST for all); observed puts the line at LINE_REST (1 + z).
    `poison_test` replaces the test rows' flux and images by that (finite) value with
    normal ivar: any training, tuning or calibration that reads them blows up its loss.
    `images` / `image_scaling` replace the analytic images (e.g. real preprocessed cutouts).
    """
    from .prepare import processed_meta
    from .spectra import make_grid

    params = synthetic_params(n_pix, size, frame, norm_band)
    grid = make_grid(params.prepare)
    if grid.n_pixels != n_pix:
        raise RuntimeError(f"synthetic grid has {grid.n_pixels} pixels, asked for {n_pix}")
    wave = grid.centres
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, n)
    b = rng.uniform(0, 1, n)
    z = rng.uniform(0.05, 0.1, n)
    x = (wave - wave.mean()) / np.ptp(wave)
    line_at = LINE_REST * (np.ones(n) if frame == "rest" else 1 + z)
    line = np.exp(-0.5 * ((wave[None, :] - line_at[:, None]) / LINE_WIDTH_A) ** 2)
    truth = (1.0 + 0.8 * a[:, None] * x[None, :] + 2.0 * b[:, None] * line).astype(np.float32)
    sigma = rng.uniform(0.03, 0.08, (n, 1)) * np.ones((1, n_pix))
    flux = (truth + sigma * rng.standard_normal((n, n_pix))).astype(np.float32)
    ivar = (1.0 / sigma**2).astype(np.float32)
    ivar[rng.random((n, n_pix)) < mask_fraction] = 0.0
    # Garbage under masks (NaN and huge values); prepare itself interpolates there, so
    # this is stricter than real data: nothing may read flux where ivar = 0.
    flux[ivar == 0] = np.where(rng.random(int((ivar == 0).sum())) < 0.5, np.nan, 1e6)
    if images is None:
        yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
        r2 = (xx**2 + yy**2)[None, :, :, None]
        width = (1.5 + b)[:, None, None, None] * size / 16
        colour = np.linspace(-1, 1, 5)[None, None, None, :] * a[:, None, None, None]
        images = (np.exp(-0.5 * r2 / width**2) * (1 + 0.5 * colour)
                  + 0.02 * rng.standard_normal((n, size, size, 5))).astype(np.float32)
        image_scaling = image_scaling or {"stretch": "synthetic (already stretched)", "bands": list(BANDS)}
    elif image_scaling is None:
        raise ValueError("write_synthetic_processed: `images` needs its `image_scaling`")
    images = np.array(images, np.float32)
    f_train, f_val = split_fractions
    split = np.array([SPLITS[0]] * n, dtype=object)
    order = rng.permutation(n)
    n_val, n_test = round(f_val * n), n - round(f_train * n) - round(f_val * n)
    split[order[:n_val]] = "val"
    split[order[n_val:n_val + n_test]] = "test"
    mags = 17.0 - 0.3 * a[:, None] * np.linspace(-1, 1, 5)[None, :] + rng.normal(0, 0.02, (n, 5))
    cat = pd.DataFrame({"objid": np.arange(n, dtype=np.int64) + 1000, "split": split.astype(str), "z": z,
                        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 10, n)})
    for i, band in enumerate(BANDS):
        cat[f"mag_{band}"] = mags[:, i]
        cat[f"magerr_{band}"] = 0.01
    cat["norm"] = mag_to_flambda(cat[f"mag_{norm_band}"].to_numpy(), norm_band)
    cat["specfile"] = [f"spec-{i}.fits" for i in range(n)]
    cat["imagefile"] = [f"{o}.fits" for o in cat["objid"]]
    cat["galaxy_type"] = np.where(a > 0.3, "red", np.where(a < -0.3, "blue", "green"))
    if poison_test is not None:
        test = split == "test"
        flux[test] = poison_test
        images[test] = poison_test
    return write_processed(root, wave=wave, flux=flux, ivar=ivar, images=images, catalog=cat,
                           image_scaling=image_scaling, meta=processed_meta(params, grid, cat, True),
                           truth_flux=truth)


__all__ = ["SyntheticObject", "synthetic_objects", "write_raw", "write_files", "write_tables", "write_truth",
           "make_spectrum", "make_cutout", "model_flux", "effective_wavelength", "write_synthetic_processed",
           "synthetic_params"]
