"""A workload of the simulated cloud, and the index of the capacity live ones hold."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from multicloud.provider import (
    Handle,
    MarketKind,
    WorkloadState,
)

__all__ = [
    "PROVISIONING_FRACTION",
    "TAG_ATTEMPT",
    "TAG_INSTALL",
    "TAG_JOB",
    "HeldIndex",
    "SimWorkload",
]

PROVISIONING_FRACTION = 0.02
"""Share of a workload's run spent provisioning before it reports RUNNING."""
TAG_JOB = "multicloud:job"
TAG_ATTEMPT = "multicloud:attempt"
TAG_INSTALL = "multicloud:install"


@dataclass
class SimWorkload:
    """One workload launched on the simulated cloud.

    Attributes:
        id: Handle id.
        provider: Fleet provider name that launched it.
        request_id: Idempotency key it was launched with.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes held.
        market: Market value (``MarketKind.value``).
        job_id: Owning job.
        pool: Key of the capacity pool it draws from (``Offer.key`` without reservation).
        pooled: False when it runs on a reservation and so holds no public capacity.
        spec_digest: Digest of the LaunchSpec, to refuse a reused key with another spec.
        launched_at: Clock reading at launch.
        duration_s: Wall seconds the workload runs before succeeding.
        preempt_after_s: Wall seconds after launch at which it is preempted, if ever.
        terminated_at: Clock reading at termination, if terminated.
        tags: Resource tags (job, attempt, install id).
    """

    id: str
    provider: str
    request_id: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: str
    job_id: str
    pool: str
    pooled: bool
    spec_digest: str
    launched_at: float
    duration_s: float
    preempt_after_s: float | None = None
    terminated_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def state_at(self, now: float) -> WorkloadState:
        """Return the workload's state at clock reading ``now``.

        Args:
            now: Clock reading.

        Returns:
            The state the simulated cloud reports.
        """
        if self.terminated_at is not None:
            return WorkloadState.TERMINATED
        elapsed = now - self.launched_at
        # Preemption is only scheduled when it falls before the end of the run, so checking
        # it first never hides a success.
        if self.preempt_after_s is not None and elapsed >= self.preempt_after_s:
            return WorkloadState.PREEMPTED
        if elapsed >= self.duration_s:
            return WorkloadState.SUCCEEDED
        if elapsed < max(0.0, PROVISIONING_FRACTION * self.duration_s):
            return WorkloadState.PROVISIONING
        return WorkloadState.RUNNING

    def live_at(self, now: float) -> bool:
        """Return True while the workload holds capacity (provisioning or running)."""
        return self.state_at(now) in (WorkloadState.PROVISIONING, WorkloadState.RUNNING)

    def ends_at(self) -> float:
        """Return the clock reading at which the run ends, unless terminated before."""
        end = self.duration_s
        if self.preempt_after_s is not None:
            end = min(end, self.preempt_after_s)
        return self.launched_at + end

    def handle(self) -> Handle:
        """Return the handle the scheduler holds for this workload."""
        return Handle(
            provider=self.provider,
            id=self.id,
            request_id=self.request_id,
            region=self.region,
            zone=self.zone,
            instance_type=self.instance_type,
            nodes=self.nodes,
            market=MarketKind(self.market),
            job_id=self.job_id,
        )


class HeldIndex:
    """Nodes held per pool by live pooled workloads, kept up to date as they change.

    Counting every workload ever launched on each ``offers`` or ``launch`` would make a run
    of ten thousand launches quadratic; instead the index adds a workload's nodes when it is
    launched, subtracts them when it is terminated, and finds runs that ended on their own
    through a heap of end times per pool. Ending is only permanent while the clock moves
    forward, so an earlier reading than the last one seen rebuilds the index.
    """

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.seen = -math.inf
        self._counted: dict[str, SimWorkload] = {}
        self._ends: dict[str, list[tuple[float, str]]] = {}

    def rebuild(self, workloads: Iterable[SimWorkload]) -> None:
        """Forget everything and count ``workloads`` again."""
        self.held.clear()
        self._counted.clear()
        self._ends.clear()
        self.seen = -math.inf
        for workload in workloads:
            self.add(workload)

    def add(self, workload: SimWorkload) -> None:
        """Count a workload, unless it holds no public capacity or was terminated."""
        if not workload.pooled or workload.terminated_at is not None:
            return
        self.remove(workload.id)
        self._counted[workload.id] = workload
        self.held[workload.pool] = self.held.get(workload.pool, 0) + workload.nodes
        heapq.heappush(self._ends.setdefault(workload.pool, []), (workload.ends_at(), workload.id))

    def remove(self, workload_id: str) -> None:
        """Stop counting a workload (its heap entry is skipped when it comes up)."""
        workload = self._counted.pop(workload_id, None)
        if workload is not None:
            self.held[workload.pool] -= workload.nodes

    def at(self, now: float) -> dict[str, int]:
        """Return the nodes held per pool at clock reading ``now`` (not before ``seen``)."""
        self.seen = now
        # End times are sums rounded once, so let entries a hair past `now` through to the
        # exact test of `live_at` rather than miss one that ended by the exact rule.
        horizon = now + 1e-12 * (1.0 + abs(now))
        for ends in self._ends.values():
            keep = []
            while ends and ends[0][0] <= horizon:
                entry = heapq.heappop(ends)
                workload = self._counted.get(entry[1])
                if workload is None:
                    continue
                if workload.live_at(now):
                    keep.append(entry)
                else:
                    self.remove(entry[1])
            for entry in keep:
                heapq.heappush(ends, entry)
        return {pool: nodes for pool, nodes in self.held.items() if nodes}
