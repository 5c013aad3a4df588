"""img2spec.prep."""
