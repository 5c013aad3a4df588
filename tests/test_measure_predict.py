"""img2spec predict carries the spectral measurements: FITS header cards and table columns,
at the given z (else the predicted z), with MEAS_ZSRC saying which."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from img2spec.config import params_from_dict
from img2spec.config.measure import MeasureParams
from img2spec.measure import NO_REDSHIFT, measure_spectra
from img2spec.paths import Paths
from img2spec.predict.measure_columns import Z_NONE, Z_PREDICTED, batch_columns, choose_redshift
from test_predict_support import build_project


def test_choose_redshift_prefers_the_given_z():
    z, src = choose_redshift(np.array([0.1, np.nan, np.nan]), ["catalogue", "none", "none"],
                             np.array([0.2, 0.07, np.nan]))
    np.testing.assert_array_equal(z[:2], [0.1, 0.07])
    assert np.isnan(z[2]) and src == ["catalogue", Z_PREDICTED, Z_NONE]
    z, src = choose_redshift(np.array([np.nan]), ["none"], None)
    assert np.isnan(z[0]) and src == [Z_NONE]


def test_batch_columns_names_values_and_labels():
    from test_measure import HALPHA, HBETA, NII, OIII, WAVE, observed

    star_forming = {HALPHA: 40.0, NII: 10.0, HBETA: 14.0, OIII: 7.0}   # log [NII]/Ha -0.6, [OIII]/Hb -0.3
    seyfert = {HALPHA: 40.0, NII: 40.0, HBETA: 10.0, OIII: 100.0}       # log [NII]/Ha 0.0, [OIII]/Hb +1.0
    flux = np.vstack([observed(0.05, star_forming), observed(0.05, seyfert), observed(0.05, seyfert)])
    cols = batch_columns(flux, np.full(flux.shape, 0.05), WAVE, "observed", np.array([0.05, 0.05, np.nan]),
                         ["catalogue", "catalogue", Z_NONE])
    assert cols[0]["HALPHA_FLUX"][0] == pytest.approx(40.0, rel=3e-3)
    assert cols[1]["OIII_5007_FLUX"][0] == pytest.approx(100.0, rel=3e-3)
    assert cols[0]["MEAS_ZSRC"][0] == "catalogue" and cols[2]["MEAS_ZSRC"][0] == Z_NONE
    assert np.isnan(cols[2]["HALPHA_EW"][0]) and cols[2]["HALPHA_FLAG"][0] & NO_REDSHIFT
    assert [c["BPT_CLASS"][0] for c in cols] == ["star_forming", "agn", "unclassified"]
    assert [c["SF_CLASS"][0] for c in cols][:2] == ["star_forming", "star_forming"]
    assert isinstance(cols[0]["DN4000_FLAG"][0], int) and cols[0]["DN4000_FLAG"][0] == 0
    assert all(len(comment) <= 25 for _, comment in cols[0].values())   # fits beside a HIERARCH key


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root)
    params = params_from_dict({"publish": {"n_samples": 4, "batch_size": 5, "registry": False}})
    build_bundle(params, Paths(root))
    return root, facts, Predictor.from_path(root / "models" / "img2spec")


def test_predict_files_and_table_carry_measurements(env, tmp_path):
    from img2spec.predict import RunOptions, run_predict

    root, facts, predictor = env
    cuts = facts["cutouts"][:3]
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [c.objid for c in cuts[:2]], "z": [0.08, 0.05]}).to_csv(cat, index=False)
    opts = RunOptions(out_dir=tmp_path / "out", catalogue=cat, table=tmp_path / "all.fits", batch_size=5)
    summary = run_predict(predictor, facts["files"][:3], opts)
    assert summary.n_predicted == 3
    direct = predictor.predict(facts["images"][:3])
    ref = measure_spectra(direct.flux[:2], predictor.wave, np.array([0.08, 0.05]), MeasureParams(),
                          sigma=direct.sigma[:2], frame=predictor.frame)
    with fits.open(tmp_path / "out" / f"spec-pred-{cuts[0].objid}.fits") as hdul:
        h = hdul[0].header
        assert h["MEAS_ZSRC"] == "catalogue" and h["MEAS_Z"] == pytest.approx(0.08)
        assert h["DN4000"] == pytest.approx(ref["dn4000"][0], rel=1e-4)
        assert "HALPHA_EW" in h and "BPT_CLASS" in h
    # The tiny bundle decodes observed-frame spectra and has no redshift head (rest-frame bundles
    # have their own tests): an object without a catalogue z has no z at all.
    assert predictor.frame == "observed" and direct.z is None
    with fits.open(tmp_path / "out" / f"spec-pred-{cuts[2].objid}.fits") as hdul:
        h = hdul[0].header   # no z: undefined cards (FITS has no NaN), flagged
        assert h["MEAS_ZSRC"] == Z_NONE and h["DN4000"] is None and h["DN4000_FLAG"] & NO_REDSHIFT
        assert h["HALPHA_EW"] is None and h["HALPHA_FLAG"] & NO_REDSHIFT and h["BPT_CLASS"] == "unclassified"
    with fits.open(tmp_path / "all.fits") as hdul:
        tab = hdul["PREDICTIONS"].data
        np.testing.assert_allclose(tab["HALPHA_EW"][:2], ref["halpha_ew"], rtol=1e-4)
        assert list(tab["MEAS_ZSRC"]) == ["catalogue", "catalogue", Z_NONE]
        assert np.isnan(tab["DN4000"][2]) and int(tab["DN4000_FLAG"][2]) & NO_REDSHIFT
