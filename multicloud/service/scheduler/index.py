"""The scheduler's in-memory index of the store: jobs, their live attempts, the queue.

The store is the truth; this index is rebuilt from it at start and kept in step with every
write the cycle makes. It is shaped so that a tick touches only what changed:

- the queue is split into *fresh* pending jobs (never planned since they became pending,
  or woken by new capacity) and *stuck* ones (planned, not placed), the latter indexed by
  the accelerators they accept, so that capacity appearing for an H100 wakes only the jobs
  that could use it;
- state counts are kept as jobs move, never counted over all jobs;
- live attempts are kept by request id, by job, and (the few) without a handle yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from multicloud.lifecycle import JobState
from multicloud.models import Job
from multicloud.store import AttemptRecord

__all__ = ["JobIndex", "JobInfo"]

S = JobState


@dataclass(slots=True)
class JobInfo:
    """What the cycle keeps of an active job.

    Attributes:
        id: Job id.
        spec: The job as submitted.
        state: Its state, as last written.
        attempt: Its highest attempt number so far.
        unplaced: The reason of its last recorded "not placed" decision (None: none).
    """

    id: str
    spec: Job
    state: JobState
    attempt: int
    unplaced: str | None = None


class JobIndex:
    """Active jobs and live attempts, with the queue split into fresh and stuck jobs."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.counts: Counter[JobState] = Counter()
        self._fresh: dict[str, None] = {}
        self._stuck: dict[str, None] = {}
        self._stuck_by_accel: dict[str, set[str]] = {}
        self.live: dict[str, AttemptRecord] = {}
        self.rows: dict[str, set[str]] = {}
        # Nodes live attempts hold per reservation block, kept as rows come and go: every
        # plan reads it, and live attempts run to thousands.
        self.reserved: Counter[str] = Counter()
        # Live rows that have no handle yet (a superset: entries go stale when a row gets
        # its handle or ends; the launcher drops those as it walks them).
        self.unlaunched: dict[str, None] = {}

    # ------------------------------------------------------------------ jobs

    def add(self, info: JobInfo) -> None:
        """Index an active job (a submission, or one recovered from the store)."""
        self.jobs[info.id] = info
        self.counts[info.state] += 1
        if info.state is S.PENDING:
            self._fresh[info.id] = None

    def get(self, job_id: str) -> JobInfo | None:
        """The job, if it is active."""
        return self.jobs.get(job_id)

    def set_state(self, info: JobInfo, state: JobState) -> None:
        """Record that ``info`` moved to ``state`` (and leave the index if it finished)."""
        if info.state is S.PENDING:
            self._leave_queue(info)
        self.counts[info.state] -= 1
        info.state = state
        if state.is_terminal:
            self.jobs.pop(info.id, None)
            return
        self.counts[state] += 1
        if state is S.PENDING:
            self._fresh[info.id] = None

    def _leave_queue(self, info: JobInfo) -> None:
        self._fresh.pop(info.id, None)
        if info.id in self._stuck:
            del self._stuck[info.id]
            for accel in info.spec.resources.accelerator:
                group = self._stuck_by_accel.get(accel)
                if group is not None:
                    group.discard(info.id)
                    if not group:
                        del self._stuck_by_accel[accel]

    def active_counts(self) -> dict[str, int]:
        """Jobs per active state (states without jobs are absent)."""
        return {s.value: n for s, n in self.counts.items() if n > 0}

    # ------------------------------------------------------------------ the queue

    def fresh(self) -> list[JobInfo]:
        """Pending jobs to plan now, in the order they became pending."""
        return [self.jobs[j] for j in self._fresh]

    def has_fresh(self) -> bool:
        """True if some pending job waits for its first plan (or was woken)."""
        return bool(self._fresh)

    def queue_counts(self) -> dict[str, int]:
        """Pending jobs waiting for a plan (fresh) and waiting for capacity (stuck)."""
        return {"fresh": len(self._fresh), "stuck": len(self._stuck)}

    def has_stuck(self) -> bool:
        """True if some pending job was planned and could not be placed."""
        return bool(self._stuck)

    def stuck_accelerators(self) -> frozenset[str]:
        """Accelerators that stuck jobs accept."""
        return frozenset(self._stuck_by_accel)

    def planned(self, infos: Iterable[JobInfo]) -> None:
        """Mark jobs that a plan left pending as stuck until capacity appears for them."""
        for info in infos:
            if info.state is not S.PENDING or info.id not in self.jobs:
                continue
            self._fresh.pop(info.id, None)
            if info.id in self._stuck:
                continue
            self._stuck[info.id] = None
            for accel in info.spec.resources.accelerator:
                self._stuck_by_accel.setdefault(accel, set()).add(info.id)

    def wake(self, accelerators: Iterable[str] | None = None) -> int:
        """Move stuck jobs that accept any of ``accelerators`` (None: all) back to fresh.

        Args:
            accelerators: Accelerators that gained usable capacity.

        Returns:
            How many jobs were woken.
        """
        if accelerators is None:
            woken = list(self._stuck)
        else:
            found: set[str] = set()
            for accel in accelerators:
                found |= self._stuck_by_accel.get(accel, set())
            # Queue order among the woken: the order they got stuck in.
            woken = [j for j in self._stuck if j in found] if found else []
        for job_id in woken:
            info = self.jobs[job_id]
            self._leave_queue(info)
            self._fresh[job_id] = None
        return len(woken)

    # ------------------------------------------------------------------ attempts

    def add_row(self, row: AttemptRecord) -> None:
        """Index a live attempt."""
        old = self.live.get(row.request_id)
        if old is not None and old.reservation is not None:
            self.reserved[old.reservation] -= old.nodes
        if row.reservation is not None:
            self.reserved[row.reservation] += row.nodes
        self.live[row.request_id] = row
        self.rows.setdefault(row.job_id, set()).add(row.request_id)
        if row.handle is None:
            self.unlaunched[row.request_id] = None

    def update_row(self, row: AttemptRecord) -> None:
        """Replace a live attempt (it got its handle)."""
        if row.request_id in self.live:
            self.live[row.request_id] = row

    def drop_row(self, job_id: str, key: str) -> AttemptRecord | None:
        """Forget a live attempt; return it (None if it was not live)."""
        rows = self.rows.get(job_id)
        if rows is not None:
            rows.discard(key)
            if not rows:
                del self.rows[job_id]
        row = self.live.pop(key, None)
        if row is not None and row.reservation is not None:
            self.reserved[row.reservation] -= row.nodes
            if not self.reserved[row.reservation]:
                del self.reserved[row.reservation]
        return row

    def rows_of(self, job_id: str) -> list[AttemptRecord]:
        """A job's live attempts."""
        return [self.live[k] for k in sorted(self.rows.get(job_id, ()))]

    def launched_by_provider(self) -> Iterator[tuple[str, list[AttemptRecord]]]:
        """Live attempts that have a handle, grouped by provider."""
        groups: dict[str, list[AttemptRecord]] = {}
        for row in self.live.values():
            if row.handle is not None:
                groups.setdefault(row.provider, []).append(row)
        yield from groups.items()
