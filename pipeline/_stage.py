"""Shared start-up for the stage scripts: logging, params, paths, clean errors."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Callable

from img2spec.config import ConfigError, Params, load_params
from img2spec.io.errors import FileFormatError, RunInputError
from img2spec.logs import setup_logging
from img2spec.paths import Paths

# Errors whose message already names the bad file or parameter: report them without a traceback.
# Every reader's FileFormatError (spectra, cutouts, match's tables, shards) and whole-run input problems.
_USER_ERRORS = (FileNotFoundError, FileFormatError, RunInputError)


def run_stage(name: str, body: Callable[[Params, Paths], None], doc: str = "", *, tracked: bool = False) -> None:
    """Parse `--params/--root`, load validated params and run `body`.

    A `tracked` stage's MLflow run (nested in this pipeline execution's parent run) is
    opened before `body` starts, so the run spans the stage's work.

    Exit 2 on invalid params, 1 on an input error (message names the file); anything
    else propagates with its traceback.
    """
    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py", description=doc)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding data/, models/, reports/")
    args = parser.parse_args()
    log = setup_logging()
    try:
        params = load_params(args.params)
        paths = Paths(Path(args.root))
        with _tracked_run(name, params, paths) if tracked else contextlib.nullcontext():
            body(params, paths)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except _USER_ERRORS as exc:
        log.error("stage %s: %s", name, exc)
        sys.exit(1)


def _tracked_run(name: str, params: Params, paths: Paths):
    from img2spec.tracking import start_run

    return start_run(name, params, root=paths.root)


__all__ = ["run_stage"]
