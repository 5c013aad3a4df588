"""img2spec.sources.sdss."""
