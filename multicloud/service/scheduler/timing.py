"""Small time-keeping types of the cycle, all on one injected monotonic clock.

The scheduler never reads ``time.monotonic()`` itself: it is handed a clock (a callable
returning seconds) and gives it to every window, TTL, back-off and timer below, so a test's
``multicloud.testing.clock.FakeClock`` decides what time it is everywhere at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

__all__ = [
    "Backoff",
    "BlockedSet",
    "Clock",
    "Timer",
    "earliest",
]

Clock = Callable[[], float]
"""Monotonic seconds: ``time.monotonic`` in the service, a ``FakeClock`` in tests."""


def earliest(times: Iterable[float | None]) -> float | None:
    """Return the smallest of the known times, or None if none is known."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


class Timer:
    """A periodic deadline: due at once (or after one interval), then every ``interval``.

    Args:
        clock: The clock.
        interval: Seconds between two due times.
        due_now: Due at once rather than one interval from now.
    """

    def __init__(self, clock: Clock, interval: float, *, due_now: bool = True) -> None:
        self._clock = clock
        self.interval = interval
        self.next_at = 0.0 if due_now else clock() + interval

    def due(self) -> bool:
        """True (and rearmed) when the deadline has passed."""
        now = self._clock()
        if now < self.next_at:
            return False
        self.next_at = now + self.interval
        return True


class BlockedSet:
    """Scopes (``provider``, ``provider/region``, ``provider/region/zone``) kept out of plans.

    A scope that failed with a capacity or quota error is blocked for a TTL; blocking it
    again restarts the TTL.

    Args:
        clock: The clock.
        ttl: Seconds a scope stays blocked.
    """

    def __init__(self, clock: Clock, ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._until: dict[str, float] = {}

    def block(self, scope: str) -> None:
        """Keep ``scope`` out of plans for the TTL from now."""
        self._until[scope] = self._clock() + self._ttl

    def expire(self) -> list[str]:
        """Unblock the scopes whose TTL ran out; return them."""
        now = self._clock()
        gone = [scope for scope, until in self._until.items() if until <= now]
        for scope in gone:
            del self._until[scope]
        return gone

    def scopes(self) -> frozenset[str]:
        """The scopes blocked now."""
        return frozenset(self._until)

    def next_expiry(self) -> float | None:
        """When the next block runs out (None: nothing is blocked)."""
        return min(self._until.values(), default=None)

    def __contains__(self, scope: object) -> bool:
        return scope in self._until

    def __len__(self) -> int:
        return len(self._until)


class Backoff:
    """Retries of one key at a time (a launch's request id), with doubling waits.

    Args:
        clock: The clock.
        base: Wait before the first retry, in seconds (doubles each time).
        retries: Retries allowed before :meth:`failed` says to give up.
    """

    def __init__(self, clock: Clock, base: float, retries: int) -> None:
        self._clock = clock
        self._base = base
        self._retries = retries
        self._tries: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def failed(self, key: str) -> bool:
        """Count a failure of ``key``; say whether to retry it (after :meth:`ready`).

        Args:
            key: The key.

        Returns:
            True if it may be retried once its wait is over; False once retries ran out.
        """
        tries = self._tries.get(key, 0) + 1
        self._tries[key] = tries
        if tries > self._retries:
            return False
        at = self._clock() + self._base * 2 ** (tries - 1)
        self._not_before[key] = at
        heapq.heappush(self._heap, (at, key))
        return True

    def ready(self, key: str) -> bool:
        """True unless ``key`` is waiting out a back-off."""
        at = self._not_before.get(key)
        return at is None or at <= self._clock()

    def forget(self, key: str) -> None:
        """Drop everything known about ``key`` (it ended, or succeeded)."""
        self._tries.pop(key, None)
        self._not_before.pop(key, None)

    def next_due(self) -> float | None:
        """When the next waiting key may be retried (None: nothing waits)."""
        while self._heap:
            at, key = self._heap[0]
            if self._not_before.get(key) == at:
                return at
            heapq.heappop(self._heap)  # stale: retried, forgotten or pushed again
        return None

