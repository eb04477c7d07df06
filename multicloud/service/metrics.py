"""Prometheus metrics of the scheduler.

One registry per scheduler, served by prometheus-client's own HTTP server on the port
given to ``multicloud start --metrics-port``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from multicloud.lifecycle import TERMINAL_STATES, JobState
from multicloud.planner import Plan

__all__ = ["Metrics"]

_ACTIVE = [s.value for s in JobState if s not in TERMINAL_STATES]
_TERMINAL = [s.value for s in TERMINAL_STATES]


class Metrics:
    """The scheduler's metrics.

    Args:
        registry: Registry to register in (a fresh one by default, so tests and several
            schedulers in one process do not collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("multicloud_jobs", "Jobs by lifecycle state", ["state"], registry=r)
        self.submissions = Counter("multicloud_submissions", "Jobs accepted", registry=r)
        self.decisions = Counter("multicloud_decisions", "Jobs placed by the planner", registry=r)
        self.decision_latency = Histogram(
            "multicloud_decision_seconds",
            "Time the planner took per scheduling cycle",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.launches = Counter(
            "multicloud_launches",
            "Launch results by provider and outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.rofr = Counter(
            "multicloud_rofr_answers",
            "ROFR answers by holder and answer",
            ["holder", "answer"],
            registry=r,
        )
        self.spend = Counter(
            "multicloud_spend_usd", "Spend of ended attempts by provider", ["provider"], registry=r
        )
        self.orphan_terminations = Counter(
            "multicloud_orphans_terminated",
            "Workloads the orphan sweep terminated",
            ["provider"],
            registry=r,
        )
        self._terminal: dict[str, float] = dict.fromkeys(_TERMINAL, 0.0)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread.

        Args:
            port: TCP port.
            addr: Address to bind (loopback by default: metrics are not for the world).
        """
        start_http_server(port, addr=addr, registry=self.registry)

    def submitted(self, n: int = 1) -> None:
        """Count accepted jobs."""
        self.submissions.inc(n)

    def decided(self, seconds: float, placed: int, plan: Plan) -> None:
        """Record one planner run.

        Args:
            seconds: Planner time.
            placed: Jobs placed.
            plan: The plan (for ROFR answers).
        """
        self.decision_latency.observe(seconds)
        self.decisions.inc(placed)
        for entry in plan.audit:
            self.rofr.labels(entry.holder, entry.answer).inc()

    def launched(self, provider: str, outcome: str) -> None:
        """Count one launch result."""
        self.launches.labels(provider, outcome).inc()

    def spent(self, provider: str, usd: float) -> None:
        """Add the cost of an ended attempt."""
        if usd > 0:
            self.spend.labels(provider).inc(usd)

    def orphans(self, provider: str, n: int) -> None:
        """Count workloads the sweep terminated."""
        self.orphan_terminations.labels(provider).inc(n)

    def set_active(self, counts: Mapping[str, int]) -> None:
        """Set the gauges of the non-terminal states."""
        for state in _ACTIVE:
            self.jobs.labels(state).set(counts.get(state, 0))
        for state, n in self._terminal.items():
            self.jobs.labels(state).set(n)

    def set_terminal(self, counts: Mapping[str, int]) -> None:
        """Start the terminal-state gauges from the store's counts."""
        for state in _TERMINAL:
            self._terminal[state] = float(counts.get(state, 0))

    def finished(self, state: str) -> None:
        """Count a job reaching a terminal state."""
        if state in self._terminal:
            self._terminal[state] += 1
