"""What ``status``, ``explain`` and ``audit`` show: typed views of the store's records.

The actor builds these from the store and hands them to the client as they are; the CLI
prints them as tables or, with ``--json``, as their :meth:`to_json` documents. Where a job
runs is read from its attempts' :class:`~multicloud.provider.Place`, the planner's choice
kept whole: accelerator, count per node and catalog version included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from multicloud.lifecycle import JobState
from multicloud.planner.types import AuditEntry
from multicloud.store import AttemptRecord, DecisionRecord, EventRecord, JobRecord, Lease

__all__ = [
    "STATE_STYLE",
    "AttemptView",
    "DecisionView",
    "EventView",
    "ExplainView",
    "JobView",
    "LeaseView",
    "PlacementView",
    "explain_view",
    "job_view",
]


STATE_STYLE: Mapping[str, str] = {
    "pending": "yellow",
    "placed": "cyan",
    "provisioning": "cyan",
    "running": "blue",
    "preempted": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}
"""The rich style each state is shown in, wherever jobs are listed."""


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One launch of a job, where it ran and how it ended."""

    attempt: int
    request_id: str
    handle: str | None
    outcome: str | None
    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    count: int
    nodes: int
    market: str
    price_per_hour: float
    reservation: str | None
    catalog_version: str
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, a: AttemptRecord) -> AttemptView:
        """The view of a recorded attempt."""
        offer = a.place.offer
        return cls(
            attempt=a.attempt,
            request_id=a.request_id,
            handle=a.handle.id if a.handle is not None else None,
            outcome=a.outcome,
            provider=offer.provider,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            accelerator=offer.accelerator,
            count=offer.count,
            nodes=a.place.nodes,
            market=a.place.market.value,
            price_per_hour=round(a.place.price_per_hour, 4),
            reservation=offer.reservation,
            catalog_version=offer.catalog_version,
            started_at=a.started_at,
            ended_at=a.ended_at,
        )

    def to_json(self) -> dict[str, Any]:
        """The attempt as ``status --json`` prints it."""
        return {
            "attempt": self.attempt,
            "request_id": self.request_id,
            "handle": self.handle,
            "outcome": self.outcome,
            "provider": self.provider,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "accelerator": self.accelerator,
            "count": self.count,
            "nodes": self.nodes,
            "market": self.market,
            "price_per_hour": self.price_per_hour,
            "reservation": self.reservation,
            "catalog_version": self.catalog_version,
            "started_at": self.started_at.isoformat(),
            "ended_at": _iso(self.ended_at),
        }


@dataclass(frozen=True, slots=True)
class JobView:
    """A job: its state, where its latest attempt runs, its attempts and its timeline.

    The where-it-runs attributes (provider … catalog version) are those of the latest
    attempt; None before the first placement.
    """

    id: str
    name: str
    state: str
    priority: int
    team: str | None
    kind: str
    attempts: tuple[AttemptView, ...]
    client_key: str | None
    submitted_at: datetime
    updated_at: datetime
    placed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def last(self) -> AttemptView | None:
        """The latest attempt, if any."""
        return self.attempts[-1] if self.attempts else None

    @property
    def provider(self) -> str | None:
        """Provider of the latest attempt."""
        return self.last.provider if self.last else None

    @property
    def region(self) -> str | None:
        """Region of the latest attempt."""
        return self.last.region if self.last else None

    @property
    def instance_type(self) -> str | None:
        """Instance type of the latest attempt."""
        return self.last.instance_type if self.last else None

    @property
    def accelerator(self) -> str | None:
        """Accelerator of the latest attempt, as planned."""
        return self.last.accelerator if self.last else None

    @property
    def count(self) -> int | None:
        """Accelerators per node of the latest attempt."""
        return self.last.count if self.last else None

    @property
    def catalog_version(self) -> str | None:
        """Price data version the latest attempt was planned with."""
        return self.last.catalog_version if self.last else None

    def to_json(self) -> dict[str, Any]:
        """The job as ``status --json`` prints it."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "priority": self.priority,
            "team": self.team,
            "kind": self.kind,
            "provider": self.provider,
            "region": self.region,
            "instance_type": self.instance_type,
            "accelerator": self.accelerator,
            "count": self.count,
            "catalog_version": self.catalog_version,
            "attempts": [a.to_json() for a in self.attempts],
            "client_key": self.client_key,
            "submitted_at": self.submitted_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "placed_at": _iso(self.placed_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def job_view(record: JobRecord, times: Mapping[JobState, datetime] | None = None) -> JobView:
    """Build the view of a job.

    Args:
        record: The job.
        times: When it first entered each state (``Store.state_times``).

    Returns:
        The view.
    """
    times = times or {}
    finished = next(
        (times[s] for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED) if s in times),
        None,
    )
    return JobView(
        id=record.id,
        name=record.name,
        state=record.state.value,
        priority=record.priority,
        team=record.team,
        kind=record.job.kind.value,
        attempts=tuple(AttemptView.of(a) for a in record.attempts),
        client_key=record.client_key,
        submitted_at=record.submitted_at,
        updated_at=record.updated_at,
        placed_at=times.get(JobState.PLACED),
        started_at=times.get(JobState.RUNNING),
        finished_at=finished,
    )


@dataclass(frozen=True, slots=True)
class PlacementView:
    """One assignment of a decision: where the planner put (part of) a job."""

    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str | None
    nodes: int
    replicas: int
    market: str
    price_per_hour: float | None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> PlacementView:
        """Read an assignment as the planner wrote it (``Assignment.to_dict``)."""
        return cls(
            provider=str(doc.get("provider")),
            region=str(doc.get("region")),
            zone=doc.get("zone"),
            instance_type=str(doc.get("instance_type")),
            accelerator=doc.get("accelerator"),
            nodes=int(doc.get("nodes", 0)),
            replicas=int(doc.get("replicas", 1)),
            market=str(doc.get("market")),
            price_per_hour=doc.get("price_per_hour"),
        )


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A placement decision: where (or nothing), why, on which price data."""

    at: datetime
    placement: tuple[PlacementView, ...]
    reasons: tuple[str, ...]
    catalog_version: str
    raw: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, d: DecisionRecord) -> DecisionView:
        """The view of a recorded decision."""
        return cls(
            d.at,
            tuple(PlacementView.of(p) for p in d.placement),
            d.reasons,
            d.catalog_version,
            d.placement,
        )

    def to_json(self) -> dict[str, Any]:
        """The decision as ``explain --json`` prints it (placement as the planner wrote it)."""
        return {
            "at": self.at.isoformat(),
            "placement": [dict(p) for p in self.raw],
            "reasons": list(self.reasons),
            "catalog_version": self.catalog_version,
        }


