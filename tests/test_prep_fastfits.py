"""The fast FITS path returns exactly what the io readers return, or hands over to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ppxf

from img2spec.io.ps1_cutout import read_cutout, write_cutout
from img2spec.io.sdss_spectrum import read_spectrum, write_spectrum
from img2spec.io.fastfits import fast_read_cutout, fast_read_spectrum
from img2spec.prep.synthetic import make_cutout, make_spectrum, synthetic_objects

NGC3522 = Path(ppxf.__file__).parent / "spectra" / "NGC3522_SDSS_DR18.fits"


def _same_spectrum(a, b):
    for k in ("loglam", "flux", "ivar", "and_mask"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    for k in ("z", "plate", "mjd", "fiberid", "ra", "dec", "cls"):
        assert getattr(a, k) == getattr(b, k), k


def test_spectra_match_astropy(tmp_path):
    rng = np.random.default_rng(0)
    path = write_spectrum(tmp_path / "spec-0001-00002-0003.fits", make_spectrum(synthetic_objects(1)[0], rng))
    for p in (path, NGC3522):
        fast = fast_read_spectrum(p)
        assert fast is not None
        _same_spectrum(fast, read_spectrum(p))


def test_cutouts_match_astropy(tmp_path):
    obj = synthetic_objects(1)[0]
    path = write_cutout(tmp_path / "1.fits", make_cutout(obj, 32, np.random.default_rng(0)))
    fast, ref = fast_read_cutout(path), read_cutout(path)
    assert fast is not None
    assert fast.objid == ref.objid == obj.objid
    for b in "grizy":
        assert np.array_equal(fast.data[b], ref.data[b]) and fast.data[b].dtype == np.float32
        assert fast.magzp[b] == ref.magzp[b]
    assert fast.pixel_scale == ref.pixel_scale


def test_damaged_or_foreign_files_fall_back(tmp_path):
    rng = np.random.default_rng(0)
    path = write_spectrum(tmp_path / "s.fits", make_spectrum(synthetic_objects(1)[0], rng))
    data = path.read_bytes()
    (tmp_path / "trunc.fits").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.fits").write_bytes(b"not a fits file" * 300)
    assert fast_read_spectrum(tmp_path / "trunc.fits") is None
    assert fast_read_spectrum(tmp_path / "junk.fits") is None
    assert fast_read_cutout(path) is None  # a spectrum is no cutout
