"""The survey catalogue carries the spectral measurements per object (survey/catalogue.py)."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.measure import NO_REDSHIFT
from img2spec.survey.catalogue import catalogue_frame
from test_measure import HALPHA, OIII, WAVE, observed


def test_catalogue_rows_carry_measurements_at_the_input_or_predicted_z():
    # 4 objects, the second skipped; object 0 has an input z, 2 only a photo-z, 3 neither
    z_true = np.array([0.05, 0.1, 0.12])                  # of the 3 predicted rows (objects 0, 2, 3)
    flux = observed(z_true, {HALPHA: 30.0, OIII: 10.0})
    sigma = np.full(flux.shape, 0.02, np.float32)
    frame = catalogue_frame(
        object_id=np.array(["a", "b", "c", "d"]), ra=np.zeros(4), dec=np.zeros(4), shard="healpix=1/part-0",
        norm=np.ones(4), skip_reason=["", "no_image", "", ""], predicted=np.array([True, False, True, True]),
        wave=WAVE, flux=flux, sigma=sigma, z_input=np.array([0.05, np.nan, np.nan, np.nan]),
        z_pred=np.array([0.3, 0.1, np.nan], np.float32), z_pred_err=np.full(3, 0.01, np.float32),
    )
    assert list(frame["z_lines_source"]) == ["catalogue", "none", "photo-z", "none"]
    np.testing.assert_allclose(frame["z_lines"].to_numpy()[[0, 2]], [0.05, 0.1], rtol=1e-6)
    assert frame["halpha_flux"].to_numpy()[0] == pytest.approx(30.0, rel=3e-3)       # input z wins over 0.3
    assert frame["halpha_flux"].to_numpy()[2] == pytest.approx(30.0, rel=3e-3)       # photo-z placed it
    assert np.isnan(frame["halpha_flux"].to_numpy()[1])                              # skipped: no measurement
    assert np.isnan(frame["dn4000"].to_numpy()[3]) and int(frame["dn4000_flag"].to_numpy()[3]) & NO_REDSHIFT
    for col in ("dn4000", "hdelta_a", "oiii_5007_ew", "bpt_class", "sf_class", "halpha_ew_err"):
        assert col in frame
