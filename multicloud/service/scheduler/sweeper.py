"""The orphan sweep: terminate workloads tagged with this install that no live attempt owns.

They come from crashes between a cloud's answer and the store's record, from launches
abandoned at their deadline, and from jobs that ended while their launch was in flight.
The sweep runs at start and every ``sweep_interval_s``, one call per provider that can list
what it launched (``SupportsSweep``).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging

from multicloud.provider import OwnedWorkload
from multicloud.service.effects import Effects
from multicloud.service.scheduler.book import Book
from multicloud.service.scheduler.timing import Clock, Timer

__all__ = ["Sweeper"]

log = logging.getLogger(__name__)


class Sweeper:
    """The sweep step of the cycle.

    Args:
        book: The cycle's bookkeeping.
        effects: Adapter access.
        providers: Fleet provider names.
        install_id: This installation's id.
        clock: The scheduler's clock.
        interval: Seconds between sweeps.
    """

    def __init__(
        self,
        book: Book,
        effects: Effects,
        providers: list[str],
        *,
        install_id: str,
        clock: Clock,
        interval: float,
    ) -> None:
        self.book = book
        self.effects = effects
        self.providers = providers
        self.install_id = install_id
        self.timer = Timer(clock, interval)
        self._calls: dict[str, cf.Future[list[OwnedWorkload]]] = {}

    def outstanding(self) -> list[cf.Future[list[OwnedWorkload]]]:
        """Sweep listings not answered yet."""
        return [f for f in self._calls.values() if not f.done()]

    def send(self) -> None:
        """Ask each provider what this install runs there, when due."""
        if not self.timer.due():
            return
        for provider in self.providers:
            if provider in self._calls:
                continue
            fut = self.effects.owned(provider, self.install_id)
            if fut is not None:
                self.book.watch(fut)
                self._calls[provider] = fut

    def reap(self) -> None:
        """Terminate what the finished listings found that no live attempt owns."""
        for provider in [p for p, f in self._calls.items() if f.done()]:
            fut = self._calls.pop(provider)
            try:
                owned = fut.result()
            except Exception as exc:
                log.warning("orphan sweep of %s failed: %s", provider, exc)
                continue
            live = {(a.job_id, a.attempt) for a in self.book.index.live.values()}
            orphans = [w for w in owned if (w.job_id, w.attempt) not in live]
            if not orphans:
                continue
            self.book.counters.orphans_terminated += len(orphans)
            log.warning(
                "orphan sweep: terminating %d workload(s) on %s no live attempt owns",
                len(orphans),
                provider,
            )
            self.book.terminate_handles(
                provider, [(w.handle, "sweep-" + w.handle.id) for w in orphans]
            )
            if self.book.metrics is not None:
                self.book.metrics.orphans(provider, len(orphans))
