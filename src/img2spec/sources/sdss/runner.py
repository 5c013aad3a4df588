"""Run one fetch task per object on a bounded thread pool; collect outcomes and failures.

A task returns an outcome label ("fetched", "present", "refetched", "no_match", ...)
or raises FetchError / BadContent / a format error, which becomes one row of the
failures table `reports/<stage>_failures.csv` (objid, url, status, reason). The stage
raises `TooManyFailures` only when failures exceed `max_failure_fraction`.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import pandas as pd

from ...io.atomic import write_csv
from ...logs import progress
from .http import BadContent, FetchError

log = logging.getLogger(__name__)
T = TypeVar("T")

FAILURE_COLUMNS = ("objid", "url", "status", "reason")


class TooManyFailures(RuntimeError):
    """More objects failed than `sdss.max_failure_fraction` allows."""


@dataclass
class Failure:
    objid: int
    url: str
    status: int
    reason: str


def run_tasks(
    items: Iterable[T],
    task: Callable[[T], str],
    objid_of: Callable[[T], int],
    connections: int,
    desc: str,
) -> tuple[Counter, list[Failure]]:
    """Apply `task` to every item with at most `connections` in flight; never loses an item."""
    items = list(items)
    outcomes: Counter = Counter()
    failures: list[Failure] = []
    bar = progress(total=len(items), desc=desc, unit="obj")
    it = iter(items)
    with ThreadPoolExecutor(max_workers=connections, thread_name_prefix=desc) as pool:
        # Submit lazily (at most 2x connections queued) so 36k objects do not become 36k futures.
        pending: dict = {}

        def top_up() -> None:
            while len(pending) < 2 * connections:
                try:
                    item = next(it)
                except StopIteration:
                    return
                pending[pool.submit(task, item)] = item

        top_up()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                try:
                    outcomes[fut.result()] += 1
                except FetchError as exc:
                    failures.append(Failure(objid_of(item), exc.url, exc.status, exc.reason))
                except (BadContent, ValueError, OSError) as exc:
                    failures.append(Failure(objid_of(item), getattr(exc, "url", ""), 0, str(exc)))
                bar.update(1)
            top_up()
    bar.close()
    outcomes["failed"] = len(failures)
    return outcomes, failures


def write_failures(path: Path, failures: list[Failure]) -> None:
    """Always write the table (empty when all went well) so a rerun never shows stale rows."""
    frame = pd.DataFrame([asdict(f) for f in failures], columns=list(FAILURE_COLUMNS))
    write_csv(path, frame.sort_values("objid") if len(frame) else frame)


def check_failures(stage: str, n_total: int, failures: list[Failure], max_fraction: float, table: Path) -> None:
    """Raise TooManyFailures if the failed fraction exceeds `max_fraction`."""
    if not failures:
        return
    reasons = Counter(f.reason.split(":")[0] for f in failures)
    log.warning("%s: %d of %d objects failed (%s); see %s", stage, len(failures), n_total, dict(reasons), table)
    if n_total and len(failures) / n_total > max_fraction:
        raise TooManyFailures(
            f"{stage}: {len(failures)} of {n_total} objects failed "
            f"(> sdss.max_failure_fraction = {max_fraction}); see {table}"
        )
