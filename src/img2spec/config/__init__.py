"""Typed, validated access to params.yaml.

Each section lives in its own module as a strict pydantic model; `load_params`
returns the whole tree. Any unknown or mistyped key stops with an error that
names the key (and suggests the nearest valid one), never a silent default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import Section
from .data import DataParams
from .evaluate import EvaluateParams
from .fusion import FusionParams
from .measure import MeasureParams
from .mock import MockParams
from .models import CNNParams, VAEParams
from .prepare import PrepareParams
from .publish import PublishParams
from .sdss import SDSSParams
from .survey import SurveyParams
from .tune import TuneParams

DEFAULT_PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid."""


class Params(Section):
    data: DataParams = DataParams()
    mock: MockParams = MockParams()
    sdss: SDSSParams = SDSSParams()
    prepare: PrepareParams = PrepareParams()
    vae: VAEParams = VAEParams()
    cnn: CNNParams = CNNParams()
    measure: MeasureParams = MeasureParams()
    fusion: FusionParams = FusionParams()
    evaluate: EvaluateParams = EvaluateParams()
    tune: TuneParams = TuneParams()
    publish: PublishParams = PublishParams()
    survey: SurveyParams = SurveyParams()


def _valid_keys(model: type[Section], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at the parent of `loc`, for a did-you-mean hint."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, Section)):
            return []
        model = ann
    return list(model.model_fields)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _valid_keys(Params, loc), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(f"  {key}: unknown key{suggestion}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def params_from_dict(raw: dict[str, Any] | None, source: str = "<dict>") -> Params:
    """Validate a nested dict (as read from YAML) into `Params`."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return params_from_dict(raw, str(path))


def flatten(params: Params) -> dict[str, Any]:
    """Dotted-key view of all params (for MLflow logging)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", params.model_dump(mode="json"))
    return out


__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "flatten"]
