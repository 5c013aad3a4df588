"""`img2spec tune --apply`: write the best trials' params into params.yaml.

Round-trip through ruamel.yaml keeps comments, key order and flow style; the edited
tree is validated through `img2spec.config` before the atomic write, so an invalid
result never reaches the file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import optuna
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..config import Params, params_from_dict
from ..io.atomic import write_text

log = logging.getLogger(__name__)

#: Floats written by --apply are rounded to this many significant digits (readable
#: params.yaml; far below the resolution at which a tuned value matters).
SIGNIFICANT_DIGITS = 4


def _round(value: Any) -> Any:
    if isinstance(value, float) and value != 0.0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def best_section_params(study: optuna.Study) -> tuple[int, float, dict[str, Any]]:
    """(trial number, value, section params) of the best complete trial of `study`."""
    try:
        best = study.best_trial
    except ValueError:
        raise LookupError(f"study {study.study_name!r} has no complete trial to apply") from None
    section = best.user_attrs.get("section_params")
    if not isinstance(section, dict) or not section:
        raise LookupError(f"study {study.study_name!r}: best trial {best.number} has no 'section_params' attribute")
    return best.number, float(best.value), section


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long comment lines
    return yaml


def _to_plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node


def _set(section: CommentedMap, key: str, value: Any) -> None:
    """Replace a value in place, keeping the old sequence's flow/block style."""
    if isinstance(value, (list, tuple)):
        old = section.get(key)
        seq = CommentedSeq(list(value))
        if isinstance(old, CommentedSeq) and old.fa.flow_style() is False:
            seq.fa.set_block_style()
        else:
            seq.fa.set_flow_style()  # params.yaml writes short lists inline
        if isinstance(old, CommentedSeq):
            seq.ca.comment = old.ca.comment  # keep a comment attached to the list itself
            seq.ca.items.update(old.ca.items)
        section[key] = seq
    else:
        section[key] = value


def apply_updates(params_file: str | Path, updates: dict[str, dict[str, Any]]) -> tuple[Params, dict[str, Any]]:
    """Write `{section: {key: value}}` into `params_file`; returns (validated params, changes).

    `changes` maps "section.key" to (old, new) for the keys whose value changed."""
    params_file = Path(params_file)
    yaml = _yaml()
    tree = yaml.load(params_file.read_text())
    if not isinstance(tree, CommentedMap):
        raise ValueError(f"{params_file}: top level must be a mapping of sections")
    changes: dict[str, Any] = {}
    for name, values in updates.items():
        section = tree.get(name)
        if section is None:
            section = tree[name] = CommentedMap()
        for key, value in values.items():
            value = _round(value)
            old = _to_plain(section.get(key))
            new = list(value) if isinstance(value, tuple) else value
            if old != new:
                changes[f"{name}.{key}"] = (old, new)
            _set(section, key, value)
    validated = params_from_dict(_to_plain(tree), str(params_file))  # raises ConfigError, file untouched
    buf = io.StringIO()
    yaml.dump(tree, buf)
    write_text(params_file, buf.getvalue())
    return validated, changes


def apply_best(params_file: str | Path, studies: dict[str, optuna.Study],
               min_improvement: dict[str, float] | None = None) -> dict[str, Any]:
    """Apply the best trial of each study ({"vae": study, ...}) to `params_file`, but only
    where it is a measured improvement: its value is below the study's default trial (the
    params.yaml configuration, trained under the same budget) by more than
    `min_improvement[part]` (a fraction). Otherwise the section is kept and the report says why."""
    from .runner import default_vs_best

    updates, report = {}, {}
    for part, study in studies.items():
        number, value, section = best_section_params(study)
        verdict = default_vs_best(study, (min_improvement or {}).get(part, 0.0))
        entry = {"study": study.study_name, "trial": number, "value": value,
                 "default_trial": verdict["default_trial"], "default_value": verdict["default_value"]}
        if verdict["default_value"] is None:
            entry["applied"] = False
            entry["reason"] = ("the study has no completed default trial (params.yaml configuration): "
                               "no measured improvement to apply; rerun `img2spec tune`")
        elif not verdict["improved"]:
            entry["applied"] = False
            entry["reason"] = (f"best value {value:.4g} does not beat the default's {verdict['default_value']:.4g} "
                               f"by more than {100 * (min_improvement or {}).get(part, 0.0):.1f}%: params.yaml kept")
        else:
            entry["applied"] = True
            updates[part] = section
        if not entry["applied"]:
            log.info("tune --apply %s: %s", part, entry["reason"])
        report[part] = entry
    changes = apply_updates(params_file, updates)[1] if updates else {}  # nothing to apply: file untouched
    report["changed"] = {k: {"old": o, "new": n} for k, (o, n) in changes.items()}
    for key, (old, new) in changes.items():
        log.info("tune --apply: %s: %s -> %s", key, old, new)
    if not changes:
        log.info("tune --apply: %s already holds the best params", params_file)
    return report
