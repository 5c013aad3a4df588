"""img2spec.survey: survey-scale inference.

- `pack(inputs, out_dir, params)`: cutout files (5-band, or single-band PS1 cutout-service
  files grouped per object) -> HDF5 shards per HEALPix pixel + `pack.json`.
- `run_survey(shards_dir, BundleInfo.load(model), out_dir, params)`: one Dask task per shard ->
  output shards (latents by default, or spectra: `survey.store`), a Parquet catalogue and
  `survey.json` (the client reads only the bundle's manifest; each worker loads the networks once).
- `open_survey(out_dir)`: the catalogue as a Dask DataFrame and the spectra of any selection,
  decoded on read (`survey.read`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_survey", "pack", "run_survey"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import Dask or TensorFlow.
    if name == "pack":
        from .pack import pack

        return pack
    if name == "run_survey":
        from .run import run_survey

        return run_survey
    if name == "open_survey":
        from .read import open_survey

        return open_survey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
