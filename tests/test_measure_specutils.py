"""measure/ against specutils (`line_flux`, `equivalent_width`) on the same spectra.

specutils integrates a spectrum over a region it is given; measure/ places its windows from
the redshift and estimates the continuum from side bands. On a Gaussian line over a linear
continuum both must agree: specutils gets the continuum-subtracted (or -normalised) spectrum
in the observed frame, measure/ the raw one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

specutils = pytest.importorskip("specutils")
import astropy.units as u  # noqa: E402
from specutils import SpectralRegion, Spectrum  # noqa: E402
from specutils.analysis import equivalent_width, line_flux  # noqa: E402

from img2spec.measure import measure_spectra  # noqa: E402
from test_measure import EDGES, HALPHA, MP, OIII, WAVE, gaussian_bins  # noqa: E402

FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 Angstrom)")


def _spectrum(flux: np.ndarray) -> Spectrum:
    return Spectrum(flux=flux * FLUX_UNIT, spectral_axis=WAVE * u.AA)


@pytest.mark.parametrize("z, slope", [(0.03, 0.0), (0.11, 3e-4), (0.19, -2e-4)])
def test_line_flux_and_equivalent_width_agree_with_specutils(z, slope):
    lines = {HALPHA: (80.0, 2.5), OIII: (35.0, 1.8)}            # rest centre: (flux, rest sigma A)
    cont = 3.0 + slope * (WAVE - 6000.0)
    flux = cont.copy()
    for lam, (f, s) in lines.items():
        flux += gaussian_bins(EDGES, [lam * (1 + z)], [s * (1 + z)], [f])[0]
    ours = measure_spectra(flux[None], WAVE, z, MP)
    for name, lam in (("halpha", HALPHA), ("oiii_5007", OIII)):
        win = MP.lines[name].line
        region = SpectralRegion(win[0] * (1 + z) * u.AA, win[1] * (1 + z) * u.AA)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_flux = line_flux(_spectrum(flux - cont), regions=region)
            ref_ew = equivalent_width(_spectrum(flux / cont), continuum=1, regions=region)
        ref_flux = ref_flux.to_value(FLUX_UNIT * u.AA)
        # specutils: EW = int (1 - F/Fc) dlambda, observed frame, absorption positive
        ref_ew_rest = -ref_ew.to_value(u.AA) / (1 + z)
        assert ours[f"{name}_flux"][0] == pytest.approx(ref_flux, rel=5e-3), name
        assert ours[f"{name}_ew"][0] == pytest.approx(ref_ew_rest, rel=5e-3), name
        assert ref_flux == pytest.approx(lines[lam][0], rel=5e-3)   # both are right, not only equal
