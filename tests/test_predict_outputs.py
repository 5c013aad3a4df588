"""What `img2spec predict` writes, as other tools and file systems see it: long object ids,
FITS units and headers, specutils, file permissions, the catalogue input."""

from __future__ import annotations

import json
import os
import stat
import warnings

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from img2spec.config import params_from_dict
from img2spec.io.ps1_cutout import read_cutout, write_cutout
from img2spec.paths import Paths
from test_predict_support import build_project, galaxy_cutout

LONG = "J" + "0123456789" * 30  # a 301-character OBJID


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root, n=6)
    build_bundle(params_from_dict({"publish": {"batch_size": 4, "registry": False}}), Paths(root))
    return root, facts, Predictor.from_path(root / "models" / "img2spec")


def test_long_object_ids_get_safe_unique_names_and_stay_whole(env, tmp_path):
    """A 300-character OBJID once ended the run with `File name too long` and no summary.json."""
    from img2spec.io.fastfits import fast_read_cutout
    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor = env
    rng = np.random.default_rng(3)
    ids = [LONG + "A", LONG + "B", "a/b", "a_b"]  # the first two share 301 characters; the last two sanitise alike
    files = []
    for k, objid in enumerate(ids):
        cut = galaxy_cutout(k, rng)
        cut.objid = objid
        files.append(write_cutout(tmp_path / f"in{k}.fits", cut))
    # the fast reader keeps the whole id (FITS long-string CONTINUE cards), as astropy does
    for path, objid in zip(files, ids):
        assert fast_read_cutout(path).objid == read_cutout(path).objid == objid
    out = tmp_path / "out"
    summary = run_predict(predictor, files, RunOptions(out_dir=out, table=out / "all.fits", plot=True))
    assert summary.n_predicted == 4 and not summary.skipped
    assert json.loads((out / "summary.json").read_text())["n_predicted"] == 4
    fits_files = sorted(out.glob("spec-pred-*.fits"))
    assert len(fits_files) == 4 and len({p.name for p in fits_files}) == 4
    assert all(len(p.name) < 160 for p in fits_files)
    assert len(list(out.glob("spec-pred-*.png"))) == 4
    by_id = {fits.getheader(p)["OBJID"]: p for p in fits_files}
    assert set(by_id) == set(ids)  # whole ids in the header (long-string keyword)
    for objid, path in by_id.items():
        with fits.open(path) as hdul:
            assert hdul["SPECOBJ"].data["OBJID"][0] == objid
    with fits.open(out / "all.fits") as hdul:
        assert sorted(hdul["PREDICTIONS"].data["OBJID"]) == sorted(ids)


def test_output_stem_is_unique_and_short():
    from img2spec.predict.writers import output_stem

    assert output_stem("1237648720693755918") == "spec-pred-1237648720693755918"
    stems = {output_stem(i) for i in (LONG + "A", LONG + "B", "a/b", "a_b", "a b", "../x")}
    assert len(stems) == 6
    assert all("/" not in s and len(s) < 130 for s in stems)


def _fits_unit(text: str) -> u.UnitBase:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unparseable unit warns before it fails
        return u.Unit(text, format="fits")


