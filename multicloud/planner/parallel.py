"""Independent components searched side by side (docs/architecture.md).

The optimiser's components share no limited pool and no budget, so their searches do not
read each other's state. HiGHS releases the GIL while it runs, and it is most of a large
component's time, so threads give the other cores real work without copying the planner
into other processes. Each search is bounded by its own deterministic work and the plans
are placed in component order afterwards: the plan does not depend on how many threads ran
or how they were scheduled (unless the safety ceiling on solver time fires: what is left of
it when a component starts depends on which others have finished).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from multicloud.planner.types import Policy

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_WORKERS = 4  # past a few, the searches' Python parts queue on the GIL


def workers(policy: Policy) -> int:
    """Threads the optimiser may use: the policy's, or the cores this process may run on."""
    if policy.workers > 0:
        return policy.workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


def in_parallel(
    fn: Callable[[T], R], items: Sequence[T], threads: int, size: Callable[[T], int]
) -> list[R]:
    """``[fn(item) for item in items]``, on up to ``threads`` threads.

    Args:
        fn: The work for one item; must not touch another item's state.
        items: The items.
        threads: Most threads to run at once (1: in this thread, in order).
        size: An estimate of an item's work: the largest start first, so that a long one
            does not start last and run alone.

    Returns:
        The results, in the order of ``items``.
    """
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    order = sorted(range(len(items)), key=lambda i: (-size(items[i]), i))
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        futures = {i: pool.submit(fn, items[i]) for i in order}
        try:
            return [futures[i].result() for i in range(len(items))]
        except BaseException:
            # A failure (or Ctrl-C) must not wait for every queued search to run out.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


class Clock:
    """Solver seconds spent so far against a ceiling, shared by the threads of one plan.

    Args:
        ceiling: The most solver seconds for the whole plan (a safety net: the searches
            end on their work limits first).
    """

    def __init__(self, ceiling: float) -> None:
        self._ceiling = ceiling
        self._spent = 0.0
        self._lock = threading.Lock()

    def left(self) -> float:
        """Seconds left for a search starting now (at least a sliver, to end cleanly)."""
        with self._lock:
            return max(self._ceiling - self._spent, 0.01)

    def spend(self, seconds: float) -> None:
        """Count a finished search's solver seconds."""
        with self._lock:
            self._spent += seconds
