"""Building a large tree of objects that all stay alive, with the cyclic collector paused.

Reading a 20,000-job file makes about a million containers (parser events, dicts, lists,
models), none of them garbage. CPython's collector runs every few hundred allocations and
its older generations re-scan everything built so far, which cost 3-4 times the reading
itself (docs/architecture.md, "Jobs and their lifecycle"). Pausing it while such a tree is
built, then letting it run again, collects the same garbage later at a fraction of the cost.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
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
