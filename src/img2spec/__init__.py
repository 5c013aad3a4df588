"""img2spec: predict SDSS-like optical spectra from Pan-STARRS grizy image cutouts."""

__version__ = "0.1.0"

BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")
"""Pan-STARRS1 bands, in the channel order used everywhere (images, photometry)."""
