"""Atomic file writes: write to a temporary name in the same directory, then rename.

Every temporary carries the writer's pid in its name (`.<name>.tmp-<pid>...`), so a
later run can tell the leftovers of a killed (`kill -9`) process from the work of a
live one and remove them: `remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .processes import pid_alive

log = logging.getLogger(__name__)

TEMP_TAG = ".tmp-"
"""Marks a temporary: `.<final name>.tmp-<pid>[-<random>][<suffix>]`."""
_TEMP_PID = re.compile(re.escape(TEMP_TAG) + r"(\d+)(?!\d)")


def temp_path(final: str | Path, pid: int | None = None) -> Path:
    """The temporary name beside `final` for process `pid` (default: this one), e.g. a staging directory."""
    final = Path(final)
    return final.with_name(f".{final.name}{TEMP_TAG}{os.getpid() if pid is None else int(pid)}")


def temp_owner(name: str) -> int | None:
    """The pid recorded in a temporary's name, or None when `name` is not a temporary."""
    m = _TEMP_PID.search(name) if name.startswith(".") else None
    return int(m.group(1)) if m else None


def remove_stale_temps(directory: str | Path, prefix: str = ".") -> list[Path]:
    """Remove temporaries in `directory` (files or directories) whose writer process is gone.

    Considers hidden entries whose name starts with `prefix` and carries `.tmp-<pid>`
    (`temp_path` and `atomic_path` names). An entry is stale when that pid is not
    running, or was started after the entry was last modified (pid reused). Temporaries
    of live processes, including this one, are kept. Only for directories written by
    processes of this machine (pids mean nothing across hosts). Returns what was removed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = temp_owner(entry.name)
        if pid is None:
            continue
        try:
            mtime = entry.lstat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile (its owner finished)
        if pid_alive(pid, not_after=mtime):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.info("removed stale temporary %s (process %d is gone)", entry, pid)
        removed.append(entry)
    return removed


FILE_MODE = 0o666
"""Mode of a new file before the umask, as open() and every other tool use."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), so no
    other thread ever creates a file under a temporarily cleared umask."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    On any exception the temporary file is removed, so a killed or failed write
    never leaves a partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{temp_path(path).name}-", suffix=suffix or f"{path.suffix}.tmp", dir=path.parent
    )
    # mkstemp makes 0600 files; the result gets the usual permissions of a new file (0644 under umask 022)
    os.fchmod(fd, FILE_MODE & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame to CSV atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_parquet(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
