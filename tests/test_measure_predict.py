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
    from test_measure import HALPHA, WAVE, observed

    flux = observed(np.array([0.05, 0.05]), {HALPHA: 40.0})
    cols = batch_columns(flux, np.full(flux.shape, 0.05), WAVE, "observed", np.array([0.05, np.nan]),
                         ["catalogue", Z_NONE])
    assert cols[0]["HALPHA_FLUX"][0] == pytest.approx(40.0, rel=3e-3)
    assert cols[0]["MEAS_ZSRC"][0] == "catalogue" and cols[1]["MEAS_ZSRC"][0] == Z_NONE
    assert np.isnan(cols[1]["HALPHA_EW"][0]) and cols[1]["HALPHA_FLAG"][0] & NO_REDSHIFT
    assert cols[0]["BPT_CLASS"][0] in ("unclassified", "star_forming", "composite", "agn")
    assert isinstance(cols[0]["DN4000_FLAG"][0], int)
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
    with fits.open(tmp_path / "out" / f"spec-pred-{cuts[2].objid}.fits") as hdul:
        h = hdul[0].header
        if predictor.frame == "observed":   # no z at all: undefined cards (FITS has no NaN), flagged
            assert h["MEAS_ZSRC"] == Z_NONE and h["DN4000"] is None and h["DN4000_FLAG"] & NO_REDSHIFT
    with fits.open(tmp_path / "all.fits") as hdul:
        tab = hdul["PREDICTIONS"].data
        np.testing.assert_allclose(tab["HALPHA_EW"][:2], ref["halpha_ew"], rtol=1e-4)
        assert list(tab["MEAS_ZSRC"])[:2] == ["catalogue", "catalogue"]