@dataclass(frozen=True, slots=True)
class EventView:
    """One lifecycle event."""

    at: datetime
    from_state: str | None
    to_state: str
    reason: str

    @classmethod
    def of(cls, e: EventRecord) -> EventView:
        """The view of a recorded event."""
        src = e.from_state.value if e.from_state is not None else None
        return cls(e.at, src, e.to_state.value, e.reason)

    def to_json(self) -> dict[str, Any]:
        """The event as ``explain --json`` prints it."""
        return {
            "at": self.at.isoformat(),
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ExplainView:
    """Why a job is where it is: the job, its decisions, its events, its ROFR lines."""

    job: JobView
    decisions: tuple[DecisionView, ...]
    events: tuple[EventView, ...]
    audit: tuple[AuditEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """The document ``explain --json`` prints."""
        return {
            "job": self.job.to_json(),
            "decisions": [d.to_json() for d in self.decisions],
            "events": [e.to_json() for e in self.events],
            "audit": [e.to_dict() for e in self.audit],
        }


def explain_view(
    record: JobRecord,
    times: Mapping[JobState, datetime] | None,
    decisions: Sequence[DecisionRecord],
    events: Sequence[EventRecord],
    audit: Sequence[AuditEntry],
) -> ExplainView:
    """Build the explanation of a job from what the store recorded.

    Args:
        record: The job.
        times: When it first entered each state.
        decisions: Its decisions.
        events: Its events.
        audit: Its ROFR ledger lines.

    Returns:
        The view.
    """
    return ExplainView(
        job_view(record, times),
        tuple(DecisionView.of(d) for d in decisions),
        tuple(EventView.of(e) for e in events),
        tuple(audit),
    )


@dataclass(frozen=True, slots=True)
class LeaseView:
    """The store's lease as ``status`` shows it, and where the scheduler asked stands.

    Attributes:
        lease: The lease as read: holder (``owner``, ``install_id``, ``host``, ``pid``,
            ``ray_address``, ``actor``), epoch, since when, until when (database time).
        role: The scheduler asked: ``active`` (holds the lease and runs the cycle) or
            ``standby`` (waits for the lease to run out).
        scheduler_epoch: The epoch the scheduler asked writes under (None: standby).
        lost: Why the scheduler asked last lost the lease, if it did.
    """

    lease: Lease
    role: str
    scheduler_epoch: int | None
    lost: str | None

    @property
    def epoch(self) -> int:
        """The store's fencing epoch (grows by one on every takeover)."""
        return self.lease.epoch

    @property
    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the lease, as ``status --json`` shows it."""
        return asdict(self.lease.holder) if self.lease.holder is not None else None

    def describe(self) -> str:
        """One line: who holds the lease, since when, until when, and this role."""
        return f"Lease: {self.lease.describe()}; this scheduler is {self.role}"

    def to_json(self) -> dict[str, Any]:
        """The lease as ``status --json`` prints it (its ``lease`` key)."""
        return {
            **self.lease.to_json(),
            "role": self.role,
            "scheduler_epoch": self.scheduler_epoch,
            "lost": self.lost,
        }
