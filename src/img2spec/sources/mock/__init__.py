"""img2spec.sources.mock."""
