"""Drive the scheduling cycle (no Ray) in tests: fast settings and a bounded tick loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from multicloud.service.scheduler import Scheduler, Settings

__all__ = ["quick_settings", "run_until"]


def quick_settings(**overrides: Any) -> Settings:
    """Return scheduler settings for tests: every step on every tick, short back-offs.

    Args:
        **overrides: Settings fields to change (e.g. a long ``blocked_ttl_s``).

    Returns:
        The settings.
    """
    values: dict[str, Any] = {
        "tick_s": 0.0,
        "status_interval_s": 0.0,
        "replan_interval_s": 0.05,
        "sweep_interval_s": 0.1,
        "retry_backoff_s": 0.01,
        "blocked_ttl_s": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


def run_until(
    scheduler: Scheduler,
    done: Callable[[], bool],
    *,
    timeout: float = 10.0,
    pause: float = 0.002,
) -> None:
    """Tick the scheduler until ``done()`` holds; fail the test after ``timeout`` seconds.

    Args:
        scheduler: The scheduler to drive.
        done: The condition to reach.
        timeout: Seconds before giving up.
        pause: Sleep between ticks (adapter calls run on threads meanwhile).

    Raises:
        AssertionError: On timeout, with the scheduler's stats.
    """
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; stats: {scheduler.stats()}"
        scheduler.tick()
        time.sleep(pause)
