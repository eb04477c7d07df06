"""The scheduling cycle, independent of Ray, split by concern (``docs/architecture.md``).

- ``cycle``: :class:`Scheduler`, the tick and the loop that ties the steps together;
- ``index``: the in-memory index of active jobs, live attempts and the queue;
- ``book``: job moves, ended attempts, terminations, budgets, counters;
- ``offers``: offer rounds with the ROFR window and per-provider time-outs;
- ``placing``: incremental planning of what changed, and recording the plan;
- ``launcher``: sending recorded attempts to the clouds and settling the answers;
- ``status``: batched status per provider and what each answer means;
- ``sweeper``: the orphan sweep;
- ``lease``: holding the store's lease (one scheduler per store), renewed on the clock;
- ``timing``: the one injected clock, ``BlockedSet``, ``Backoff``, timers;
- ``settings``: pacing and the crash points of the restart tests.
"""

from __future__ import annotations

from multicloud.service.scheduler.cycle import Scheduler
from multicloud.service.scheduler.settings import CRASH_POINTS, CrashPoints, Settings
from multicloud.service.scheduler.timing import Backoff, BlockedSet, Clock

__all__ = ["CRASH_POINTS", "Backoff", "BlockedSet", "Clock", "CrashPoints", "Scheduler", "Settings"]
