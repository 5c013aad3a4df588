"""Generated sections of Markdown files, between `<!-- name:start -->` and `<!-- name:end -->`.

Kept apart from the README renderer (`img2spec.docs`) so that what every stage imports (MLflow
tracking reads the markers) does not pull in the renderer's dependencies.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_text


def markers(name: str) -> tuple[str, str]:
    """The start and end comment lines of generated section `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path: str | Path, name: str, text: str) -> bool:
    """Put `text` between the `name` markers of `path` (atomic, mode kept).

    Returns False, leaving the file untouched, when the markers are missing.
    """
    path = Path(path)
    start, end = markers(name)
    old = path.read_text()
    if start not in old or end not in old:
        return False
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{text}{end}{tail}"
    if new != old:
        mode = path.stat().st_mode & 0o777
        write_text(path, new)
        path.chmod(mode)  # the atomic temp file is created 0600
    return True
