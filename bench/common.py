"""Shared benchmark helpers: machine facts, whole-process timing + peak memory, medians.

`measure_command` runs one command as an isolated subprocess (its own session, so a
timeout kills the whole tree) and reports:
- wall seconds, user + system CPU seconds (kernel rusage of the tree);
- `peak_pss_bytes` / `peak_rss_bytes`: the largest *sum* over the process tree sampled
  with psutil, RSS every `interval` s, PSS as often as `PSS_DUTY` of one core allows (PSS
  splits copy-on-write pages of forked workers between processes, so it is the fair "how
  much RAM does this need" figure, but the kernel walks every mapping to give it);
- `max_process_rss_bytes`: the kernel's exact high-water RSS of the largest single process
  in the tree (`wait4` rusage, what `/usr/bin/time -v` prints), immune to sampling gaps.
  Linux carries the launching process's RSS high-water mark across fork+exec into it, so
  launch from a small process (run_all.py imports no TensorFlow) or it reads high.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import psutil

GIB = 1024**3
SAMPLE_INTERVAL_S = 0.2
"""Memory sampling period of the process tree (RSS; PSS at most at PSS_DUTY)."""
PSS_DUTY = 0.02
"""Share of one core the PSS samples may take. Sampling PSS of a TensorFlow survey tree every
0.2 s took ~27% of a core (psutil reads /proc/<pid>/smaps: ~23 ms per TensorFlow process),
which the measured commands lost on a 2-core machine."""
TAIL_CHARS = 2000
"""Characters of a failed command's log kept in the report."""
PACKAGES = ("tensorflow", "keras", "numpy", "astropy", "scipy", "pandas", "dvc", "mlflow", "optuna",
            "bagpipes", "speclite", "scikit-learn", "pyarrow")
"""Versions recorded in the machine facts (figures are only comparable at equal versions)."""


@dataclass
class Measurement:
    """One whole-process run."""

    cmd: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float
    peak_pss_bytes: int
    peak_rss_bytes: int
    max_process_rss_bytes: int
    timed_out: bool = False
    log_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def peak_gib(self) -> float:
        """Headline peak memory: the sampled tree PSS, or the exact single-process peak if larger."""
        return max(self.peak_pss_bytes, self.max_process_rss_bytes) / GIB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_gib"] = round(self.peak_gib, 3)
        return d


class TreeSampler:
    """Background thread: peak summed PSS and RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_pss = 0
        self.peak_rss = 0
        self.pss_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample_rss(self) -> int:
        """Summed RSS of the tree now (cheap: /proc/<pid>/statm); vanished processes count 0."""
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def sample(self) -> tuple[int, int]:
        """(summed PSS, summed RSS) of the tree now; vanished processes count 0.

        PSS makes the kernel walk every mapping: ~23 ms for one TensorFlow process here, so
        `_run` takes it only at `PSS_DUTY` of one core.
        """
        pss = rss = 0
        for proc in self._tree():
            try:
                info = proc.memory_full_info()
            except psutil.AccessDenied:
                try:
                    info = proc.memory_info()
                except psutil.Error:
                    continue
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return pss, rss

    def _run(self) -> None:
        next_pss = 0.0
        while not self._stop.is_set():
            now = time.perf_counter()
            if now >= next_pss:
                pss, rss = self.sample()
                cost = time.perf_counter() - now
                self.peak_pss = max(self.peak_pss, pss)
                self.pss_samples += 1
                next_pss = now + max(self.interval, cost / PSS_DUTY)
            else:
                rss = self.sample_rss()
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "TreeSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _kill_tree(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
        time.sleep(2.0)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def measure_command(cmd: Sequence[str], *, cwd: str | Path | None = None, env: dict[str, str] | None = None,
                    log_path: str | Path | None = None, timeout_s: float | None = None,
                    interval: float = SAMPLE_INTERVAL_S) -> Measurement:
    """Run `cmd` to completion and measure it (see module doc). Output goes to `log_path`
    (default: discarded); a failure keeps the log's tail in `log_tail`."""
    log_file = open(log_path, "ab") if log_path else open(os.devnull, "wb")
    timed_out = threading.Event()
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval).start()
        watchdog = None
        if timeout_s is not None:
            def _expire() -> None:
                timed_out.set()
                _kill_tree(proc.pid)
            watchdog = threading.Timer(timeout_s, _expire)
            watchdog.daemon = True
            watchdog.start()
        # wait4 (not Popen.wait) so the kernel hands us this child's own rusage
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if watchdog is not None:
            watchdog.cancel()
        sampler.stop()
    finally:
        log_file.close()
    tail = ""
    if (proc.returncode != 0 or timed_out.is_set()) and log_path:
        tail = Path(log_path).read_bytes()[-TAIL_CHARS:].decode("utf-8", "replace")
    return Measurement(
        cmd=list(map(str, cmd)), returncode=proc.returncode, seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_pss_bytes=sampler.peak_pss, peak_rss_bytes=sampler.peak_rss,
        max_process_rss_bytes=usage.ru_maxrss * 1024,  # Linux: KiB
        timed_out=timed_out.is_set(), log_tail=tail,
    )


def median(values: Iterable[float]) -> float:
    """Median of finite values (NaN if none)."""
    vals = [float(v) for v in values if v is not None and v == v]
    return statistics.median(vals) if vals else float("nan")


def summarise_runs(runs: Sequence[Measurement]) -> dict[str, Any]:
    """Median wall/CPU time and max peak memory over repeated runs of one command."""
    return {
        "repeats": len(runs),
        "seconds": round(median(r.seconds for r in runs), 3),
        "seconds_runs": [round(r.seconds, 3) for r in runs],
        "cpu_seconds": round(median(r.cpu_seconds for r in runs), 3),
        "peak_gib": round(max(r.peak_gib for r in runs), 3),
        "peak_pss_gib": round(max(r.peak_pss_bytes for r in runs) / GIB, 3),
        "max_process_rss_gib": round(max(r.max_process_rss_bytes for r in runs) / GIB, 3),
        "ok": all(r.ok for r in runs),
    }


def repeat_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Time an in-process call `repeats` times after `warmup` untimed calls; median seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": median(times), "seconds_runs": [round(t, 4) for t in times], "repeats": repeats}


def growth_exponent(n1: float, t1: float, n2: float, t2: float) -> float | None:
    """b in t ~ n^b between two sizes (1 = linear); None if undefined."""
    import math

    if min(n1, n2, t1, t2) <= 0 or n1 == n2:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed distribution versions (without importing them: TensorFlow takes seconds)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(repo: str | Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the benchmark measured."""
    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty_files": len(dirty.splitlines()) if dirty else 0}


def machine_facts(repo: str | Path | None = None) -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python and package versions, current load."""
    vm = psutil.virtual_memory()
    facts: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(vm.total / GIB, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": package_versions(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "gpu": "none" if not Path("/dev/nvidia0").exists() else "present",
    }
    if repo is not None:
        facts["git"] = git_state(repo)
    return facts


def bench_env(extra: dict[str, str] | None = None, venv_bin: str | Path | None = None) -> dict[str, str]:
    """Environment for benchmark subprocesses: quiet TF, no progress bars, venv first on PATH."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "IMG2SPEC_NO_PROGRESS": "1", "MPLBACKEND": "Agg",
                "PYTHONUNBUFFERED": "1"})
    bin_dir = Path(venv_bin) if venv_bin else Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env
