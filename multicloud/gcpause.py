"""Building a large tree of objects that all stay alive, with the cyclic collector paused.

Reading a 20,000-job file makes about a million containers (parser events, dicts, lists,
models), none of them garbage. CPython's collector runs every few hundred allocations and
its older generations re-scan everything built so far, which cost 3-4 times the reading
itself (docs/architecture.md, "Jobs and their lifecycle"). Pausing it while such a tree is
built, then letting it run again, collects the same garbage later at a fraction of the cost.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Disable the cyclic garbage collector for the block; enable it again after.

    Nested or concurrent blocks are safe: only the block that found the collector enabled
    enables it again, so a caller that disabled it on purpose keeps it disabled.

    Yields:
        Nothing; the block runs with the collector disabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # What the block built lives on: move it (and whatever else is young) to the
            # oldest generation at once, without a scan; otherwise the first young
            # collection after the block walks the whole tree. Not when something is
            # frozen already: ``unfreeze`` would thaw that too, and what froze it (the
            # scheduler actor's start-up heap) meant it to stay out of every collection.
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class IdleCollections:
    """The collector's runs, moved to moments when nothing waits on this process.

    A collection holds the interpreter's lock: every thread stops until it ends. In the
    scheduler actor a young collection took 13 ms (up to 38), a middle one about 50 ms, a
    few dozen times a minute under 1,000 submissions/s, each added whole to the latency of
    whatever submission happened to be in flight. The cycle calls this object when it has
    nothing left to do; automatic collections stay as a backstop, far enough off that a
    cycle that keeps going idle never meets them.

    A full collection walks the whole heap (about a quarter of a second for three million
    objects) and submissions keep arriving while it runs, "idle" or not. CPython's own
    schedule holds one back until the survivors since the last have grown by a quarter,
    a count it does not expose; here one runs at most once per ``full_every_s`` and a
    middle collection takes its place in between.

    Args:
        young: Objects allocated (net) since the last collection from which a
            collection is due at the next idle moment.
        backstop: The automatic collections' young threshold (for a process that never
            goes idle).
        full_every_s: Seconds at least between two full collections made here.
        clock: Monotonic seconds (injected for tests).

    Raises:
        ValueError: ``young`` is not in ``(0, backstop]``, or ``full_every_s`` is negative.
    """

    def __init__(
        self,
        young: int,
        backstop: int,
        *,
        full_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < young <= backstop:
            raise ValueError(f"need 0 < young <= backstop, got {young} and {backstop}")
        if full_every_s < 0:
            raise ValueError(f"full_every_s must be >= 0, got {full_every_s}")
        self.young = young
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()
        gc.set_threshold(backstop, *gc.get_threshold()[1:])

    def __call__(self) -> int | None:
        """Collect now if a collection is due, as the automatic schedule would have.

        Returns:
            The generation collected (0, 1 or 2), or None if none was due.
        """
        count0, count1, count2 = gc.get_count()
        if count0 < self.young or not gc.isenabled():
            return None
        _, every1, every2 = gc.get_threshold()
        # Each generation is due after ``threshold`` collections of the one below it, as
        # in the automatic schedule (whose full collections also wait for the survivors
        # since the last one to grow by a quarter; those it counts are not exposed).
        generation = 2 if count1 >= every1 and count2 >= every2 else 1 if count1 >= every1 else 0
        if generation == 2:
            now = self._clock()
            if now - self._last_full < self.full_every_s:
                generation = 1
            else:
                self._last_full = now
        gc.collect(generation)
        return generation
