"""Ordered parallel map over chunks of galaxy indices, with a progress bar.

Workers are forked processes holding per-process state (e.g. the bagpipes
model) built once by `init`. Results come back in chunk order, so the caller can
stream them to disk; randomness is per galaxy, never per worker or chunk.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable, Iterable, Iterator, Sequence

from ...io.processes import guarded_initializer
from ...logs import progress

_STATE: dict[str, Any] = {}


def _init(init: Callable[..., Any], args: tuple) -> None:
    _STATE["state"] = init(*args)


def _call(payload: tuple[Callable[[Any, Sequence[int]], Any], Sequence[int]]) -> Any:
    fn, chunk = payload
    return fn(_STATE["state"], chunk)


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def run_chunks(fn: Callable[[Any, Sequence[int]], Any], n_items: int, chunk_size: int, n_workers: int,
               init: Callable[..., Any], init_args: tuple = (), desc: str = "") -> Iterator[tuple[range, Any]]:
    """Yield (chunk, fn(state, chunk)) in order; `state = init(*init_args)` once per process."""
    parts = chunks(n_items, chunk_size)
    bar = progress(total=n_items, desc=desc, unit="gal")
    try:
        if n_workers <= 1 or len(parts) <= 1:
            state = init(*init_args)
            for part in parts:
                yield part, fn(state, part)
                bar.update(len(part))
            return
        ctx = mp.get_context("fork")
        # Workers die with this process: a kill -9 of the stage leaves no orphan blocked on its queue.
        initializer, initargs = guarded_initializer(_init, (init, init_args))
        with ctx.Pool(min(n_workers, len(parts)), initializer=initializer, initargs=initargs) as pool:
            payloads: Iterable = ((fn, part) for part in parts)
            for part, result in zip(parts, pool.imap(_call, payloads)):
                yield part, result
                bar.update(len(part))
    finally:
        bar.close()
