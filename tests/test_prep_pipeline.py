"""match + prepare end to end on small synthetic raw data, including every bad-input kind."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from img2spec.config import Params
from img2spec.config.data import DataParams
from img2spec.io.processed import ProcessedData
from img2spec.io.ps1_cutout import read_cutout, write_cutout
from img2spec.io.sdss_spectrum import read_spectrum, write_spectrum
from img2spec.prep.images import preprocess_cutout, sky_sigma, softening_from_sky, to_nanomaggies
from img2spec.prep.match import match
from img2spec.prep.npy import create_npy, shrink_npy, write_rows
from img2spec.prep.prepare import prepare
from img2spec.prep.synthetic import SyntheticObject, synthetic_objects, write_files, write_tables, write_truth
from img2spec.paths import Paths

N = 30


@pytest.fixture(scope="module")
def params():
    """Defaults (the repo's params.yaml may be tuned by others) with 64-pixel cutouts."""
    return Params().model_copy(update={"data": DataParams(cutout_size=64)})


@pytest.fixture(scope="module")
def clean_raw(tmp_path_factory):
    """A clean raw survey of N objects with mock truth."""
    root = tmp_path_factory.mktemp("clean")
    paths = Paths(root)
    objects = synthetic_objects(N, seed=3)
    write_files(paths, objects, size=64, seed=3)
    write_tables(paths, objects)
    write_truth(paths, objects)
    return root, objects


def _copy(clean_raw, tmp_path) -> tuple[Paths, list[SyntheticObject]]:
    root, objects = clean_raw
    shutil.copytree(root / "data", tmp_path / "data")
    return Paths(tmp_path), list(objects)


def _run(params, paths, **prep):
    if prep:
        params = params.model_copy(update={"prepare": params.prepare.model_copy(update=prep)})
    return match(params, paths), prepare(params, paths)


def test_round_trip_clean(clean_raw, tmp_path, params):
    paths, objects = _copy(clean_raw, tmp_path)
    mrep, prep = _run(params, paths, n_workers=1, chunk_size=8)
    assert mrep["n_matched"] == N and prep["n_out"] == N and prep["n_dropped"] == 0
    data = ProcessedData.open(paths.processed)
    cat = data.catalog
    assert len(data) == N and list(cat["objid"]) == sorted(o.objid for o in objects)
    assert data.flux.shape == (N, 1767) and data.ivar.shape == (N, 1767) and data.images.shape == (N, 64, 64, 5)
    assert data.truth_flux.shape == (N, 1767) and set(cat["galaxy_type"]) <= {"red", "green", "blue"}
    assert np.all(np.isfinite(data.flux)) and np.all(data.ivar >= 0) and np.all(np.isfinite(data.images))
    # Normalised spectra sit near 1 (model continuum at the r wavelength) and the noiseless truth agrees.
    good = data.ivar > 0
    resid = (data.flux - data.truth_flux) * np.sqrt(data.ivar)
    assert 0.5 < np.median(data.flux[good]) < 1.5
    assert np.std(resid[good]) == pytest.approx(1.0, rel=0.15)  # ivar propagation is honest
    # Put back into SDSS units, the spectrum matches the raw file.
    row = 0
    raw = read_spectrum(tmp_path / cat["specfile"][row])
    pix = np.searchsorted(data.wave, 6000.0)
    near = np.abs(10**raw.loglam - data.wave[pix]) < 2
    assert data.flux[row, pix] * cat["norm"][row] == pytest.approx(np.mean(raw.flux[near]), rel=0.2)
    # Images: the stored array is exactly preprocess_cutout(raw cutout, saved scaling).
    cut = read_cutout(tmp_path / cat["imagefile"][row])
    assert np.allclose(data.images[row], preprocess_cutout(cut, data.image_scaling), atol=1e-5)
    # The stretch constants come from the training split only.
    train = data.indices("train")
    sky = []
    for i in train:
        c = read_cutout(tmp_path / cat["imagefile"][i])
        sky.append(sky_sigma(to_nanomaggies(c.stack(), [c.magzp[b] for b in "grizy"])))
    assert np.allclose(data.image_scaling["softening"], softening_from_sky(np.array(sky), 1.0))
    assert np.allclose(data.images[train].mean(axis=(0, 1, 2)), 0, atol=1e-3)
    meta = data.meta
    assert meta["wave"]["n_pixels"] == 1767 and meta["norm"]["effective_wavelength_angstrom"] == 6201.2
    report = json.loads((paths.reports / "prepare.json").read_text())
    assert report["n_in"] == N and sum(report["splits"].values()) == N


def test_rerun_is_idempotent_and_parallel_matches_serial(clean_raw, tmp_path, params):
    paths, _ = _copy(clean_raw, tmp_path)
    _run(params, paths, n_workers=1, chunk_size=7)
    first = {k: np.load(paths.processed / f"{k}.npy") for k in ("flux", "ivar", "images", "truth_flux")}
    cat1 = pd.read_parquet(paths.processed / "catalog.parquet")
    _run(params, paths, n_workers=2, chunk_size=4)
    for k, arr in first.items():
        assert np.array_equal(np.load(paths.processed / f"{k}.npy"), arr), k
    pd.testing.assert_frame_equal(pd.read_parquet(paths.processed / "catalog.parquet"), cat1)
    leftovers = [p.name for p in paths.processed.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_every_bad_input_kind_is_counted_and_listed(clean_raw, tmp_path, params):
    paths, objects = _copy(clean_raw, tmp_path)
    spec = lambda o: paths.spectrum_file(o.plate, o.mjd, o.fiberid)  # noqa: E731
    # 0: truncated spectrum FITS
    data = spec(objects[0]).read_bytes()
    spec(objects[0]).write_bytes(data[: len(data) // 3])
    # 1: garbage instead of a spectrum
    spec(objects[1]).write_bytes(b"SIMPLE  = garbage" * 200)
    # 2: a spectrum with no good pixels
    s = read_spectrum(spec(objects[2]))
    s.ivar[:] = 0
    write_spectrum(spec(objects[2]), s)
    # 3: an image with a missing band
    c = read_cutout(paths.image_file(objects[3].objid))
    del c.data["y"]
    write_cutout(paths.image_file(objects[3].objid), c)
    # 4: a missing image file; 5: a missing spectrum file
    paths.image_file(objects[4].objid).unlink()
    spec(objects[5]).unlink()
    # 6: a duplicate object: a second, noisier spectrum of objects[6]
    twin = SyntheticObject(**{**objects[6].__dict__, "fiberid": 999})
    s6 = read_spectrum(spec(objects[6]))
    s6.ivar = s6.ivar / 100
    s6.fiberid = 999
    write_spectrum(spec(twin), s6)
    # 7: coordinates that match nothing (photometry row moved 1 deg away)
    # 8: photometry without the normalisation band (PS1's -999); 9-11: impossible or implausible magnitudes
    far = SyntheticObject(**{**objects[7].__dict__, "ra": objects[7].ra + 1.0})
    badmag = {8: ("r", -999.0), 9: ("r", 0.0), 10: ("g", -5.0), 11: ("z", 31.0)}
    changed = {k: SyntheticObject(**{**objects[k].__dict__, "mags": {**objects[k].mags, b: m}}) for k, (b, m) in badmag.items()}
    phot_objects = [far if o is objects[7] else changed.get(k, o) for k, o in enumerate(objects)]
    write_tables(paths, phot_objects)
    cand = pd.read_csv(paths.candidates)
    cand.loc[cand["objid"] == objects[7].objid, "ra"] = objects[7].ra  # candidate stays where the spectrum is
    cand = pd.concat([cand, cand[cand["objid"] == objects[6].objid].assign(fiberid=999, specobjid=1)])
    cand.to_csv(paths.candidates, index=False)

    mrep, prep = _run(params, paths, n_workers=1, chunk_size=8)
    assert mrep["dropped_by_reason"] == {"duplicate_object": 1, "missing_spectrum": 1, "no_photometry_match": 1,
                                         "missing_magnitude": 1, "nonpositive_magnitude": 2, "implausible_magnitude": 1}
    assert mrep["n_matched"] == N - 6  # 5, 7 and 8-11 gone; the duplicate of 6 resolved to one spectrum
    expected = {"corrupt_spectrum": 2, "no_good_pixels": 1, "missing_band": 1, "missing_image": 1}
    assert prep["dropped_by_reason"] == expected
    assert prep["n_in"] == N - 6 and prep["n_out"] == N - 6 - 5
    listed = {(d["objid"], d["reason"]) for d in prep["dropped"]}
    assert (objects[3].objid, "missing_band") in listed and (objects[0].objid, "corrupt_spectrum") in listed
    csv = pd.read_csv(paths.reports / "prepare_dropped.csv")
    assert len(csv) == 5 and set(csv["reason"]) == set(expected)
    mcsv = pd.read_csv(paths.reports / "match_dropped.csv")
    dup = mcsv[mcsv["reason"] == "duplicate_object"]
    assert dup["file"].iloc[0].endswith("-0999.fits")  # the noisier twin lost on S/N
    mags = mcsv.set_index("objid").loc[[objects[k].objid for k in badmag]]
    assert list(mags["reason"]) == ["missing_magnitude", "nonpositive_magnitude", "nonpositive_magnitude",
                                    "implausible_magnitude"]
    assert list(mags["detail"]) == ["rKronMag=-999.0", "rKronMag=0.0", "gKronMag=-5.0", "zKronMag=31.0"]
    assert len(ProcessedData.open(paths.processed)) == N - 11


def _fits_bytes(hdus) -> bytes:
    import io

    from astropy.io import fits

    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(buf)
    return buf.getvalue()


def test_foreign_and_damaged_files_are_counted_skips(clean_raw, tmp_path, params):
    """Other layouts and damage never stop prepare; each is a skip with a stable reason."""
    from astropy.io import fits

    paths, objects = _copy(clean_raw, tmp_path)
    spec = lambda o: paths.spectrum_file(o.plate, o.mjd, o.fiberid)  # noqa: E731
    img = lambda o: paths.image_file(o.objid)  # noqa: E731
    # 0: a 10x10 cutout
    c = read_cutout(img(objects[0]))
    c.data = {b: v[:10, :10] for b, v in c.data.items()}
    write_cutout(img(objects[0]), c)
    # 1: COADD without ivar
    with fits.open(spec(objects[1])) as h:
        cols = [col for col in h["COADD"].columns if col.name != "ivar"]
        body = _fits_bytes([fits.BinTableHDU.from_columns(cols, name="COADD"), h["SPECOBJ"].copy()])
    spec(objects[1]).write_bytes(body)
    # 2: a spectrum file holding only image HDUs (read as AttributeError before)
    spec(objects[2]).write_bytes(_fits_bytes([fits.ImageHDU(np.ones((5, 5)), name="FLUX"),
                                              fits.ImageHDU(np.ones((5, 5)), name="IVAR")]))
    # 3: another survey's tables (other column names)
    spec(objects[3]).write_bytes(_fits_bytes([
        fits.BinTableHDU.from_columns([fits.Column("WAVELENGTH", "E", array=np.ones(9)),
                                       fits.Column("FLUX", "E", array=np.ones(9))]),
        fits.BinTableHDU.from_columns([fits.Column("REDSHIFT", "E", array=np.ones(1))])]))
    # 4: a cutout whose bands are tables; 5: a truncated cutout; 6: EXPTIME = 0; 7: garbage
    img(objects[4]).write_bytes(_fits_bytes([fits.BinTableHDU.from_columns(
        [fits.Column("x", "E", array=np.ones(3))], name=b.upper()) for b in "grizy"]))
    data = img(objects[5]).read_bytes()
    img(objects[5]).write_bytes(data[: len(data) // 2])
    c = read_cutout(img(objects[6]))
    c.exptime, c.magzp = {b: 0.0 for b in c.data}, {b: 25.0 for b in c.data}
    write_cutout(img(objects[6]), c)
    with fits.open(img(objects[6])) as h:  # the writer keeps MAGZP; an EXPTIME-only file computes it
        for hdu in h[1:]:
            del hdu.header["MAGZP"]
        body = _fits_bytes(h[1:])
    img(objects[6]).write_bytes(body)
    img(objects[7]).write_bytes(b"\x00garbage" * 500)

    mrep, prep = _run(params, paths, n_workers=2, chunk_size=3)
    assert mrep["n_matched"] == N
    expected = {"wrong_image_shape": 1, "spectrum_missing_columns": 2, "spectrum_wrong_layout": 1,
                "image_wrong_layout": 1, "corrupt_image": 2, "bad_image_header": 1}
    assert prep["dropped_by_reason"] == expected
    assert prep["n_out"] == N - 8 and len(ProcessedData.open(paths.processed)) == N - 8
    by_obj = {d["objid"]: d for d in prep["dropped"]}
    assert by_obj[objects[0].objid]["file"] == paths.image_file(objects[0].objid).relative_to(tmp_path).as_posix()
    assert by_obj[objects[1].objid]["file"].endswith(spec(objects[1]).name)
    assert "ivar" in by_obj[objects[1].objid]["detail"] and "(10, 10)" in by_obj[objects[0].objid]["detail"]
    assert by_obj[objects[2].objid]["reason"] == "spectrum_wrong_layout"
    assert by_obj[objects[6].objid]["reason"] == "bad_image_header"


def test_missing_candidate_columns_name_the_file(clean_raw, tmp_path, params):
    paths, _ = _copy(clean_raw, tmp_path)
    pd.read_csv(paths.candidates).drop(columns=["plate"]).to_csv(paths.candidates, index=False)
    with pytest.raises(ValueError, match="candidates.csv.*plate"):
        match(params, paths)


def test_shrink_npy_keeps_leading_rows(tmp_path):
    path = tmp_path / "a.npy"
    create_npy(path, (50, 3, 2))
    write_rows(path, 0, np.arange(60, dtype=np.float32).reshape(10, 3, 2))
    shrink_npy(path, 10)
    arr = np.load(path, mmap_mode="r")
    assert arr.shape == (10, 3, 2) and arr[9, 2, 1] == 59
    assert path.stat().st_size < 50 * 6 * 4


@pytest.mark.slow  # MLflow's sqlite migrations alone take ~10-40 s on a busy 2-core machine
def test_prepare_logs_counts_to_mlflow(clean_raw, tmp_path, params, mlflow_uri):
    import mlflow

    from img2spec.tracking import PIPELINE_EXPERIMENT, STAGE_TAG

    paths, _ = _copy(clean_raw, tmp_path)
    match(params, paths)
    report = prepare(params, paths, track=True)
    mlflow.set_tracking_uri(mlflow_uri)
    exp = mlflow.get_experiment_by_name(PIPELINE_EXPERIMENT)  # stage runs live in the pipeline experiment
    runs = mlflow.search_runs([exp.experiment_id], f"tags.`{STAGE_TAG}` = 'prepare'")
    assert len(runs) == 1 and runs["metrics.n_out"].iloc[0] == report["n_out"] == N


def test_an_unexpected_error_in_one_object_is_a_counted_skip(clean_raw, tmp_path, params, monkeypatch):
    from img2spec.prep import worker

    paths, objects = _copy(clean_raw, tmp_path)
    victim = paths.spectrum_file(objects[4].plate, objects[4].mjd, objects[4].fiberid)
    real = worker.load_spectrum

    def load_spectrum(path):
        if path == str(victim):
            raise ZeroDivisionError("a bug that only this object triggers")
        return real(path)

    monkeypatch.setattr(worker, "load_spectrum", load_spectrum)
    _, prep = _run(params, paths, n_workers=1, chunk_size=8)
    assert prep["dropped_by_reason"] == {"unexpected_error": 1} and prep["n_out"] == N - 1
    (row,) = prep["dropped"]
    assert row["objid"] == objects[4].objid and row["detail"].startswith("ZeroDivisionError: a bug")


def test_prepare_with_nothing_left_is_a_run_error_naming_the_report(clean_raw, tmp_path, params):
    """Every cutout unreadable: prepare stops with the one error stages turn into exit 1 without a
    traceback (the stage script itself is the slow test below)."""
    from img2spec.io.errors import RunInputError

    paths, _ = _copy(clean_raw, tmp_path)
    match(params, paths)
    for f in paths.images_dir.glob("*.fits"):
        f.write_bytes(b"not a FITS file")
    with pytest.raises(RunInputError, match="0 objects survived.*prepare.json"):
        prepare(params, paths)
    assert json.loads((paths.reports / "prepare.json").read_text())["dropped_by_reason"]["corrupt_image"] > 0


@pytest.mark.slow  # a stage script in a fresh process (TensorFlow and MLflow imports, sqlite migrations): ~45 s
def test_prepare_stage_with_nothing_left_exits_1_without_traceback(clean_raw, tmp_path, params, mlflow_uri):
    """Every cutout unreadable: the stage script stops with exit 1 and a message naming the report."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    paths, _ = _copy(clean_raw, tmp_path)
    match(params, paths)
    for f in paths.images_dir.glob("*.fits"):
        f.write_bytes(b"not a FITS file")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    script = Path(__file__).resolve().parents[1] / "pipeline" / "prepare.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    proc = subprocess.run([sys.executable, str(script), "--root", str(tmp_path), "--params", str(params_file)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "0 objects survived" in proc.stderr and "prepare.json" in proc.stderr
