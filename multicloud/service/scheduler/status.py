"""Watching status: one batch per provider, and what each answer means for its job.

A provider whose last batch has not answered is not asked again (no pile-up). Answers are
applied ``status_chunk`` jobs per store transaction, so a crash half-way through a batch
leaves whole jobs changed or unchanged, and the next batch picks up the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable
from datetime import datetime

from multicloud.lifecycle import JobState
from multicloud.provider import WorkloadState, WorkloadStatus
from multicloud.service.effects import Effects
from multicloud.service.scheduler.book import Book
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
        self.index = book.index
        self.effects = effects
        self.chunk = settings.status_chunk
        self.timer = Timer(clock, settings.status_interval_s)
        self.wall = wall
        self.crash = crash
        self._calls: dict[str, tuple[cf.Future[dict[str, WorkloadStatus]], list[str]]] = {}

    def outstanding(self) -> list[cf.Future[dict[str, WorkloadStatus]]]:
        """Status batches not answered yet."""
        return [f for f, _ in self._calls.values() if not f.done()]

    def send(self) -> None:
        """Ask each provider for the status of its workloads, when due."""
        if not self.timer.due():
            return
        for provider, rows in self.index.launched_by_provider():
            if provider in self._calls:
                continue  # the last batch has not answered: do not pile up
            handles = [r.handle for r in rows if r.handle is not None]
            fut = self.effects.status(provider, handles)
            self.book.watch(fut)
            self._calls[provider] = (fut, [r.request_id for r in rows])

    def reap(self) -> None:
        """Apply the answers of finished batches."""
        for provider in [p for p, (f, _) in self._calls.items() if f.done()]:
            fut, keys = self._calls.pop(provider)
            try:
                answers = fut.result()
            except Exception as exc:
                log.warning("status from %s failed: %s", provider, exc)
                continue
            by_job: dict[str, list[tuple[AttemptRecord, WorkloadStatus]]] = {}
            for key in keys:
                row = self.index.live.get(key)
                if row is None or row.handle is None:
                    continue
                answer = answers.get(row.handle.id)
                if answer is not None:
                    by_job.setdefault(row.job_id, []).append((row, answer))
            self._apply(list(by_job.items()))

    def _apply(self, jobs: list[tuple[str, list[tuple[AttemptRecord, WorkloadStatus]]]]) -> None:
        for start in range(0, len(jobs), self.chunk):
            if start:
                self.crash("mid_status")
            now = self.wall()
            stray: list[AttemptRecord] = []
            with self.book.writing(now):
                for job_id, answers in jobs[start : start + self.chunk]:
                    stray.extend(self._job(job_id, answers, now))
            self.book.terminate(stray)

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
