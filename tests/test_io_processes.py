"""kill -9 leaves nothing behind: workers die with their parent, stale temporaries are swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from img2spec.io.atomic import atomic_path, remove_stale_temps, temp_owner, temp_path
from img2spec.io.processes import pid_alive

ORPHAN_WAIT_S = 10.0


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = ORPHAN_WAIT_S) -> list[int]:
    """The pids still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if not gone(p)]
        time.sleep(0.1)
    return alive


def kill_and_check_orphans(proc: subprocess.Popen, min_children: int, ready=lambda: True, timeout: float = 60.0):
    """Wait for `min_children` descendants of `proc` and `ready()`, kill -9 `proc`, return survivors."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        children = parent.children(recursive=True)
        if len(children) >= min_children and ready():
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read() if proc.stderr else ''}"
    assert len(children) >= min_children, "workers never started"
    pids = [c.pid for c in children]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    survivors = wait_gone(pids)
    for pid in survivors:  # never leave them running, even when the test fails
        os.kill(pid, signal.SIGKILL)
    return pids, survivors


_POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from img2spec.io.processes import die_with_parent, guarded_initializer
    import os
    mode = sys.argv[1]
    ctx = get_context("forkserver" if mode == "forkserver" else "fork")
    if mode in ("guarded", "forkserver"):
        init, args = guarded_initializer()
    elif mode == "watchdog":  # the fallback alone (no prctl), as on non-Linux systems
        init, args = die_with_parent, (os.getpid(), False, 0.1)
    else:
        init, args = None, ()
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=init, initargs=args) as ex:
        list(ex.map(time.sleep, [60] * 4))
""")


@pytest.mark.parametrize("mode", ["guarded", "watchdog", "forkserver"])
def test_pool_workers_die_with_a_killed_parent(mode):
    proc = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT, mode], stderr=subprocess.PIPE)
    # forkserver: the fork server and its 2 workers (children of the server, not of the stage)
    pids, survivors = kill_and_check_orphans(proc, min_children=3 if mode == "forkserver" else 2)
    assert survivors == [], f"orphaned workers {survivors} of {pids}"


def test_unguarded_pool_leaves_orphans():
    """The failure the guard prevents (shows the test above can fail)."""
    proc = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT, "plain"], stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30
    while len(parent.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [c.pid for c in parent.children()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        assert len(pids) == 2 and wait_gone(pids, timeout=1.5) == pids
    finally:
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())
    assert not pid_alive(0) and not pid_alive(-5)
    # A process that started after a file was written cannot have written it (pid reuse).
    assert not pid_alive(os.getpid(), not_after=time.time() - 3600)


def test_remove_stale_temps(tmp_path):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".processed.tmp-{dead}").mkdir()
        (tmp_path / f".processed.tmp-{dead}" / "flux.npy").write_bytes(b"x" * 100)
        (tmp_path / f".processed.tmp-{dead}-old").mkdir()
        (tmp_path / f".table.csv.tmp-{dead}-ab12.csv.tmp").write_text("partial")
        live = tmp_path / f".processed.tmp-{sleeper.pid}"
        live.mkdir()
        mine = temp_path(tmp_path / "processed")
        mine.mkdir()
        reused = tmp_path / f".other.tmp-{sleeper.pid}"
        reused.write_text("from an earlier process with the same pid")
        old = time.time() - 3600
        os.utime(reused, (old, old))
        keep = [tmp_path / "processed", tmp_path / "notes.tmp-123", tmp_path / ".hidden"]
        for path in keep:
            path.write_text("not a temporary")

        removed = remove_stale_temps(tmp_path, prefix=".processed")
        assert sorted(p.name for p in removed) == [f".processed.tmp-{dead}", f".processed.tmp-{dead}-old"]
        removed = remove_stale_temps(tmp_path)
        assert sorted(p.name for p in removed) == [".other.tmp-%d" % sleeper.pid, f".table.csv.tmp-{dead}-ab12.csv.tmp"]
        assert live.is_dir() and mine.is_dir() and all(p.exists() for p in keep)
        assert remove_stale_temps(tmp_path / "absent") == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_temporaries_carry_the_pid(tmp_path):
    with atomic_path(tmp_path / "a.parquet") as tmp:
        assert temp_owner(tmp.name) == os.getpid() and tmp.suffix == ".tmp"
        tmp.write_text("x")
        assert remove_stale_temps(tmp_path) == []  # our own live write is kept
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_killed_atomic_write_is_swept(tmp_path):
    """A real kill -9 in the middle of an atomic write; the next sweep removes its temporary."""
    script = textwrap.dedent(f"""
        import time
        from img2spec.io.atomic import atomic_path
        with atomic_path({str(tmp_path / 'out.csv')!r}) as tmp:
            tmp.write_text('partial')
            print('writing', flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and temp_owner(left[0].name) == proc.pid
    assert remove_stale_temps(tmp_path) == left and list(tmp_path.iterdir()) == []


def test_temp_path_names(tmp_path):
    assert temp_path(tmp_path / "processed", pid=42) == tmp_path / ".processed.tmp-42"
    assert temp_owner(".processed.tmp-42") == 42 and temp_owner(".processed.tmp-42-old") == 42
    assert temp_owner("processed.tmp-42") is None and temp_owner(".processed") is None


