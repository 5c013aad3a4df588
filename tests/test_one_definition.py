"""Each physical convention has one definition that every module uses: the air-to-vacuum
conversion, line wavelengths, the SDSS flux unit, the NMAD scale and the photo-z label."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from img2spec.config.constants import LINE_REST_VACUUM_A, OII_DOUBLET_A, SDSS_FLUX, SDSS_FLUX_UNIT
from img2spec.measure import air_to_vacuum
from img2spec.measure.stats import NMAD_SCALE


def test_mock_converts_air_to_vacuum_with_the_measurement_formula():
    from img2spec.sources.mock import sps

    air = np.linspace(sps.AIR_VACUUM_MIN_A + 1, 11000.0, 500)
    np.testing.assert_array_equal(sps.air_to_vacuum(air), air_to_vacuum(air))
    uv = np.array([900.0, 1500.0, sps.AIR_VACUUM_MIN_A])
    np.testing.assert_array_equal(sps.air_to_vacuum(uv), uv)
    assert abs(LINE_REST_VACUUM_A["halpha"] - float(air_to_vacuum(6562.80))) < 0.01   # the table is vacuum too


def test_lines_come_from_one_table():
    from img2spec.predict.plot import MAIN_LINES
    from img2spec.sources.mock.agn import LINES_A

    assert all(LINES_A[k] == LINE_REST_VACUUM_A[k] for k in LINES_A) and "halpha" in LINES_A
    assert MAIN_LINES["Hα"] == LINE_REST_VACUUM_A["halpha"] and MAIN_LINES["[OII]3727"] == OII_DOUBLET_A
    assert 3727.0 < OII_DOUBLET_A < 3730.0


def test_flux_unit_nmad_and_photoz_label_are_shared():
    from img2spec.predict import measure_columns, writers
    from img2spec.prep import images

    assert SDSS_FLUX_UNIT == 1e-17 and (1 * SDSS_FLUX).to_value(u.erg / u.s / u.cm**2 / u.AA) == pytest.approx(1e-17)
    assert writers.CALIBRATED is SDSS_FLUX and writers.CALIBRATED_UNIT == "10**-17 erg Angstrom-1 s-1 cm-2"
    assert images.MAD_TO_SIGMA is NMAD_SCALE
    assert measure_columns.Z_PREDICTED == writers.Z_FROM_PHOTOZ and measure_columns.Z_NONE == writers.Z_UNKNOWN