def test_units_headers_permissions_and_specutils(env, tmp_path):
    from specutils import Spectrum

    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor = env
    cut0, cut1 = facts["cutouts"][:2]
    cat = tmp_path / "catalogue.csv"
    pd.DataFrame({"objid": [cut0.objid], "rKronMag": [16.0], "z": [0.08]}).to_csv(cat, index=False)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        run_predict(predictor, facts["files"][:2], RunOptions(out_dir=out, catalogue=cat, table=out / "t.fits"))
    finally:
        os.umask(old)
    calibrated, normalised = out / f"spec-pred-{cut0.objid}.fits", out / f"spec-pred-{cut1.objid}.fits"
    direct = predictor.predict(facts["images"][:2])
    norm = float(predictor.norm_from_mag(16.0))
    for path in (calibrated, normalised, out / "t.fits", out / "summary.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # not mkstemp's 0600

    for path, unit in ((calibrated, u.Unit("1e-17 erg / (s cm2 Angstrom)")), (normalised, u.dimensionless_unscaled)):
        with fits.open(path) as hdul:
            head = hdul[0].header
            # a prediction claims no telescope, plate, MJD or fibre
            assert not {"TELESCOP", "PLATEID", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC"} & set(head)
            assert _fits_unit(head["BUNIT"]) == unit
            assert _fits_unit(hdul["COADD"].columns["flux"].unit or "") == unit
            assert _fits_unit(hdul["COADD"].columns["wave"].unit) == u.AA
        # specutils' SDSS loader reads both modes with the right unit and uncertainty
        spec = Spectrum.read(path, format="SDSS-III/IV spec")
        assert spec.flux.unit == unit and spec.spectral_axis.unit == u.AA
        k = 0 if path == calibrated else 1
        factor = norm if path == calibrated else 1.0
        np.testing.assert_allclose(spec.flux.value, direct.flux[k] * factor, rtol=1e-5)
        sigma = spec.uncertainty.represent_as(StdDevUncertainty).array
        np.testing.assert_allclose(sigma, direct.sigma[k] * factor, rtol=1e-4)
    with fits.open(calibrated) as hdul:
        assert hdul[0].header["ZSOURCE"] == "catalogue" and hdul["SPECOBJ"].data["Z"][0] == pytest.approx(0.08)
    assert fits.getheader(normalised)["ZSOURCE"] == "none"
    # specutils' default loader (no format given) recognises the flux-calibrated file
    auto = Spectrum.read(calibrated)
    assert auto.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    np.testing.assert_allclose(auto.spectral_axis.to_value(u.AA), facts["wave"], rtol=1e-6)
    np.testing.assert_allclose(auto.uncertainty.array, direct.sigma[0] * norm, rtol=1e-4)
    with fits.open(out / "t.fits") as hdul:
        for col in hdul["PREDICTIONS"].columns:
            _fits_unit(col.unit or "")
        assert _fits_unit(hdul["PREDICTIONS"].columns["NORM"].unit) == u.Unit("1e-17 erg / (s cm2 Angstrom)")


def test_catalogue_skips_impossible_magnitudes_with_a_reason(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    _, facts, predictor = env
    ids = [c.objid for c in facts["cutouts"][:5]]
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": ids, "rKronMag": [0.0, -5.0, 60.0, -999.0, 17.0]}).to_csv(cat, index=False)
    summary = run_predict(predictor, facts["files"][:5], RunOptions(out_dir=tmp_path / "o", catalogue=cat))
    reasons = {s.file.split("/")[-1]: s for s in summary.skipped}
    assert reasons[f"{ids[0]}.fits"].reason == reasons[f"{ids[1]}.fits"].reason == "nonpositive_magnitude"
    assert reasons[f"{ids[2]}.fits"].reason == "implausible_magnitude" and "60" in reasons[f"{ids[2]}.fits"].detail
    assert summary.n_predicted == 2 and summary.n_scaled == 1  # -999 is "no magnitude": stays normalised
    report = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert report["skipped_by_reason"] == {"implausible_magnitude": 1, "nonpositive_magnitude": 2}

    # a catalogue needs objid and at least one of z / the norm-band magnitude
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"objid": ids, "colour": 1.0}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'z' column or a magnitude column"):
        run_predict(predictor, facts["files"][:1], RunOptions(out_dir=tmp_path / "o2", catalogue=bad))
    zonly = tmp_path / "z.csv"
    pd.DataFrame({"objid": ids[:1], "z": [0.05]}).to_csv(zonly, index=False)
    run_predict(predictor, facts["files"][:1], RunOptions(out_dir=tmp_path / "o3", catalogue=zonly))
    head = fits.getheader(tmp_path / "o3" / f"spec-pred-{ids[0]}.fits")
    assert head["ZSOURCE"] == "catalogue" and head["FLUXNORM"] == "NORMALISED"
