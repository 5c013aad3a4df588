"""The mock's bagpipes spectra (air wavelengths) land on the SDSS vacuum grid."""

import numpy as np

from img2spec.sources.mock.sps import air_to_vacuum


def test_air_to_vacuum_matches_sdss_line_list():
    # SDSS vacuum rest wavelengths of Cloudy's air-labelled lines (H-alpha, H-beta, [OIII], [NII]).
    air = np.array([6562.80, 4861.32, 5006.84, 6583.45])
    vac = np.array([6564.61, 4862.68, 5008.24, 6585.27])
    assert np.allclose(air_to_vacuum(air), vac, atol=0.02)


def test_air_to_vacuum_leaves_the_ultraviolet_alone():
    uv = np.array([1215.67, 1549.0, 1999.0])
    assert np.array_equal(air_to_vacuum(uv), uv)
