"""Raw data sources. `mock` (offline simulated survey) and `sdss` (real services)
write the same files (see img2spec.paths and DESIGN.md "Data sources").

Each source module `img2spec.sources.<source>.stages` provides four functions
`select`, `fetch_spectra`, `fetch_images`, `fetch_photometry`, each
`(params: Params, paths: Paths) -> dict` returning a JSON-able report
(counts written, skipped, failed and why). `run_source_stage` dispatches on
`params.data.source` and writes the report to `reports/<stage>.json`.
"""

from __future__ import annotations

import importlib
import logging

from ..config import Params
from ..io.atomic import write_json
from ..paths import Paths

SOURCE_STAGES = ("select", "fetch_spectra", "fetch_images", "fetch_photometry")
log = logging.getLogger(__name__)


def run_source_stage(stage: str, params: Params, paths: Paths) -> dict:
    """Run `stage` of the configured source and write its report."""
    if stage not in SOURCE_STAGES:
        raise ValueError(f"unknown source stage {stage!r}; expected one of {SOURCE_STAGES}")
    module = importlib.import_module(f"{__name__}.{params.data.source}.stages")
    report = getattr(module, stage)(params, paths)
    report = {"stage": stage, "source": params.data.source, **(report or {})}
    write_json(paths.reports / f"{stage}.json", report)
    log.info("%s (%s): %s", stage, params.data.source, {k: v for k, v in report.items() if not isinstance(v, (list, dict))})
    return report
