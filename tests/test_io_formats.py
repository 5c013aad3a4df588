import numpy as np
import pytest
from astropy.io import fits

from img2spec.io.ps1_cutout import Cutout, CutoutFormatError, read_cutout, write_cutout
from img2spec.io.sdss_spectrum import (
    SDSSSpectrum, SpectrumFormatError, read_spectrum, sdss_loglam_grid, write_spectrum,
)
from img2spec.paths import spec_filename


def test_sdss_grid_matches_design():
    grid = sdss_loglam_grid()
    assert np.allclose(np.diff(grid), 1e-4)
    assert 10 ** grid[0] >= 3800 and 10 ** grid[-1] <= 9200
    assert len(grid) == 3840  # log10 multiples of 1e-4 inside 3800-9200 A


def test_spectrum_round_trip(tmp_path):
    grid = sdss_loglam_grid()
    rng = np.random.default_rng(0)
    spec = SDSSSpectrum(
        loglam=grid, flux=rng.normal(10, 1, grid.size), ivar=np.full(grid.size, 4.0),
        and_mask=np.zeros(grid.size, int), z=0.08, plate=266, mjd=51630, fiberid=7,
        ra=150.1, dec=2.2, extra={"OBJID": "1237648720693755918", "ZWARNING": 0},
    )
    path = tmp_path / spec_filename(266, 51630, 7)
    assert path.name == "spec-0266-51630-0007.fits"
    write_spectrum(path, spec)
    with fits.open(path) as hdul:
        assert hdul[1].name == "COADD" and hdul[2].name == "SPECOBJ"
        assert hdul[2].data["OBJID"][0] == "1237648720693755918"
    back = read_spectrum(path)
    assert back.plate == 266 and back.fiberid == 7 and back.z == pytest.approx(0.08)
    assert np.allclose(back.flux, spec.flux, rtol=1e-6)
    assert not list(tmp_path.glob(".*tmp"))


def test_reader_on_real_sdss_dr18_file():
    ppxf = pytest.importorskip("ppxf")
    from pathlib import Path

    path = Path(ppxf.__file__).parent / "spectra" / "NGC3522_SDSS_DR18.fits"
    spec = read_spectrum(path)
    assert spec.z == pytest.approx(0.00401801, rel=1e-5)
    assert len(spec.flux) == 3815
    assert 10 ** spec.loglam[0] == pytest.approx(3826.9, abs=1) and 10 ** spec.loglam[-1] == pytest.approx(9208.0, abs=2)
    assert (spec.plate, spec.mjd, spec.fiberid) == (2488, 54149, 1)


def test_reader_names_the_bad_file(tmp_path):
    bad = tmp_path / "spec-0001-00001-0001.fits"
    bad.write_bytes(b"SIMPLE  =  T" + b"\0" * 100)
    with pytest.raises(SpectrumFormatError, match=str(bad.name)):
        read_spectrum(bad)


def test_cutout_round_trip_by_band_name(tmp_path):
    rng = np.random.default_rng(1)
    data = {b: rng.normal(i, 1, (16, 16)).astype(np.float32) for i, b in enumerate("grizy")}
    cut = Cutout(objid=42, ra=10.0, dec=-1.0, data=data, magzp={b: 25 + 2.5 * np.log10(100.0) for b in "grizy"})
    path = tmp_path / "42.fits"
    write_cutout(path, cut)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["G", "R", "I", "Z", "Y"]
    back = read_cutout(path)
    assert back.objid == 42
    assert np.array_equal(back.stack()[..., 4], data["y"])
    assert back.magzp["g"] == pytest.approx(30.0)


def test_cutout_missing_band_is_named(tmp_path):
    data = {b: np.zeros((8, 8), np.float32) for b in "griz"}
    path = tmp_path / "7.fits"
    write_cutout(path, Cutout(objid=7, ra=0, dec=0, data=data, magzp={b: 30.0 for b in "griz"}))
    with pytest.raises(CutoutFormatError, match="band y missing"):
        read_cutout(path)
