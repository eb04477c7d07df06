"""The job lifecycle: states, the moves allowed between them, and one move as a value.

Every layer shares this vocabulary: the store enforces it (a compare-and-set per move), the
scheduler decides the moves, the views and the CLI show them. See ``docs/architecture.md``
("The job lifecycle").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple

from multicloud.errors import MulticloudError

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "InvalidTransitionError",
    "JobState",
    "Transition",
    "can_transition",
    "states_of",
]


class InvalidTransitionError(MulticloudError):
    """A job state change is not allowed by the lifecycle, or the job is not where expected."""


class JobState(str, Enum):
    """Where a job is in its lifecycle."""

    PENDING = "pending"
    PLACED = "placed"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    PREEMPTED = "preempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for states a job never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)
ACTIVE_STATES: frozenset[JobState] = frozenset(JobState) - TERMINAL_STATES

_S = JobState
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        # A job nobody can place stays pending (the planner says why); only a user ends it.
        _S.PENDING: frozenset({_S.PLACED, _S.CANCELLED}),
        # Back to PENDING: the launch failed (capacity, quota) and the job is re-placed.
        _S.PLACED: frozenset({_S.PROVISIONING, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.PROVISIONING: frozenset({_S.RUNNING, _S.PREEMPTED, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.PREEMPTED, _S.CANCELLED}),
        # A preempted job is requeued, never resumed in place: the capacity is gone.
        _S.PREEMPTED: frozenset({_S.PENDING, _S.CANCELLED}),
        _S.SUCCEEDED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
    }
)
del _S


def can_transition(src: JobState, dst: JobState) -> bool:
    """Say whether the lifecycle allows a job to move from ``src`` to ``dst``.

    Args:
        src: Current state.
        dst: Wanted state.

    Returns:
        True if the move is allowed.
    """
    return dst in TRANSITIONS[src]


def states_of(states: JobState | Iterable[JobState]) -> frozenset[JobState]:
    """Normalise one state or several into a set.

    Args:
        states: A state or an iterable of states (or their names).

    Returns:
        The states.
    """
    if isinstance(states, JobState):
        return frozenset({states})
    return frozenset(JobState(s) for s in states)


class Transition(NamedTuple):
    """One state change of one job, with its reason.

    Attributes:
        job_id: The job.
        to: New state.
        reason: Why, for the event log and ``explain``.
        expect: States the caller believes the job is in (None: any that may reach ``to``).
    """

    job_id: str
    to: JobState
    reason: str
    expect: JobState | Iterable[JobState] | None = None
