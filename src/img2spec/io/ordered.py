"""Results of pool tasks in submission order, with a bounded number of them in flight.

One loop for every pool that feeds a consumer in order: the prepare stage's worker processes
(`prep.prepare`) and the survey reader's decoding threads (`survey.read.ordered_map`).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order(submit: Callable[[T], Future[R]], items: Iterable[T], in_flight: int) -> Iterator[R]:
    """`submit(item)` for each of `items`, results yielded in the order of `items`, at most
    `in_flight` submitted and not yet taken (memory: that many results; the next is submitted as
    one is taken). A consumer that stops early, or an error, cancels the calls still queued."""
    it = iter(items)
    pending: deque[Future[R]] = deque(submit(x) for x in islice(it, max(1, in_flight)))
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(submit(x) for x in islice(it, 1))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
