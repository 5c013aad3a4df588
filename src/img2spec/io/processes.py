"""Child processes that die with their parent, and whether a process id is still alive.

A `kill -9` of a stage gives it no chance to stop its workers: a worker of a
`multiprocessing` pool blocks on its task queue for ever (it holds a copy of the
pipe itself, so it never sees end-of-file). Two guards, both installed by
`die_with_parent` in the child:

- Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` through ctypes: the kernel kills the
  child the moment its parent goes. Caveat (prctl(2)): the signal fires when the
  *thread* that forked the child exits, so create pools from a long-lived thread
  (normally the main thread), as every stage here does.
- a daemon watchdog thread that polls `os.getppid()` and exits when the child has
  been re-parented (any POSIX system; also catches a parent that died between
  the fork and the prctl call), or polls the owner's pid when the worker is not
  its direct child (forkserver pools).

Use `guarded_initializer()` for `multiprocessing.Pool` / `ProcessPoolExecutor`,
or `set_parent_death_signal` as a `subprocess.Popen(preexec_fn=...)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

PR_SET_PDEATHSIG = 1
"""prctl option number from <linux/prctl.h>."""
WATCHDOG_POLL_S = 0.5
"""How often the watchdog checks the parent pid: an orphan lives at most this long."""
ORPHAN_EXIT_CODE = 70
"""Exit status of a child that found itself orphaned (EX_SOFTWARE)."""
START_TIME_SLACK_S = 2.0
"""Clock-tick and boot-time rounding allowed when comparing a process start time with a file time."""


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send `sig` to this process when its parent dies.

    Returns False where unsupported (not Linux, no libc): then only the watchdog of
    `die_with_parent` protects. Safe as `Popen(preexec_fn=...)` (survives exec).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _owner_gone(owner: int, direct: bool, started: float | None) -> bool:
    if direct:
        return os.getppid() != owner  # re-parented: the parent is dead
    # dead, or its pid reused by a younger process (start times unknown off Linux: pid only)
    return not pid_alive(owner) or (started is not None and process_start_time(owner) != started)


def _watch(owner: int, direct: bool, started: float | None, poll_s: float) -> None:
    while not _owner_gone(owner, direct, started):
        time.sleep(poll_s)
    os._exit(ORPHAN_EXIT_CODE)  # no cleanup: the owner's state is gone, so is ours


def die_with_parent(parent_pid: int | None = None, use_prctl: bool = True, poll_s: float = WATCHDOG_POLL_S) -> None:
    """Make the calling (child) process exit when process `parent_pid` (default: its parent) dies.

    `parent_pid` need not be the direct parent (a "forkserver" pool's workers are children
    of the fork server): then only the watchdog, polling that pid, protects.
    """
    owner = os.getppid() if parent_pid is None else int(parent_pid)
    direct = os.getppid() == owner
    if direct and use_prctl:
        set_parent_death_signal()
    started = None if direct else process_start_time(owner)
    if _owner_gone(owner, direct, started):
        os._exit(ORPHAN_EXIT_CODE)  # the owner died before the guard was in place
    threading.Thread(target=_watch, args=(owner, direct, started, poll_s), name="parent-watchdog", daemon=True).start()


def _guarded_init(parent_pid: int, init: Callable[..., Any] | None, args: tuple) -> None:
    die_with_parent(parent_pid)
    if init is not None:
        init(*args)


def guarded_initializer(init: Callable[..., Any] | None = None, args: tuple = ()) -> tuple[Callable[..., None], tuple]:
    """(initializer, initargs) for a process pool whose workers die with this process.

    Example: ``fn, fargs = guarded_initializer(); ProcessPoolExecutor(n, initializer=fn, initargs=fargs)``.
    `init(*args)` (optional) runs after the guard, once per worker.
    """
    return _guarded_init, (os.getpid(), init, tuple(args))


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_start_time(pid: int) -> float | None:
    """Start time of `pid` as a Unix time (Linux /proc), or None when unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            stat = fh.read()
        # Field 22 (starttime, clock ticks after boot); comm (field 2) may hold spaces, so split after ')'.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def pid_alive(pid: int, not_after: float | None = None) -> bool:
    """True when process `pid` exists and is not a zombie.

    With `not_after` (a Unix time, e.g. a file's mtime), a process that started later
    than that cannot have written the file: the pid was reused, so it counts as dead.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _is_zombie(pid):
        return False
    if not_after is not None:
        started = process_start_time(pid)
        if started is not None and started > not_after + START_TIME_SLACK_S:
            return False
    return True
