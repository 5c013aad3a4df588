"""The real-data source stages against local fake services (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).parent))
from fake_services import FakeServices, cutout_pixels, exptime_for, make_catalogue  # noqa: E402

from img2spec import BANDS  # noqa: E402
from img2spec.io.ps1_cutout import read_cutout  # noqa: E402
from img2spec.io.sdss_spectrum import read_spectrum  # noqa: E402
from img2spec.paths import Paths, spec_filename  # noqa: E402
from img2spec.sources import run_source_stage  # noqa: E402
from img2spec.sources.sdss import stages  # noqa: E402
from img2spec.sources.sdss.http import FetchError, Fetcher, parse_retry_after  # noqa: E402
from img2spec.sources.sdss.ps1images import ASINH_ALPHA, linearise  # noqa: E402
from img2spec.sources.sdss.runner import TooManyFailures  # noqa: E402
from img2spec.sources.sdss.spectra import spectrum_url  # noqa: E402


@pytest.fixture
def objects():
    return make_catalogue(10)


@pytest.fixture
def svc(objects):
    with FakeServices(objects, sleep_s=1.0) as s:
        yield s


def _fname(o) -> str:
    return spec_filename(o.plate, o.mjd, o.fiberid)


def _select(svc, root: Path, **sdss) -> Paths:
    paths = Paths(root)
    stages.select(svc.params(**sdss), paths)
    return paths


def _no_temporaries(directory: Path) -> bool:
    return not list(directory.glob(".*"))


# --- select --------------------------------------------------------------------------
def test_select_pages_writes_contract_and_reports_truncation(svc, objects, tmp_path):
    paths = Paths(tmp_path)
    report = stages.select(svc.params(page_size=4), paths)
    cands = stages.read_candidates(paths.candidates)
    assert report["pages"] == 3 and report["n_candidates"] == len(objects) == len(cands)
    assert report["truncated_at_max_rows"] is False
    assert cands["objid"].dtype == np.int64 and cands["objid"].is_unique
    assert set(cands["objid"]) == {o.objid for o in objects}  # 19-digit ids survive exactly
    assert set(cands["specobjid"]) == {o.specobjid for o in objects}
    for col in ("specobjid", "ra", "dec", "z", "plate", "mjd", "fiberid", "run2d"):
        assert col in cands.columns
    assert "no noiseless truth" in (paths.truth_dir / "README.txt").read_text()

    report = stages.select(svc.params(page_size=4, max_rows=6), paths)
    assert report["n_candidates"] == 6 and report["truncated_at_max_rows"] is True
    # exactly max_rows with nothing left is not a truncation
    report = stages.select(svc.params(page_size=5, max_rows=len(objects)), paths)
    assert report["truncated_at_max_rows"] is False


def test_select_retries_500_429_truncated_and_error_page(svc, objects, tmp_path):
    svc.add_fault("x_results", "500", "429", "truncate", "html")
    t0 = time.monotonic()
    report = stages.select(svc.params(http={"max_tries": 5}), Paths(tmp_path))
    assert time.monotonic() - t0 >= 1.0  # Retry-After: 1 was honoured
    assert report["n_candidates"] == len(objects)
    assert report["http_retries"] == 4


def test_select_empty_result_and_permanent_failure(svc, tmp_path):
    svc.add_fault("x_results", "empty")
    report = stages.select(svc.params(), Paths(tmp_path))
    assert report["n_candidates"] == 0
    assert list(pd.read_csv(Paths(tmp_path).candidates).columns)[:2] == ["objid", "specobjid"]
    svc.add_fault("x_results", "500*")
    with pytest.raises(FetchError, match="gave up after 4 tries"):
        stages.select(svc.params(), Paths(tmp_path / "b"))


def test_select_sql_has_a_total_deadline(svc, objects, tmp_path):
    """A server that trickles the SQL answer byte by byte (each read quick) is cut at
    `http.total_timeout_s` and retried, like any download; the retry completes."""
    svc.add_fault("x_results", "trickle")
    t0 = time.monotonic()
    report = stages.select(svc.params(http={"total_timeout_s": 0.5, "read_timeout_s": 2.0}), Paths(tmp_path))
    assert report["n_candidates"] == len(objects) and report["http_retries"] == 1
    assert time.monotonic() - t0 < 5.0  # the trickled body alone would take minutes


def test_select_goes_through_astroquery_with_the_sql(svc, tmp_path):
    _select(svc, tmp_path)
    assert svc.hits["sql"] == 1  # astroquery called the DR16 x_results endpoint of the base URL


# --- spectra -------------------------------------------------------------------------
def test_spectrum_url_legacy_and_eboss():
    from img2spec.config import params_from_dict

    p = params_from_dict({}).sdss
    assert spectrum_url(p, 266, 51602, 1, "26") == (
        "https://data.sdss.org/sas/dr16/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits")
    assert "/dr16/eboss/spectro/redux/v5_13_0/spectra/lite/9001/spec-9001-58000-0037.fits" in spectrum_url(
        p, 9001, 58000, 37, "v5_13_0")


def test_fetch_spectra_faults_retry_or_fail_never_corrupt(svc, objects, tmp_path):
    paths = _select(svc, tmp_path)
    for o, kind in zip(objects, ("500", "429", "sleep", "truncate", "wronghdu", "503")):
        svc.add_fault(_fname(o), kind)
    dead, bad = objects[6], objects[7]
    svc.add_fault(_fname(dead), "500*")
    svc.add_fault(_fname(bad), "wronghdu*")
    report = run_source_stage("fetch_spectra", svc.params(), paths)
    assert report["fetched"] == len(objects) - 2 and report["failed"] == 2
    failures = pd.read_csv(paths.reports / "fetch_spectra_failures.csv")
    assert set(failures["objid"]) == {dead.objid, bad.objid}
    row = failures.set_index("objid").loc[dead.objid]
    assert row["status"] == 500 and _fname(dead) in row["url"]
    assert "bad content" in failures.set_index("objid").loc[bad.objid, "reason"]
    assert _no_temporaries(paths.spectra_dir)
    files = sorted(paths.spectra_dir.glob("spec-*.fits"))
    assert len(files) == len(objects) - 2
    for o in objects[:6]:
        spec = read_spectrum(paths.spectrum_file(o.plate, o.mjd, o.fiberid))
        assert (spec.plate, spec.mjd, spec.fiberid) == (o.plate, o.mjd, o.fiberid)
        assert spec.z == pytest.approx(o.z)


def test_fetch_spectra_threshold_fails_stage_but_writes_table(svc, objects, tmp_path):
    paths = _select(svc, tmp_path)
    svc.add_fault(_fname(objects[0]), "404")
    svc.add_fault(_fname(objects[1]), "404")
    with pytest.raises(TooManyFailures, match="2 of 10"):
        stages.fetch_spectra(svc.params(max_failure_fraction=0.1), paths)
    failures = pd.read_csv(paths.reports / "fetch_spectra_failures.csv")
    # each 404 was injected once: a retry would have succeeded, so failing proves 404 is final
    assert list(failures["status"]) == [404, 404]


def test_fetch_spectra_resume_keeps_good_refetches_corrupt(svc, objects, tmp_path):
    paths = _select(svc, tmp_path)
    stages.fetch_spectra(svc.params(), paths)
    first = {p.name: p.read_bytes() for p in paths.spectra_dir.glob("spec-*.fits")}
    corrupt = paths.spectrum_file(objects[0].plate, objects[0].mjd, objects[0].fiberid)
    corrupt.write_bytes(corrupt.read_bytes()[:3000])
    paths.spectrum_file(objects[1].plate, objects[1].mjd, objects[1].fiberid).unlink()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (paths.spectra_dir / f".spec-0001-00001-0001.fits.tmp-{dead.pid}-abc.tmp").write_bytes(b"partial")
    live = paths.spectra_dir / f".spec-0002-00002-0002.fits.tmp-{os.getpid()}-abc.tmp"
    live.write_bytes(b"a live writer's file")  # a concurrent run's temporary is not touched
    hits = svc.hits["sas"]
    report = stages.fetch_spectra(svc.params(), paths)
    assert (report["present"], report["refetched"], report["fetched"]) == (len(objects) - 2, 1, 1)
    assert report["stale_temporaries_removed"] == 1
    assert svc.hits["sas"] - hits == 2
    assert {p.name: p.read_bytes() for p in paths.spectra_dir.glob("spec-*.fits")} == first
    assert live.exists()
    live.unlink()
    assert _no_temporaries(paths.spectra_dir)


# --- images --------------------------------------------------------------------------
def test_fetch_images_linear_counts_zero_points_and_faults(svc, objects, tmp_path):
    paths = _select(svc, tmp_path)
    svc.add_fault(f"unconv.{objects[0].objid}", "wronghdu")
    svc.add_fault(f"stk.r.unconv.{objects[1].objid}", "truncate", "sleep")
    svc.add_fault(f"ra={objects[2].ra:.7f}", "empty*")  # no stack image at that position
    report = stages.fetch_images(svc.params(), paths)
    assert report["fetched"] == len(objects) - 1 and report["failed"] == 1
    failures = pd.read_csv(paths.reports / "fetch_images_failures.csv")
    assert list(failures["objid"]) == [objects[2].objid]
    assert "no PS1 stack image" in failures["reason"][0]
    assert _no_temporaries(paths.images_dir)
    for o in (objects[0], objects[1], objects[5]):
        cut = read_cutout(paths.image_file(o.objid))
        assert cut.objid == o.objid
        for band in BANDS:
            np.testing.assert_array_equal(cut.data[band], cutout_pixels(o.objid, band, 16))
            assert cut.magzp[band] == pytest.approx(25 + 2.5 * np.log10(exptime_for(band)))
    again = stages.fetch_images(svc.params(), paths)
    assert again["present"] == len(objects) - 1


def test_linearise_inverts_ps1_asinh_compression():
    rng = np.random.default_rng(0)
    linear = rng.normal(100, 40, (8, 8))
    boffset, bsoften = float(linear.mean()), float(np.sqrt(ASINH_ALPHA) * linear.std())
    # forward transform as the PS1 IPP wiki states it: C = alpha asinh((L - BOFFSET) / (2 BSOFTEN))
    compressed = ASINH_ALPHA * np.arcsinh((linear - boffset) / (2 * bsoften))
    header = fits.Header({"BSOFTEN": bsoften, "BOFFSET": boffset})
    np.testing.assert_allclose(linearise(compressed, header), linear, rtol=1e-5)
    assert linearise(compressed, fits.Header()) is compressed  # cutouts without the keywords: unchanged


# --- photometry ----------------------------------------------------------------------
@pytest.mark.parametrize("table", ["stack", "mean"])
def test_fetch_photometry_nearest_match_and_missing_values(svc, objects, tmp_path, table):
    paths = _select(svc, tmp_path)
    svc.add_fault(f"ra={objects[3].ra:.7f}", "empty")
    svc.add_fault(f"ra={objects[4].ra:.7f}", "429", "html")
    report = stages.fetch_photometry(svc.params(photometry_table=table), paths)
    assert report["fetched"] == len(objects) - 1 and report["no_match"] == 1 and report["failed"] == 0
    phot = pd.read_csv(paths.photometry)
    assert phot["objid"].dtype == np.int64 and len(phot) == len(objects) - 1
    assert objects[3].objid not in set(phot["objid"])
    assert (phot["ps1_objid"] % 10 == 0).all()  # the 0.3" counterpart, not the 4" neighbour
    assert phot["sep_arcsec"].between(0.29, 0.31).all()
    by_id = phot.set_index("objid")
    for o in objects:
        if o.objid in by_id.index:
            assert by_id.loc[o.objid, "gKronMag"] == pytest.approx(o.mag_g, abs=1e-3)
            assert np.isnan(by_id.loc[o.objid, "yKronMag"]) == (o.objid % 7 == 0)  # -999 -> NaN


def test_fetch_photometry_resumes_from_existing_table(svc, objects, tmp_path):
    paths = _select(svc, tmp_path)
    stages.fetch_photometry(svc.params(), paths)
    first = paths.photometry.read_bytes()
    hits = svc.hits["mast"]
    report = stages.fetch_photometry(svc.params(), paths)
    assert report["present"] == len(objects) and svc.hits["mast"] == hits
    assert paths.photometry.read_bytes() == first


# --- the fetcher itself ----------------------------------------------------------------
def test_retry_after_parsing_and_backoff_bounds():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    from img2spec.config.sdss import HTTPParams

    f = Fetcher(HTTPParams(backoff_base_s=0.5, backoff_max_s=3.0), seed=1)
    delays = [f.backoff(k) for k in range(8) for _ in range(20)]
    assert min(delays) >= 0 and max(delays) <= 3.0 and max(delays) > 1.0


def test_rate_limit_spaces_requests(svc, tmp_path):
    from img2spec.config.sdss import HTTPParams

    f = Fetcher(HTTPParams(rate_per_s=20.0))
    t0 = time.monotonic()
    for _ in range(6):
        f.get(f"{svc.url}/cgi-bin/ps1filenames.py", params={"ra": 0, "dec": 0})
    assert time.monotonic() - t0 >= 5 / 20.0 * 0.95
    f.close()
