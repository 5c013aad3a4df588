"""img2spec.models."""
