"""Watching status: one batch per provider, and what each answer means for its job.

A provider whose last batch has not answered (or not been applied) is not asked again (no
pile-up). Answers are applied ``status_chunk`` rows per tick, each chunk one store
transaction: placing, which runs first in every tick, never waits behind a whole batch,
and a crash half-way through a batch leaves whole jobs changed or unchanged.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime

from multicloud.lifecycle import JobState
from multicloud.provider import WorkloadState, WorkloadStatus
from multicloud.service.effects import Effects
from multicloud.service.scheduler.book import Book
from multicloud.service.scheduler.index import JobIndex
from multicloud.service.scheduler.settings import CrashPoints, Settings
from multicloud.service.scheduler.timing import Clock, Timer
from multicloud.store import AttemptRecord

__all__ = ["StatusWatcher"]

log = logging.getLogger(__name__)

S = JobState
_BAD = frozenset(
    {
        WorkloadState.FAILED,
        WorkloadState.PREEMPTED,
        WorkloadState.TERMINATED,
        WorkloadState.UNKNOWN,
    }
)


class StatusWatcher:
    """The status step of the cycle.

    Args:
        book: The cycle's bookkeeping.
        effects: Adapter access.
        settings: Pacing.
        clock: The scheduler's clock.
        wall: UTC time for the store.
        crash: Crash points.
    """

    def __init__(
        self,
        book: Book,
        effects: Effects,
        *,
        settings: Settings,
        clock: Clock,
        wall: Callable[[], datetime],
        crash: CrashPoints,
    ) -> None:
        self.book = book
        self.effects = effects
        self.chunk = settings.status_chunk
        self.timer = Timer(clock, settings.status_interval_s)
        self.wall = wall
        self.crash = crash
        self._calls: dict[str, tuple[cf.Future[dict[str, WorkloadStatus]], list[str]]] = {}
        # Answers waiting to be applied, a chunk per tick, so that placing (which runs
        # first in every tick) never waits behind thousands of status answers.
        self._backlog: deque[tuple[str, list[str], dict[str, WorkloadStatus]]] = deque()
        self._deferred = False

    @property
    def index(self) -> JobIndex:
        """The cycle's index (rebuilt from the store after a failed tick)."""
        return self.book.index

    def outstanding(self) -> list[cf.Future[dict[str, WorkloadStatus]]]:
        """Status batches not answered yet."""
        return [f for f, _ in self._calls.values() if not f.done()]

    def busy(self) -> bool:
        """True while answers wait to be applied."""
        return bool(self._backlog)

    def send(self) -> None:
        """Ask each provider for the status of its workloads, when due."""
        if not self.timer.due():
            return
        for provider, rows in self.index.launched_by_provider():
            if provider in self._calls:
                continue  # the last batch has not answered (or been applied): no pile-up
            handles = [r.handle for r in rows if r.handle is not None]
            fut = self.effects.status(provider, handles)
            self.book.watch(fut)
            self._calls[provider] = (fut, [r.request_id for r in rows])

    def reap(self, *, defer: bool = False) -> None:
        """Take in finished batches, then apply one chunk of answers.

        A chunk is ``status_chunk`` rows in one transaction (if it changed anything);
        the rest waits for the next tick, which comes at once.

        Args:
            defer: Jobs were submitted while this tick ran. Their plan comes first: the
                chunk (milliseconds of writes) waits for the next tick, which comes at
                once, unless the last tick deferred it already, so answers never starve.
        """
        for provider, (fut, keys) in list(self._calls.items()):
            if not fut.done() or any(p == provider for p, _, _ in self._backlog):
                continue
            try:
                answers = fut.result()
            except Exception as exc:
                log.warning("status from %s failed: %s", provider, exc)
                del self._calls[provider]
                continue
            self._backlog.append((provider, keys, answers))
        if not self._backlog:
            return
        if defer and not self._deferred:
            self._deferred = True
            self.book.notify()
            return
        self._deferred = False
        self._apply_chunk()

    def _apply_chunk(self) -> None:
        provider, keys, answers = self._backlog[0]
        taken, rest = keys[: self.chunk], keys[self.chunk :]
        if rest:
            self._backlog[0] = (provider, rest, answers)
        else:
            self._backlog.popleft()
            del self._calls[provider]  # applied whole: this provider may be asked again
        by_job: dict[str, list[tuple[AttemptRecord, WorkloadStatus]]] = {}
        for key in taken:
            row = self.index.live.get(key)
            if row is None or row.handle is None:
                continue
            answer = answers.get(row.handle.id)
            if answer is not None:
                by_job.setdefault(row.job_id, []).append((row, answer))
        now = self.wall()
        for job_id, found in by_job.items():
            self.book.terminate(self._job(job_id, found, now))
        # One transaction per chunk that changed something: a crash between chunks
        # leaves whole jobs recorded or untouched.
        self.book.flush(now)
        if rest:
            self.crash("mid_status")
            self.book.notify()  # more to apply: tick again at once

    def _job(
        self, job_id: str, answers: list[tuple[AttemptRecord, WorkloadStatus]], now: datetime
    ) -> list[AttemptRecord]:
        book = self.book
        info = self.index.get(job_id)
        if info is None:
            return []
        bad = [(row, s) for row, s in answers if s.state in _BAD]
        if bad:
            row, s = bad[0]
            where = f"{row.provider}/{row.region}"
            if s.state is WorkloadState.FAILED:
                code = f" (exit code {s.exit_code})" if s.exit_code is not None else ""
                reason = f"workload failed on {where}{code}: {s.message}"
                return book.fail_attempt(job_id, "failed", reason, now, requeue=False)
            outcome = "preempted" if s.state is WorkloadState.PREEMPTED else "lost"
            book.counters.preemptions += outcome == "preempted"
            if s.blocked_scope:
                # Capacity lost after launch: the next plan must not walk straight back in.
                book.block(s.blocked_scope)
            reason = f"{outcome} on {where}: {s.message}"
            return book.fail_attempt(job_id, outcome, reason, now, requeue=True)
        states = {s.state for _, s in answers}
        if info.state is S.PROVISIONING and states & {
            WorkloadState.RUNNING,
            WorkloadState.SUCCEEDED,
        }:
            book.move(info, S.RUNNING, "running")
        # Rows finish one by one: an inference job's replicas on two clouds are reported
        # in two status batches.
        for row, s in answers:
            if s.state is WorkloadState.SUCCEEDED:
                book.end_row(job_id, row.request_id, "succeeded", now)
        if job_id not in self.index.rows and info.state is S.RUNNING:
            book.move(info, S.SUCCEEDED, "finished")
        return []
