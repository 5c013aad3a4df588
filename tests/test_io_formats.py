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


# --- every damaged or foreign file is one FileFormatError with a stable reason ---

def _hdul_bytes(*hdus) -> bytes:
    import io

    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(buf)
    return buf.getvalue()


def _good_spectrum(tmp_path):
    grid = sdss_loglam_grid()
    spec = SDSSSpectrum(loglam=grid, flux=np.ones(grid.size), ivar=np.ones(grid.size),
                        and_mask=np.zeros(grid.size, int), z=0.07, plate=1, mjd=2, fiberid=3, ra=1.0, dec=2.0)
    return write_spectrum(tmp_path / "good.fits", spec)


def _bad_spectra(tmp_path) -> dict[str, tuple[bytes, str]]:
    good = _good_spectrum(tmp_path).read_bytes()
    with fits.open(tmp_path / "good.fits") as h:
        specobj = h["SPECOBJ"].copy()
        no_ivar = fits.BinTableHDU.from_columns([c for c in h["COADD"].columns if c.name != "ivar"], name="COADD")
        vector = fits.BinTableHDU.from_columns(
            [fits.Column(n, "100E", array=np.ones((1, 100))) for n in ("flux", "loglam", "ivar", "and_mask")], name="COADD")
        text_z = fits.BinTableHDU.from_columns(
            [fits.Column(c.name, "3A", array=np.array(["abc"])) if c.name == "Z" else c for c in h["SPECOBJ"].columns],
            name="SPECOBJ")
        coadd = h["COADD"].copy()
    other = (fits.BinTableHDU.from_columns([fits.Column("WAVELENGTH", "E", array=np.ones(4)),
                                            fits.Column("FLUX", "E", array=np.ones(4))]),
             fits.BinTableHDU.from_columns([fits.Column("REDSHIFT", "E", array=np.ones(1))]))
    return {
        "truncated": (good[: len(good) // 3], "corrupt_spectrum"),
        "truncated_in_header": (good[:4000], "corrupt_spectrum"),
        "garbage": (b"SIMPLE  = garbage" * 200, "corrupt_spectrum"),
        "empty": (b"", "corrupt_spectrum"),
        "image_hdus": (_hdul_bytes(fits.ImageHDU(np.ones((3, 3))), fits.ImageHDU(np.ones((3, 3)))), "spectrum_wrong_layout"),
        "image_hdus_named": (_hdul_bytes(fits.ImageHDU(np.ones((3, 3)), name="COADD"),
                                         fits.ImageHDU(np.ones((3, 3)), name="SPECOBJ")), "spectrum_wrong_layout"),
        "primary_only": (_hdul_bytes(), "spectrum_wrong_layout"),
        "other_survey_columns": (_hdul_bytes(*other), "spectrum_missing_columns"),
        "coadd_lacks_ivar": (_hdul_bytes(no_ivar, specobj), "spectrum_missing_columns"),
        "vector_columns": (_hdul_bytes(vector, specobj), "spectrum_wrong_layout"),
        "z_as_text": (_hdul_bytes(coadd, text_z), "spectrum_wrong_layout"),
    }


def test_every_bad_spectrum_is_a_format_error_with_a_reason(tmp_path):
    from img2spec.io.errors import FileFormatError
    from img2spec.io.fastfits import fast_read_spectrum

    for name, (body, reason) in _bad_spectra(tmp_path).items():
        path = tmp_path / f"spec-{name}.fits"
        path.write_bytes(body)
        assert fast_read_spectrum(path) is None, name  # the fast path never accepts what io rejects
        with pytest.raises(FileFormatError) as info:
            read_spectrum(path)
        assert isinstance(info.value, SpectrumFormatError) and isinstance(info.value, ValueError)
        assert (name, info.value.reason) == (name, reason) and path.name in str(info.value)


def test_fast_reader_survives_a_garbage_size(tmp_path):
    from img2spec.io.fastfits import fast_read_spectrum

    body = bytearray(_good_spectrum(tmp_path).read_bytes())
    at = body.find(b"NAXIS2  =", 2880)  # COADD's row count
    body[at:at + 80] = b"NAXIS2  = " + b"999999999999999999".rjust(20) + b" " * 50
    (tmp_path / "huge.fits").write_bytes(bytes(body))
    assert fast_read_spectrum(tmp_path / "huge.fits") is None
    with pytest.raises(SpectrumFormatError) as info:
        read_spectrum(tmp_path / "huge.fits")
    assert info.value.reason == "corrupt_spectrum"


def test_every_bad_cutout_is_a_format_error_with_a_reason(tmp_path):
    from img2spec.io.fastfits import fast_read_cutout

    data = {b: np.ones((8, 8), np.float32) for b in "grizy"}
    good = write_cutout(tmp_path / "1.fits", Cutout(objid=1, ra=0, dec=0, data=data, magzp={b: 30.0 for b in "grizy"}))
    body = good.read_bytes()

    def bands(**cards):
        hdus = []
        for b in "grizy":
            hdu = fits.ImageHDU(np.ones((8, 8), np.float32), name=b.upper())
            hdu.header.update(cards)
            hdus.append(hdu)
        return _hdul_bytes(*hdus)

    def _single_band():
        import io

        buf = io.BytesIO()
        fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(buf)
        return buf.getvalue()

    cases = {
        "truncated": (body[: len(body) // 2], "corrupt_image"),
        "garbage": (b"\x00garbage" * 300, "corrupt_image"),
        "tables": (_hdul_bytes(*[fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.ones(2))], name=b.upper())
                                 for b in "grizy"]), "image_wrong_layout"),
        "cube": (_hdul_bytes(*[fits.ImageHDU(np.ones((2, 4, 4), np.float32), name=b.upper()) for b in "grizy"]),
                 "image_wrong_layout"),
        "single_band_service_file": (_single_band(), "missing_band"),  # what the PS1 cutout service returns
        "exptime_zero": (bands(EXPTIME=0.0), "bad_image_header"),
        "exptime_text": (bands(EXPTIME="long"), "bad_image_header"),
        "magzp_nan": (bands(MAGZP="nan"), "bad_image_header"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / f"{name}.fits"
        path.write_bytes(content)
        assert fast_read_cutout(path) is None, name
        with pytest.raises(CutoutFormatError) as info:
            read_cutout(path)
        assert (name, info.value.reason) == (name, reason) and path.name in str(info.value)


def test_format_error_keeps_reason_across_processes():
    import pickle

    err = pickle.loads(pickle.dumps(SpectrumFormatError("x.fits: COADD lacks columns ['ivar']",
                                                        "spectrum_missing_columns", "x.fits")))
    assert err.reason == "spectrum_missing_columns" and str(err).startswith("x.fits") and err.path.name == "x.fits"
    assert SpectrumFormatError("legacy message").reason == "spectrum_wrong_layout"


def test_one_reason_for_one_kind_of_bad_file_and_no_astropy_hints(tmp_path):
    """A PNG named .fits is `corrupt_image` whichever reader meets it (predict's 5-band reader,
    pack's header scan), and the message carries no advice meant for astropy's API users."""
    from img2spec.io.fastfits import fast_read_cutout
    from img2spec.io.ps1_single import scan_file

    png = tmp_path / "123.fits"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    errors = []
    for read in (read_cutout, lambda p: scan_file(p, ("g", "r", "i", "z", "y"))):
        with pytest.raises(CutoutFormatError) as info:
            read(png)
        errors.append(info.value)
    assert [e.reason for e in errors] == ["corrupt_image", "corrupt_image"]
    assert fast_read_cutout(png) is None
    with pytest.raises(SpectrumFormatError) as spec:
        read_spectrum(png)
    for e in (*errors, spec.value):
        assert "123.fits" in str(e) and "ignore_missing" not in str(e) and "If this is really" not in str(e)


def test_padding_after_the_last_hdu_is_not_truncation(tmp_path):
    """An image-HDU file with bytes after its last HDU (an unpadded tail some services write) is
    reported for what it is (a single-band image: no band extensions, no COADD table); only a
    file shorter than its HDUs claim is truncated."""
    path = tmp_path / "single_g.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(path)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 100)
    with pytest.raises(CutoutFormatError) as cut:
        read_cutout(path)
    assert cut.value.reason == "missing_band" and "truncated" not in str(cut.value)
    with pytest.raises(SpectrumFormatError) as spec:
        read_spectrum(path)
    assert spec.value.reason == "spectrum_wrong_layout" and "truncated" not in str(spec.value)
    short = tmp_path / "short.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((64, 64), np.float32), name="G")]).writeto(short)
    short.write_bytes(short.read_bytes()[:-2880])
    with pytest.raises(CutoutFormatError) as cut_short:
        read_cutout(short)
    assert cut_short.value.reason == "corrupt_image"
