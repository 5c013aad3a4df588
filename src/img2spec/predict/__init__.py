"""img2spec.predict."""
