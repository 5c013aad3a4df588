"""img2spec.tuning."""
