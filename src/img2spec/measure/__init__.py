"""Spectral measurements from any spectra on the project's grid (observed, predicted, truth):
emission-line fluxes and equivalent widths, Dn4000, Hdelta_A and galaxy classes. Pure numpy,
vectorised over (N, P) arrays.

    from img2spec.measure import measure_spectra
    table = measure_spectra(flux, wave, z, params.measure, sigma=sigma)   # dict of (N,) columns
"""

from .bands import BAD_CONTINUUM, FLAG_BITS, MASKED, NO_REDSHIFT, OFF_GRID, air_to_vacuum
from .classify import AGN_LABELS, BPT_LABELS, CLASS_COLUMNS, SF_LABELS, UNCLASSIFIED, bpt_region, classify, kauffmann03, kewley01
from .table import column_names, measure_spectra

__all__ = ["measure_spectra", "classify", "column_names", "bpt_region", "kauffmann03", "kewley01",
           "air_to_vacuum", "FLAG_BITS", "OFF_GRID", "MASKED", "BAD_CONTINUUM", "NO_REDSHIFT",
           "UNCLASSIFIED", "SF_LABELS", "BPT_LABELS", "AGN_LABELS", "CLASS_COLUMNS"]
