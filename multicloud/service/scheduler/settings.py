"""How the cycle paces itself, and the crash points the restart tests use."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CRASH_POINTS", "CrashPoints", "Settings"]

log = logging.getLogger(__name__)

CRASH_POINTS: tuple[str, ...] = ("after_decide", "after_launch", "mid_status")
"""Places where :class:`CrashPoints` may kill the process (restart-safety tests)."""


@dataclass(frozen=True)
class Settings:
    """How the cycle paces itself. Every duration is read on the scheduler's one clock.

    Attributes:
        tick_s: Longest sleep between ticks when nothing wakes the loop (a submission, an
            adapter answer and every timer below wake it at once).
        status_interval_s: How often each provider is asked for the status of its workloads.
        replan_interval_s: How often clouds are asked whether capacity appeared for jobs
            that could not be placed (a plan follows only if it did).
        blocked_ttl_s: How long a scope that failed with a capacity or quota error is
            kept out of plans.
        offers_timeout_s: How long a provider that is not a ROFR holder may take to answer
            for offers before a plan goes ahead without it.
        offers_wait_s: How long (real time) a step waits for offers right after asking,
            before it leaves the answers to a later tick.
        inline_plan_jobs: Plans of at most this many jobs run on the cycle's thread; larger
            ones on the planner thread, while the cycle goes on.
        max_attempts: Attempts after which a job that keeps being requeued fails.
        transient_retries: Re-sends of a launch that failed with a transient error before
            it is re-placed elsewhere.
        retry_backoff_s: Wait before the first re-send (doubles each time).
        launch_deadline_s: A launch call not answered by then counts as a transient error
            (re-sent under the same request id; a hung call cannot hold its job for ever).
        sweep_interval_s: How often the orphan sweep runs (it also runs at start).
        launch_batch: Launches sent to one provider in one call at most.
        status_chunk: Workloads whose status answers are applied per tick (one store
            transaction each): placing never waits behind more than that.
        lease_ttl_s: How long the store's lease lasts unless renewed; another scheduler
            may take it over only after that (database time, ``docs/architecture.md``).
        lease_renew_s: How often the holder renews it (well under the TTL).
        lease_poll_s: How often a standby looks whether the lease has run out.
    """

    tick_s: float = 1.0
    status_interval_s: float = 0.5
    replan_interval_s: float = 2.0
    blocked_ttl_s: float = 60.0
    offers_timeout_s: float = 10.0
    offers_wait_s: float = 0.003
    inline_plan_jobs: int = 256
    max_attempts: int = 10
    transient_retries: int = 3
    retry_backoff_s: float = 0.2
    launch_deadline_s: float = 300.0
    sweep_interval_s: float = 10.0
    launch_batch: int = 256
    status_chunk: int = 256
    lease_ttl_s: float = 15.0
    lease_renew_s: float = 3.0
    lease_poll_s: float = 1.0

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> Settings:
        """Build settings from a saved config's overrides, ignoring fields no longer known.

        A config saved by an older multicloud may name settings that were removed (such
        as ``max_plan_jobs``); refusing it would stop ``multicloud start`` from resuming.

        Args:
            overrides: Field name → value.

        Returns:
            The settings.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            log.warning("ignoring scheduler settings this version does not know: %s", unknown)
        return cls(**{k: v for k, v in overrides.items() if k in known})


class CrashPoints:
    """Kill the process at named points with given probabilities (a test seam).

    Restart safety is a claim about crashes at *any* point; tests make the points that
    matter most likely: between deciding and launching, after a launch returned but
    before it was recorded, and half-way through applying a status batch.

    Args:
        probabilities: Point name (see ``CRASH_POINTS``) → probability per pass.
        seed: Seed of the random generator (None: from the OS).
        exit: How to die; ``os._exit`` so that nothing is flushed or cleaned up.

    Raises:
        ValueError: For an unknown point or a probability outside [0, 1].
    """

    def __init__(
        self,
        probabilities: Mapping[str, float],
        *,
        seed: int | None = None,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        for point, p in probabilities.items():
            if point not in CRASH_POINTS:
                raise ValueError(f"unknown crash point {point!r}; known: {CRASH_POINTS}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"crash probability for {point} must be in [0, 1], got {p}")
        self._p = dict(probabilities)
        self._rng = random.Random(seed)
        self._exit = exit

    def __call__(self, point: str) -> None:
        """Maybe die here."""
        p = self._p.get(point, 0.0)
        if p and self._rng.random() < p:
            log.warning("crash point %s: exiting", point)
            self._exit(86)
