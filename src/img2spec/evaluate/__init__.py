"""img2spec.evaluate."""
