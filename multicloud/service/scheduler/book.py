"""The cycle's bookkeeping: job moves, ended attempts, terminations, budgets, counters.

Every step of the cycle (placing, launching, watching status, cancelling) changes jobs the
same way; this is that one way. Store writes of a step are queued here and sent in bulk
when the step's transaction closes (:meth:`Book.writing`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from multicloud.lifecycle import JobState, Transition
from multicloud.models import Fleet
from multicloud.provider import Handle
from multicloud.service.effects import Effects
from multicloud.service.metrics import Metrics
from multicloud.service.scheduler.index import JobIndex, JobInfo
from multicloud.service.scheduler.timing import Backoff, BlockedSet
from multicloud.store import AttemptRecord, Store

__all__ = ["Book", "Counters", "Writes", "ended_cost"]

log = logging.getLogger(__name__)

S = JobState


@dataclass
class Writes:
    """Store writes of one step of the cycle, sent in bulk when its transaction closes."""

    handles: list[tuple[str, Handle]] = field(default_factory=list)
    ends: list[tuple[str, str]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass
class Counters:
    """What the cycle has done since it started (``ping`` and benchmarks read them)."""

    cycles: int = 0
    plans: int = 0
    launches: int = 0
    launch_errors: Counter[str] = field(default_factory=Counter)
    preemptions: int = 0
    orphans_terminated: int = 0
    relaunches: int = 0
    cycle_errors: int = 0
    last_error: str | None = None
    # (jobs, planner seconds, record seconds) of recent plans.
    decisions: deque[tuple[int, float, float]] = field(default_factory=lambda: deque(maxlen=4096))
    # (clock reading, seconds, nothing new) of recent ticks.
    ticks: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=65536))


class Book:
    """Job moves and their side effects, shared by every step of the cycle.

    Args:
        store: The store.
        index: The in-memory index.
        fleet: The fleet (time scale, for spend).
        effects: Adapter access (terminations).
        blocked: Scopes kept out of plans.
        backoff: Transient-error retries of launches.
        max_attempts: Attempts after which a requeued job fails.
        metrics: Prometheus metrics, if any.
        notify: Called when an adapter call finishes (wakes the cycle).
    """

    def __init__(
        self,
        store: Store,
        index: JobIndex,
        fleet: Fleet,
        effects: Effects,
        blocked: BlockedSet,
        backoff: Backoff,
        *,
        max_attempts: int,
        metrics: Metrics | None,
        notify: Callable[[], None],
    ) -> None:
        self.store = store
        self.index = index
        self.fleet = fleet
        self.effects = effects
        self.blocked = blocked
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.notify = notify
        self.counters = Counters()
        self.spent: defaultdict[str, float] = defaultdict(float)
        # Live attempts charged to a team, by request id: (team, what was charged), so
        # that the charge follows the attempt's real end (see :meth:`end_row`).
        self.charged: dict[str, tuple[str, float]] = {}
        self.terminations: list[cf.Future[list[str | None]]] = []
        # Set when capacity may have come back (an attempt ended, a block ran out): the
        # next offer round checks, and wakes the stuck jobs that could use it.
        self.capacity_changed = False
        self.pending = Writes()
        self._to_terminate: list[AttemptRecord] = []

    def watch(self, fut: cf.Future[Any]) -> None:
        """Wake the cycle when ``fut`` finishes."""
        fut.add_done_callback(lambda _: self.notify())

    # ------------------------------------------------------------------ writes

    def queue(self) -> Writes:
        """The writes queued since the last flush."""
        return self.pending

    def has_pending(self) -> bool:
        """True if writes wait for a flush."""
        w = self.pending
        return bool(w.handles or w.ends or w.transitions)

    def write_pending(self, now: datetime) -> None:
        """Send the queued writes inside the caller's store batch.

        Args:
            now: Stamped on their events and ended attempts.
        """
        w, self.pending = self.pending, Writes()
        self.store.set_attempt_handles(w.handles)
        self.store.end_attempts(w.ends, now=now)
        self.store.transition_many(w.transitions, now=now)

    def flush(self, now: datetime) -> None:
        """Commit the queued writes in one transaction, then terminate what they ended.

        Steps of the cycle queue their writes rather than open a transaction each: the
        cycle flushes once per tick (or joins them to the plan's transaction), so a tick
        that settles launches and status answers costs one commit, and one that changed
        nothing costs none. Terminations of ended attempts go out only once their end is
        recorded.

        Args:
            now: Stamped on the events and ended attempts.
        """
        if self.has_pending():
            with self.store.batch():
                self.write_pending(now)
        self.send_terminations()

    @contextmanager
    def writing(self, now: datetime) -> Iterator[Writes]:
        """Queue a step's writes and flush them (with anything queued before) at its end.

        Args:
            now: The step's time.

        Yields:
            The queue of writes.
        """
        yield self.pending
        self.flush(now)

    # ------------------------------------------------------------------ job moves

    def move(self, info: JobInfo, to: JobState, reason: str) -> None:
        """Move a job (a compare-and-set on the state it is in now)."""
        self.queue().transitions.append(Transition(info.id, to, reason, info.state))
        self.index.set_state(info, to)
        if to.is_terminal and self.metrics is not None:
            self.metrics.finished(to.value)

    def end_row(self, job_id: str, key: str, outcome: str, now: datetime) -> AttemptRecord | None:
        """End one live attempt (inside :meth:`writing`); return it, or None if not live."""
        row = self.index.drop_row(job_id, key)
        if row is None:
            return None
        self.queue().ends.append((key, outcome))
        self.backoff.forget(key)
        self.capacity_changed = True
        cost = ended_cost(row, now, self.fleet.time_scale)
        if row.handle is not None and self.metrics is not None:
            self.metrics.spent(row.provider, cost)
        charged = self.charged.pop(key, None)
        if charged is not None:
            # A live attempt was charged its job's whole duration; from its end on it
            # costs what it ran, as a restart would recompute it from the store.
            team, planned = charged
            self.spent[team] += cost - planned
        return row

    def end_rows(self, job_id: str, outcome: str, now: datetime) -> list[AttemptRecord]:
        """End every live attempt of a job; return those that have a workload to terminate."""
        ended = [
            self.end_row(job_id, key, outcome, now)
            for key in sorted(self.index.rows.get(job_id, ()))
        ]
        return [row for row in ended if row is not None and row.handle is not None]

    def fail_attempt(
        self, job_id: str, outcome: str, reason: str, now: datetime, *, requeue: bool
    ) -> list[AttemptRecord]:
        """End a job's attempt; requeue the job (or fail it); return workloads to terminate.

        Args:
            job_id: The job.
            outcome: The attempt's outcome (``capacity``, ``preempted``, ``failed``, ...).
            reason: Why, for the events.
            now: When.
            requeue: Place the job again (False: the job fails).

        Returns:
            The ended attempts that have a workload.
        """
        info = self.index.get(job_id)
        ended = self.end_rows(job_id, outcome, now)
        if info is None:
            return ended
        if requeue and info.attempt >= self.max_attempts:
            requeue = False
            reason = f"{reason}; gave up after {info.attempt} attempts"
        if not requeue:
            self.move(info, S.FAILED, reason)
            return ended
        if info.state is S.RUNNING:
            self.move(info, S.PREEMPTED, reason)
        self.move(info, S.PENDING, f"requeued: {reason}")
        return ended

    def maybe_provisioning(self, job_id: str) -> None:
        """Move a placed job on once every one of its launches returned a workload."""
        info = self.index.get(job_id)
        if info is None or info.state is not S.PLACED:
            return
        rows = self.index.rows_of(job_id)
        if rows and all(r.handle is not None for r in rows):
            where = ", ".join(r.handle.id for r in rows if r.handle is not None)
            self.move(info, S.PROVISIONING, f"launched: {where}")

    def block(self, scope: str) -> None:
        """Keep a scope out of plans for the TTL."""
        self.blocked.block(scope)

    # ------------------------------------------------------------------ terminations

    def terminate(self, rows: Iterable[AttemptRecord]) -> None:
        """Terminate the workloads of ended attempts once their end is recorded."""
        self._to_terminate.extend(rows)

    def send_terminations(self) -> None:
        """Send the terminations queued by :meth:`terminate`, batched per provider."""
        rows, self._to_terminate = self._to_terminate, []
        batches: dict[str, list[tuple[Handle, str]]] = {}
        for row in rows:
            if row.handle is not None:
                item = (row.handle, "terminate-" + row.request_id)
                batches.setdefault(row.provider, []).append(item)
        for provider, items in batches.items():
            self.terminate_handles(provider, items)

    def terminate_handles(self, provider: str, items: list[tuple[Handle, str]]) -> None:
        """Terminate workloads on one provider: ``(handle, request_id)`` pairs.

        Raises:
            LeaseLost: The store's lease was taken over: a replaced scheduler's view of
                what is orphaned is stale, so nothing is terminated.
        """
        self.store.lease.check()
        fut = self.effects.terminate(provider, items)
        self.watch(fut)
        self.terminations.append(fut)

    def reap_terminations(self) -> None:
        """Log terminations that failed (the sweep finds the workload again and retries)."""
        done = [f for f in self.terminations if f.done()]
        if not done:
            return
        self.terminations = [f for f in self.terminations if not f.done()]
        for fut in done:
            try:
                errors = [e for e in fut.result() if e]
            except Exception as exc:
                errors = [str(exc)]
            for error in errors:
                log.warning("terminate failed: %s", error)

    # ------------------------------------------------------------------ budgets

    def charge(self, team: str | None, attempt: AttemptRecord, job_hours: float) -> None:
        """Add what an attempt costs to its team's spend.

        A live attempt is charged its job's whole duration (what the plan promised) until
        it ends (:meth:`end_row`); an ended one what it ran, if it ever got a workload.

        Args:
            team: The job's team (None: no budget to charge).
            attempt: The attempt.
            job_hours: The job's duration.
        """
        if team is None:
            return
        if attempt.outcome is None:
            cost = attempt.price_per_hour * job_hours
            self.charged[attempt.request_id] = (team, cost)
        elif attempt.ended_at is not None:
            cost = ended_cost(attempt, attempt.ended_at, self.fleet.time_scale)
        else:
            cost = 0.0
        self.spent[team] += cost

    def clear_charges(self) -> None:
        """Forget every charge (before they are rebuilt from the store)."""
        self.spent.clear()
        self.charged.clear()


def ended_cost(attempt: AttemptRecord, ended_at: datetime, time_scale: float) -> float:
    """What an attempt cost once it ended: its price for the time it ran.

    Args:
        attempt: The attempt.
        ended_at: When it ended.
        time_scale: Wall seconds per simulated hour.

    Returns:
        The cost; nothing for an attempt that never got a workload.
    """
    if attempt.handle is None:
        return 0.0
    hours = (ended_at - attempt.started_at).total_seconds() / time_scale
    return attempt.price_per_hour * hours
