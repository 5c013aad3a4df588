"""dvc.yaml lists every file of code a stage runs, so `dvc status` cannot call a stage up to
date after a change to code it executes.

Each stage's code is derived from its command: the stage script, then every module it
imports, transitively, including function-level (lazy) imports and the `__init__.py` of
every package on the way (Python runs them). Over-approximate on purpose: a module
imported anywhere in that closure counts, whether or not this run reaches the call.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PIPELINE = REPO / "pipeline"


def _module_file(dotted: str) -> Path | None:
    """src/ or pipeline/ file of a module name (img2spec.* or a pipeline/ helper), else None."""
    parts = dotted.split(".")
    base = SRC if parts[0] == "img2spec" else PIPELINE if len(parts) == 1 else None
    if base is None:
        return None
    for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    if path.is_relative_to(SRC):
        rel = path.relative_to(SRC).with_suffix("").parts
        return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
    return path.stem


def _imports(path: Path) -> set[str]:
    """Dotted names of everything `path` imports (absolute, relative resolved, `from x import mod`)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # kept only if it is a module
    return found


def code_closure(script: Path) -> set[Path]:
    """Every project file executed by importing `script`'s imports, transitively."""
    todo, seen = [script], {script}
    while todo:
        for dotted in _imports(todo.pop()):
            parts = dotted.split(".")
            for k in range(1, len(parts) + 1):  # the module and each parent package's __init__
                f = _module_file(".".join(parts[:k]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_the_code_it_runs(stage):
    spec = _stages()[stage]
    argv = shlex.split(spec["cmd"])
    assert argv[0] == "python" and argv[1].startswith("pipeline/"), spec["cmd"]
    deps = [str(d) for d in spec.get("deps", [])]
    missing = sorted(str(f.relative_to(REPO)) for f in code_closure(REPO / argv[1]) if not _covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage}: code it runs is not in deps: {missing}"


def test_closure_follows_lazy_and_relative_imports():
    """The resolver itself: train_cnn's closure holds what its lazy imports reach."""
    closure = {str(f.relative_to(REPO)) for f in code_closure(PIPELINE / "train_cnn.py")}
    for expected in ("pipeline/_stage.py", "src/img2spec/__init__.py", "src/img2spec/models/stages.py",
                     "src/img2spec/models/train.py",  # a function-level `from .train import train_cnn`
                     "src/img2spec/models/validation.py", "src/img2spec/metrics.py", "src/img2spec/io/processed.py"):
        assert expected in closure, expected
    assert not any(p.startswith("src/img2spec/evaluate/") for p in closure)  # models import nothing above them


NOT_STAGE_OUTPUTS = ("reports/.gitignore", "reports/bench.json", "reports/bench.md", "reports/latent_rank.json",
                     "reports/mock_realism.json", "reports/realism/", "reports/tune.json",
                     "reports/photoz_scaling.json", "reports/seeds.json")
"""Committed reports written by commands outside `dvc repro` (make bench, bench scripts, figures, tune)."""


def test_every_committed_stage_report_is_declared():
    """A stage output missing from dvc.yaml is rewritten by every `dvc repro` behind DVC's back, so a
    fresh run of a clean checkout looks git-dirty in MLflow (e.g. reports/select.json)."""
    import subprocess

    from img2spec.tracking import pipeline_outputs

    declared = [p.rstrip("/") for p in pipeline_outputs(REPO)]
    tracked = subprocess.run(["git", "ls-files", "reports", "metrics"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "reports/select.json" in tracked
    undeclared = [f for f in tracked if not f.startswith(NOT_STAGE_OUTPUTS)
                  and not any(f == d or f.startswith(d + "/") for d in declared)]
    assert not undeclared, f"written by a stage but not in dvc.yaml outs/metrics/plots: {undeclared}"
