"""What the store hands back and takes in: plain, typed, immutable records.

The store never renders JSON for a command line; the service's views
(``multicloud.service.views``) turn these records into what ``status``, ``explain`` and
``audit`` show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from multicloud.lifecycle import JobState
from multicloud.models import Job
from multicloud.provider import Handle, MarketKind, Place

__all__ = [
    "AttemptRecord",
    "Charge",
    "Decision",
    "DecisionRecord",
    "EventRecord",
    "JobRecord",
    "NewAttempt",
]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One launch of (part of) a job on one place.

    Where it runs is the :class:`~multicloud.provider.Place` the planner chose, exactly as
    planned; the properties below only read it.

    Attributes:
        job_id: Owning job.
        attempt: Attempt number (1-based); an inference job may launch several places in
            one attempt, one record each.
        request_id: Idempotency key sent to the adapter (unique).
        place: Where it runs: the offer as planned, nodes, market, billed price.
        handle: The adapter's handle, once the launch returned.
        outcome: How the attempt ended (None while it is live).
        started_at: When the attempt was decided.
        ended_at: When it ended.
    """

    job_id: str
    attempt: int
    request_id: str
    place: Place
    handle: Handle | None
    outcome: str | None
    started_at: datetime
    ended_at: datetime | None

    @property
    def live(self) -> bool:
        """True until the attempt has an outcome."""
        return self.outcome is None

    @property
    def provider(self) -> str:
        """Fleet provider name."""
        return self.place.offer.provider

    @property
    def region(self) -> str:
        """Region."""
        return self.place.offer.region

    @property
    def zone(self) -> str | None:
        """Zone, if any."""
        return self.place.offer.zone

    @property
    def instance_type(self) -> str:
        """Instance type."""
        return self.place.offer.instance_type

    @property
    def nodes(self) -> int:
        """Nodes launched."""
        return self.place.nodes

    @property
    def market(self) -> MarketKind:
        """Market billed."""
        return self.place.market

    @property
    def price_per_hour(self) -> float:
        """Billed price of all nodes per hour."""
        return self.place.price_per_hour

    @property
    def reservation(self) -> str | None:
        """The prepaid reservation it draws on, if any."""
        return self.place.offer.reservation

    def with_handle(self, handle: Handle) -> AttemptRecord:
        """Return this attempt once its launch returned ``handle``.

        Args:
            handle: The adapter's handle.

        Returns:
            A copy with the handle set.
        """
        # Built directly: ``dataclasses.replace`` costs several times as much, once per
        # launch on the cycle's hot path.
        return AttemptRecord(
            self.job_id,
            self.attempt,
            self.request_id,
            self.place,
            handle,
            self.outcome,
            self.started_at,
            self.ended_at,
        )


class NewAttempt(NamedTuple):
    """A launch to record before it is sent (:meth:`Store.begin_attempts`).

    Attributes:
        job_id: Owning job.
        attempt: Attempt number.
        request_id: Idempotency key.
        place: Where it runs, as planned.
    """

    job_id: str
    attempt: int
    request_id: str
    place: Place


class Decision(NamedTuple):
    """Where the planner put a job and why (:meth:`Store.record_decisions`).

    Attributes:
        job_id: The job.
        placement: ``Assignment.to_dict()`` per assignment (empty: not placed).
        reasons: Why.
        catalog_version: Price data version the decision used.
    """

    job_id: str
    placement: Sequence[Mapping[str, Any]]
    reasons: Sequence[str]
    catalog_version: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A recorded decision.

    Attributes:
        job_id: The job.
        at: When it was made.
        placement: The planner's assignments in their JSON form (empty: not placed).
        reasons: Why.
        catalog_version: Price data version.
    """

    job_id: str
    at: datetime
    placement: tuple[Mapping[str, Any], ...]
    reasons: tuple[str, ...]
    catalog_version: str


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One lifecycle event of a job.

    Attributes:
        job_id: The job.
        at: When.
        from_state: State left (None for the submission).
        to_state: State entered.
        reason: Why.
    """

    job_id: str
    at: datetime
    from_state: JobState | None
    to_state: JobState
    reason: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the store knows it.

    Attributes:
        id: Scheduler job id (``job-`` and 12 hex digits).
        name: The spec's name.
        state: Lifecycle state.
        priority: The spec's priority.
        team: The spec's team.
        job: The spec, as submitted.
        submitted_at: Submission time.
        updated_at: Time of the last state change.
        attempts: Launch attempts, oldest first.
        client_key: The idempotency key it was submitted with, if any.
    """

    id: str
    name: str
    state: JobState
    priority: int
    team: str | None
    job: Job
    submitted_at: datetime
    updated_at: datetime
    attempts: tuple[AttemptRecord, ...]
    client_key: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """What one attempt costs a team's budget (:meth:`Store.charges`).

    Attributes:
        team: The job's team.
        job_id: The job.
        attempt: The attempt.
    """

    team: str
    job_id: str
    attempt: AttemptRecord
