"""The scheduling cycle, independent of Ray: ``Scheduler`` ties the steps together.

Each :meth:`Scheduler.tick` takes in accepted jobs, then runs the steps, none of which ever
waits on an adapter: settle finished launches (:mod:`.launcher`), expire blocks, place
(:mod:`.placing`: offer round → ``plan()`` on the planner thread → one store transaction),
send launches, settle terminations, status answers (:mod:`.status`) and sweeps
(:mod:`.sweeper`), and send the status and sweep calls that are due.

:meth:`Scheduler.run` ticks whenever something happens — a submission, an adapter answer,
a plan finishing — and otherwise sleeps until the next timer (status, sweep, a block's
TTL, a back-off, a deadline), never longer than ``tick_s``. The store is the truth; the
index is rebuilt from it at start (``docs/architecture.md``, "The scheduler").
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from multicloud.lifecycle import JobState, Transition
from multicloud.models import Fleet, Job
from multicloud.planner import Policy
from multicloud.service.effects import Effects
from multicloud.service.metrics import Metrics
from multicloud.service.scheduler.book import Book, Counters
from multicloud.service.scheduler.index import JobIndex, JobInfo
from multicloud.service.scheduler.launcher import Launcher
from multicloud.service.scheduler.lease import LeaseKeeper
from multicloud.service.scheduler.offers import OfferRounds
from multicloud.service.scheduler.placing import Placer
from multicloud.service.scheduler.settings import CrashPoints, Settings
from multicloud.service.scheduler.stats import decision_summary, tick_summary
from multicloud.service.scheduler.status import StatusWatcher
from multicloud.service.scheduler.sweeper import Sweeper
from multicloud.service.scheduler.timing import Backoff, BlockedSet, Clock, earliest
from multicloud.store import LeaseLost, Store

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

S = JobState


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    """The scheduling cycle over a store and a fleet.

    Args:
        store: The job store (the truth).
        fleet: The fleet (providers, contracts, budgets, time scale).
        effects: Asynchronous access to the fleet's adapters.
        install_id: Id tagged on every workload; defaults to the store's.
        settings: Pacing.
        policy: Planner search settings (by default what ``multicloud plan`` uses, so
            the service places what the offline planner would).
        clock: Monotonic seconds for every window, TTL, back-off and timer.
        wall: Current UTC time, for the store and the planner's snapshot.
        crash: Crash points (tests only).
        metrics: Prometheus metrics to update, if any.
        adapters: The adapters themselves, for extras such as ``logs``.
        lease: The store's lease, already acquired (None: the store is not fenced, as
            in tests that run one scheduler).
        idle: Called between ticks when no submission waits (the actor's garbage
            collections run there, where they hold up no one).
    """

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        effects: Effects,
        *,
        install_id: str | None = None,
        settings: Settings | None = None,
        policy: Policy | None = None,
        clock: Clock = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
        crash: CrashPoints | None = None,
        metrics: Metrics | None = None,
        adapters: Mapping[str, object] | None = None,
        lease: LeaseKeeper | None = None,
        idle: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.effects = effects
        self.install_id = install_id or store.install_id()
        self.settings = settings = settings or Settings()
        self.policy = policy or Policy()
        self.clock = clock
        self.wall = wall
        self.metrics = metrics
        self.adapters = dict(adapters or {})
        self.lease = lease
        self.idle = idle
        self.lost: LeaseLost | None = None
        self.lock = threading.RLock()
        self.wake = threading.Event()
        crash = crash or CrashPoints({})
        self.index = JobIndex()
        self.book = Book(
            store,
            self.index,
            fleet,
            effects,
            BlockedSet(clock, settings.blocked_ttl_s),
            Backoff(clock, settings.retry_backoff_s, settings.transient_retries),
            max_attempts=settings.max_attempts,
            metrics=metrics,
            notify=self.wake.set,
        )
        rofr = fleet.contracts.rofr
        rounds = OfferRounds(
            effects,
            list(fleet.providers),
            holders=rofr.holders if rofr else (),
            window=rofr.window if rofr else 0.0,
            timeout=settings.offers_timeout_s,
            clock=clock,
            watch=self.book.watch,
        )
        self._planner = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner")
        steps: dict[str, Any] = {"settings": settings, "clock": clock}
        self.placer = Placer(
            self.book,
            fleet,
            rounds,
            policy=self.policy,
            wall=wall,
            crash=crash,
            executor=self._planner,
            **steps,
        )
        self.launcher = Launcher(
            self.book, effects, wall=wall, install_id=self.install_id, crash=crash, **steps
        )
        self.status = StatusWatcher(self.book, effects, wall=wall, crash=crash, **steps)
        self.sweeper = Sweeper(
            self.book,
            effects,
            list(fleet.providers),
            install_id=self.install_id,
            clock=clock,
            interval=settings.sweep_interval_s,
        )
        # Accepted jobs wait here, one list per submission, for the cycle to take them in:
        # a submission must not wait for a tick to hold the lock. deque ops are atomic.
        self._inbox: deque[list[JobInfo]] = deque()
        self._recover()

    @property
    def counters(self) -> Counters:
        """What the cycle has done since it started."""
        return self.book.counters

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        """Rebuild the in-memory index from the store."""
        for record in self.store.active_jobs():
            attempt = max((a.attempt for a in record.attempts), default=0)
            self.index.add(JobInfo(record.id, record.job, record.state, attempt))
        for charge in self.store.charges():
            info = self.index.get(charge.job_id)
            hours = info.spec.duration_hours if info is not None else 0.0
            self.book.charge(charge.team, charge.attempt, hours)
        for row in self.store.live_attempts():
            self.index.add_row(row)
        # A crash between the store and the cloud leaves launches without handles: they go
        # out again on the first tick under the same request ids.
        self.counters.relaunches = len(self.index.unlaunched)
        if self.metrics is not None:
            counts = self.store.count_by_state()
            self.metrics.set_terminal({s.value: n for s, n in counts.items()})

    def _resync(self) -> None:
        """Drop the in-memory index and queued writes; rebuild both from the store.

        A tick that failed half-way (the store unreachable, say) may have moved jobs in
        memory that the store never recorded: the store is the truth, so the index is
        read back from it, as at start.
        """
        with self.lock:
            try:
                fresh = JobIndex()
                self.book.pending = type(self.book.pending)()
                self.book.index = self.index = fresh
                self.book.clear_charges()
                self._recover()
            except Exception:
                log.exception("could not rebuild the index from the store; retrying later")

    # ------------------------------------------------------------------ API

    def submit(self, items: Sequence[tuple[Job, str | None]]) -> list[tuple[str, bool]]:
        """Accept jobs (already validated against the fleet) and wake the cycle.

        Args:
            items: ``(job, client_key)`` pairs.

        Returns:
            ``(job_id, created)`` per item.
        """
        results = self.store.submit_many(items, now=self.wall())
        created = [
            JobInfo(job_id, job, S.PENDING, 0)
            for (job, _), (job_id, new) in zip(items, results, strict=True)
            if new
        ]
        if created:
            # One entry per submission: the cycle takes a batch whole, and plans it whole.
            self._inbox.append(created)
            if self.metrics is not None:
                self.metrics.submitted(len(created))
            self.wake.set()
        return results

    def _take_inbox(self) -> bool:
        took = False
        while self._inbox:
            for info in self._inbox.popleft():
                self.index.add(info)
            took = True
        return took

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> JobState:
        """Cancel a job and terminate whatever it runs.

        Args:
            job_id: The job.
            reason: Recorded on the event.

        Returns:
            The job's state afterwards (a finished job stays as it was).

        Raises:
            JobNotFoundError: No such job.
        """
        with self.lock:
            self._take_inbox()
            record = self.store.get(job_id)
            if record.state.is_terminal:
                return record.state
            now = self.wall()
            info = self.index.get(job_id)
            try:
                with self.book.writing(now) as writes:
                    if info is not None:
                        self.book.move(info, S.CANCELLED, reason)
                    else:
                        writes.transitions.append(Transition(job_id, S.CANCELLED, reason))
                    self.book.terminate(self.book.end_rows(job_id, "cancelled", now))
            except LeaseLost:
                raise  # the cycle stops on its own next write; nothing to rebuild for
            except Exception:
                # The index moved before the store refused (down, connection cut): left so,
                # the job would be forgotten while the store still runs it. The store is
                # the truth: read the index back from it, as a failed tick does.
                self._resync()
                raise
            self.wake.set()
            return S.CANCELLED

    def logs(self, job_id: str) -> str:
        """Return the output of the job's latest launched workload, where the adapter keeps it.

        Args:
            job_id: The job.

        Returns:
            The output, or a line saying why there is none.

        Raises:
            JobNotFoundError: No such job.
        """
        record = self.store.get(job_id)
        launched = [a for a in record.attempts if a.handle is not None]
        if not launched:
            return f"{job_id} has not been launched yet ({record.state.value})\n"
        last = launched[-1]
        assert last.handle is not None
        reader = getattr(self.adapters.get(last.provider), "logs", None)
        if reader is None:
            return (
                f"{last.provider} keeps no logs for multicloud to read; the workload is "
                f"{last.handle.id} in {last.region}\n"
            )
        return str(reader(last.handle))

    def stats(self) -> dict[str, Any]:
        """Return counters for ``ping``, benchmarks and tests."""
        with self.lock:
            self._take_inbox()
            c = self.counters
            return {
                "install_id": self.install_id,
                "active_jobs": self.index.active_counts(),
                "live_attempts": len(self.index.live),
                "in_flight_launches": self.launcher.in_flight(),
                "blocked": sorted(self.book.blocked.scopes()),
                "cycles": c.cycles,
                "plans": c.plans,
                "launches": c.launches,
                "launch_errors": dict(c.launch_errors),
                "preemptions": c.preemptions,
                "orphans_terminated": c.orphans_terminated,
                "relaunches_after_restart": c.relaunches,
                "cycle_errors": c.cycle_errors,
                "last_error": c.last_error,
                "queue": self.index.queue_counts(),
                **decision_summary(c.decisions),
            }

    # ------------------------------------------------------------------ the cycle

    def tick(self) -> None:
        """Run one pass of the cycle; never blocks on an adapter."""
        with self.lock:
            started = time.perf_counter()
            work = self._work()
            self.counters.cycles += 1
            if self.lease is not None:
                self.lease.renew_if_due()
            self._take_inbox()
            self.launcher.reap()
            if self.book.blocked.expire():
                self.book.capacity_changed = True
            # Placement and launch first: they are what a submitter waits for, while a
            # status batch of thousands of workloads can wait a few milliseconds.
            self.placer.step()
            self.launcher.dispatch()
            self.book.reap_terminations()
            self.status.reap(defer=bool(self._inbox))
            self.sweeper.reap()
            self.status.send()
            self.sweeper.send()
            self.book.flush(self.wall())
            if self.metrics is not None:
                self.metrics.set_active(self.index.active_counts())
            idle = self._work() == work
            self.counters.ticks.append((self.clock(), time.perf_counter() - started, idle))

    def tick_stats(self, window_s: float) -> dict[str, Any]:
        """Percentiles of the ticks of the last ``window_s`` seconds (benchmarks).

        Args:
            window_s: How far back to look, on the scheduler's clock.

        Returns:
            ``{"all": ..., "nothing_new": ...}``: tick milliseconds of every tick, and of
            the ticks that took nothing in and sent or settled nothing.
        """
        with self.lock:
            ticks = list(self.counters.ticks)
        return tick_summary(ticks, self.clock() - window_s, window_s)

    def _work(self) -> tuple[int, ...]:
        """Counts that change whenever a tick does something (to tell idle ticks apart)."""
        return (
            len(self._inbox),
            self.counters.plans,
            len(self.index.live),
            len(self.book.terminations),
            self.launcher.in_flight(),
            len(self.outstanding()),
            sum(self.index.counts.values()),
            self.placer.busy(),
            self.status.busy(),
        )

    def outstanding(self) -> list[cf.Future[Any]]:
        """Every adapter call and plan in flight (tests wait on them between ticks)."""
        return [
            *self.placer.rounds.outstanding(),
            *self.placer.outstanding(),
            *self.launcher.outstanding(),
            *self.status.outstanding(),
            *self.sweeper.outstanding(),
            *(f for f in self.book.terminations if not f.done()),
        ]

    def next_due(self) -> float | None:
        """When a timer of the cycle next runs out (None: nothing is scheduled)."""
        placer = self.placer
        stuck = placer.probe.next_at if self.index.has_stuck() else None
        live = self.status.timer.next_at if self.index.live else None
        return earliest(
            (
                live,
                self.sweeper.timer.next_at,
                stuck,
                self.book.blocked.next_expiry(),
                self.book.backoff.next_due(),
                self.launcher.deadline(),
                placer.rounds.deadline(),
                self.lease.timer.next_at if self.lease is not None else None,
            )
        )

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set or the lease is lost; other errors are logged.

        On ``LeaseLost`` the loop ends at once (kept in :attr:`lost`): no sweep, no
        launch, no write follows from a scheduler that another has replaced.

        Args:
            stop: Set to end the loop.
        """
        while not stop.is_set():
            self.wake.clear()
            try:
                self.tick()
            except LeaseLost as lost:
                log.error("stopping the cycle: %s", lost)
                self.lost = lost
                return
            except Exception as exc:
                log.exception("scheduling cycle failed; rebuilding the index and retrying")
                self.counters.cycle_errors += 1
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                stop.wait(0.5)
                self._resync()
            if self.idle is not None and not self._inbox and not self.wake.is_set():
                self.idle()
            due = self.next_due()
            sleep = self.settings.tick_s
            if due is not None:
                sleep = min(sleep, max(0.0, due - self.clock()))
            self.wake.wait(sleep)

    def busy(self) -> bool:
        """True while jobs wait to be taken in or anything is in flight."""
        with self.lock:
            return bool(
                self._inbox or self.outstanding() or self.placer.busy() or self.status.busy()
            )

    def close(self) -> None:
        """Stop the planner thread (adapter calls belong to the effects' owner)."""
        self._planner.shutdown(wait=False, cancel_futures=True)
