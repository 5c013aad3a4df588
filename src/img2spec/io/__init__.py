"""Readers and writers for the project's file formats (SDSS spectra, PS1 cutouts, atomic writes)."""
