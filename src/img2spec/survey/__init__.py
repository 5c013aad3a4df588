"""img2spec.survey: survey-scale inference.

- `pack(inputs, out_dir, params)`: cutout files (5-band, or single-band PS1 cutout-service
  files grouped per object) -> HDF5 shards per HEALPix pixel + `pack.json`.
- `run_survey(shards_dir, BundleInfo.load(model), out_dir, params)`: one Dask task per shard ->
  spectra shards, a Parquet catalogue and `survey.json` (the client reads only the bundle's
  manifest; each worker loads the networks once).
"""

from __future__ import annotations

from typing import Any

__all__ = ["pack", "run_survey"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import Dask or TensorFlow.
    if name == "pack":
        from .pack import pack

        return pack
    if name == "run_survey":
        from .run import run_survey

        return run_survey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
