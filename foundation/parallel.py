"""Bounded, ordered concurrency for the driver's many small round trips (records, fragments, listings).

A dataset of 100k shards is 100k record GETs: one at a time on S3 that is minutes of latency, all at
once it is 100k futures and their results in memory. `ordered_map` keeps a fixed window in flight and
hands results back in input order, so a caller folds them into running totals and memory stays flat in
the number of shards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Threads for S3 round trips: each waits on the network, not on the GIL. boto3's connection pool
# (foundation/storage/s3.py, max_pool_connections=16) bounds what more would buy.
IO_THREADS = 16


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    threads: int = IO_THREADS,
    executor: Executor | None = None,
    window: int | None = None,
) -> Iterator[R]:
    """fn(item) for each item, run on `threads` threads (or on `executor`), yielded in input order with at
    most `window` (default 2 x threads) calls submitted and not yet consumed. An exception is raised at
    its item's turn; the calls still in flight finish first."""
    if executor is None and threads <= 1:
        yield from map(fn, items)
        return
    own = executor is None
    pool = ThreadPoolExecutor(threads, thread_name_prefix="dppp-io") if own else executor
    window = window or 2 * (threads if own else getattr(pool, "_max_workers", threads))
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        if own:
            pool.shutdown(wait=True)
