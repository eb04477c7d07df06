"""Launching: send every recorded attempt without a workload, and settle what comes back.

Each launch carries its attempt's :class:`~multicloud.provider.Place` unchanged: the adapter
gets ``place.offer`` exactly as planned (accelerator, prices, reservation, catalog
version) and a spec with the place's nodes and market. Nothing is rebuilt or guessed here.

Launches go out in batches per provider through the effects, which run them off the cycle
(bounded per provider, so one hanging cloud holds only its own workers). A batch not
answered within ``launch_deadline_s`` counts as a transient error: the same request ids are
sent again later, and adapters launch idempotently by them.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from multicloud.lifecycle import JobState
from multicloud.models import Job
from multicloud.provider import LaunchSpec
from multicloud.service.effects import Effects, LaunchItem, LaunchOutcome
from multicloud.service.scheduler.book import Book
from multicloud.service.scheduler.index import JobIndex
from multicloud.service.scheduler.settings import CrashPoints, Settings
from multicloud.service.scheduler.timing import Clock
from multicloud.store import AttemptRecord

__all__ = ["Launcher", "launch_item"]

S = JobState


def launch_item(row: AttemptRecord, spec: Job, install_id: str) -> LaunchItem:
    """Turn a recorded attempt into what the adapter is sent.

    Args:
        row: The attempt, with its place as planned.
        spec: The job.
        install_id: The installation's id, tagged on the workload.

    Returns:
        The launch: the planned offer, and a spec with the place's nodes and market.
    """
    run = spec.run
    launch = LaunchSpec(
        job_id=row.job_id,
        job_name=spec.name,
        attempt=row.attempt,
        nodes=row.place.nodes,
        market=row.place.market,
        install_id=install_id,
        image=run.image,
        command=run.command,
        env=dict(run.env),
        secrets=run.secrets,
        duration_hours=spec.duration_hours,
        checkpoint=run.checkpoint,
        cpus=spec.resources.cpus,
        ray=run.ray,
    )
    return LaunchItem(row.request_id, row.place, launch)


@dataclass
class _Batch:
    future: cf.Future[list[LaunchOutcome]]
    provider: str
    keys: list[str]
    sent_at: float


class Launcher:
    """The launching step of the cycle.

    Args:
        book: The cycle's bookkeeping.
        effects: Adapter access.
        settings: Pacing.
        clock: The scheduler's clock.
        wall: UTC time for the store.
        install_id: Tagged on every workload.
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
        install_id: str,
        crash: CrashPoints,
    ) -> None:
        self.book = book
        self.effects = effects
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.install_id = install_id
        self.crash = crash
        self._batches: list[_Batch] = []
        self._in_flight: set[str] = set()

    @property
    def index(self) -> JobIndex:
        """The cycle's index (rebuilt from the store after a failed tick)."""
        return self.book.index

    def outstanding(self) -> list[cf.Future[list[LaunchOutcome]]]:
        """Launch batches not answered yet."""
        return [b.future for b in self._batches if not b.future.done()]

    def in_flight(self) -> int:
        """Launches sent and not settled."""
        return len(self._in_flight)

    def deadline(self) -> float | None:
        """When the oldest batch in flight runs out of time."""
        if not self._batches:
            return None
        return min(b.sent_at for b in self._batches) + self.settings.launch_deadline_s

    def dispatch(self) -> None:
        """Send every live attempt that has no workload, is not in flight and may go now.

        Raises:
            LeaseLost: The store's lease was taken over; nothing is sent.
        """
        batches: dict[str, list[LaunchItem]] = {}
        backoff = self.book.backoff
        for key in list(self.index.unlaunched):
            row = self.index.live.get(key)
            if row is None or row.handle is not None:
                del self.index.unlaunched[key]
                continue
            if key in self._in_flight or not backoff.ready(key):
                continue
            info = self.index.get(row.job_id)
            if info is not None:
                item = launch_item(row, info.spec, self.install_id)
                batches.setdefault(row.provider, []).append(item)
        if batches:
            # A scheduler whose lease was taken over must not launch: the attempts were
            # recorded under the fence, and this checks it again before the cloud call.
            self.book.store.lease.check()
        size = self.settings.launch_batch
        now = self.clock()
        for provider, items in batches.items():
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                fut = self.effects.launch(provider, chunk)
                self.book.watch(fut)
                keys = [i.request_id for i in chunk]
                self._in_flight.update(keys)
                self._batches.append(_Batch(fut, provider, keys, now))

    def _collect(self) -> list[tuple[str, LaunchOutcome]]:
        now = self.clock()
        limit = self.settings.launch_deadline_s
        outcomes: list[tuple[str, LaunchOutcome]] = []
        keep: list[_Batch] = []
        for batch in self._batches:
            if not batch.future.done():
                if now - batch.sent_at < limit:
                    keep.append(batch)
                    continue
                # Abandoned, not cancelled: a late answer of an idempotent launch is the
                # same workload a re-send gets, and the sweep ends any the job no longer owns.
                message = f"no answer within {limit:g} s"
                outcomes.extend(
                    (batch.provider, LaunchOutcome(k, error="transient", message=message))
                    for k in batch.keys
                )
            else:
                try:
                    outcomes.extend((batch.provider, o) for o in batch.future.result())
                except Exception as exc:  # the call itself died: retry every item
                    outcomes.extend(
                        (batch.provider, LaunchOutcome(k, error="transient", message=str(exc)))
                        for k in batch.keys
                    )
            self._in_flight.difference_update(batch.keys)
        self._batches = keep
        return outcomes

    def reap(self) -> None:
        """Settle finished launches: queue their handles, act on their errors.

        The writes join the book's queue, flushed with the tick (or with the next plan's
        transaction): a handle not yet recorded at a crash is found again by re-sending
        the same request id.
        """
        outcomes = self._collect()
        if not outcomes:
            return
        self.crash("after_launch")
        now = self.wall()
        book = self.book
        settled: list[AttemptRecord] = []
        failed: dict[str, tuple[str, str, bool]] = {}
        for provider, o in outcomes:
            row = self.index.live.get(o.request_id)
            if o.handle is not None:
                if row is None:
                    # The attempt ended (cancelled, or a sibling failed) while the launch
                    # was in flight: the workload is unwanted.
                    book.terminate_handles(provider, [(o.handle, "terminate-" + o.request_id)])
                else:
                    settled.append(self._launched(provider, row, o))
            elif row is not None:
                error = self._failed(provider, o)
                if error is not None:
                    failed[row.job_id] = error
        for row in settled:
            self.index.update_row(row)
        for job_id in {row.job_id for row in settled} - set(failed):
            book.maybe_provisioning(job_id)
        for job_id, (outcome, reason, requeue) in failed.items():
            book.terminate(book.fail_attempt(job_id, outcome, reason, now, requeue=requeue))

    def _launched(self, provider: str, row: AttemptRecord, o: LaunchOutcome) -> AttemptRecord:
        assert o.handle is not None
        self.book.queue().handles.append((o.request_id, o.handle))
        self.book.backoff.forget(o.request_id)
        self.book.counters.launches += 1
        if self.book.metrics is not None:
            self.book.metrics.launched(provider, "ok")
        return row.with_handle(o.handle)

    def _failed(self, provider: str, o: LaunchOutcome) -> tuple[str, str, bool] | None:
        """Count a launch error; return (outcome, reason, requeue) unless it is retried."""
        book = self.book
        kind = o.error or "transient"
        book.counters.launch_errors[kind] += 1
        if book.metrics is not None:
            book.metrics.launched(provider, kind)
        if kind == "transient" and book.backoff.failed(o.request_id):
            return None  # re-sent under the same request id once its back-off is over
        scope = o.scope or provider
        if kind in ("capacity", "quota", "transient"):
            book.block(scope)
        elif kind == "auth":
            book.block(provider)
        return kind, f"{kind} error on {scope}: {o.message}", kind != "invalid"
