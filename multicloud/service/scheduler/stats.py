"""What the cycle reports about itself: percentiles of ticks and of recent plans.

Benchmarks and ``ping`` read these (docs/architecture.md, "The scheduler"); nothing in the
cycle decides on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["decision_summary", "percentiles", "tick_summary"]


def percentiles(values: list[float], scale: float) -> dict[str, float]:
    """Return count, p50, p99, max and mean of ``values`` times ``scale``.

    Args:
        values: Samples (at least one).
        scale: Factor applied to every figure (1e3: seconds to milliseconds).

    Returns:
        ``{"samples", "p50", "p99", "max", "mean"}``, rounded to three decimals.
    """
    values = sorted(values)
    p50 = values[len(values) // 2]
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return {
        "samples": len(values),
        "p50": round(p50 * scale, 3),
        "p99": round(p99 * scale, 3),
        "max": round(values[-1] * scale, 3),
        "mean": round(sum(values) / len(values) * scale, 3),
    }


def tick_summary(
    ticks: Iterable[tuple[float, float, bool]], since: float, window_s: float
) -> dict[str, Any]:
    """Percentiles of the ticks that started at or after ``since``.

    Args:
        ticks: ``(started_at, seconds, idle)`` per tick, on the scheduler's clock.
        since: Earliest start counted.
        window_s: The window's length, echoed in the result.

    Returns:
        ``{"window_s", "all", "nothing_new"}``: tick milliseconds of every tick, and of
        the ticks that took nothing in and sent or settled nothing (each present only
        when there were such ticks).
    """
    recent = [(s, idle) for at, s, idle in ticks if at >= since]
    out: dict[str, Any] = {"window_s": window_s}
    if recent:
        out["all"] = percentiles([s for s, _ in recent], 1e3)
    quiet = [s for s, idle in recent if idle]
    if quiet:
        out["nothing_new"] = percentiles(quiet, 1e3)
    return out


def decision_summary(samples: Iterable[tuple[int, float, float]]) -> dict[str, Any]:
    """Percentiles of recent plans: jobs per plan, planner and store-record milliseconds.

    Args:
        samples: ``(jobs, plan_seconds, record_seconds)`` per recent plan.

    Returns:
        ``{"recent_plans", "plan_jobs", "plan_ms", "record_ms"}``; empty without samples.
    """
    rows = list(samples)
    if not rows:
        return {}
    return {
        "recent_plans": len(rows),
        "plan_jobs": percentiles([float(r[0]) for r in rows], 1.0),
        "plan_ms": percentiles([r[1] for r in rows], 1e3),
        "record_ms": percentiles([r[2] for r in rows], 1e3),
    }
