"""Raw data sources. `mock` (offline simulated survey) and `sdss` (real services)
write the same files (see img2spec.paths and DESIGN.md "Data sources")."""
