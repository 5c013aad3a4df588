"""Shared start-up for the stage scripts: logging, params, paths, clean errors."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from img2spec.config import ConfigError, Params, load_params
from img2spec.logs import setup_logging
from img2spec.paths import Paths


class NotImplementedStage(RuntimeError):
    pass


def run_stage(name: str, body: Callable[[Params, Paths], None], doc: str = "") -> None:
    """Parse `--params/--root`, load validated params and run `body`; exit 1 with a clear message on error."""
    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py", description=doc)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding data/, models/, reports/")
    args = parser.parse_args()
    log = setup_logging()
    try:
        params = load_params(args.params)
        body(params, Paths(Path(args.root)))
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except NotImplementedStage as exc:
        log.error("stage %s: not implemented yet (%s)", name, exc)
        sys.exit(3)


def not_implemented(issue: int) -> Callable[[Params, Paths], None]:
    def body(params: Params, paths: Paths) -> None:
        raise NotImplementedStage(f"see issue {issue}")

    return body


__all__ = ["run_stage", "not_implemented", "NotImplementedStage", "logging"]
