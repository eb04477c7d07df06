"""The scheduling cycle of DESIGN.md §6, independent of Ray.

One :class:`Scheduler` owns a store and the fleet's adapters (behind :class:`Effects`). Each
:meth:`Scheduler.tick`:

1. reaps finished launches, terminations and status batches and records what they mean;
2. starts a status batch per provider when one is due;
3. when jobs are pending, asks every provider for offers (holders get the ROFR ``window``
   to answer, the others ``offers_timeout_s``), runs the pure planner, and records every
   placement, attempt, decision and audit line in one store transaction;
4. sends every recorded launch that has no handle and is not in flight.

The store is the truth. Nothing is launched that was not first recorded as an attempt with a
request id derived from job id, attempt and place, and adapters launch idempotently by that
id: a scheduler killed anywhere and restarted re-sends the same launches and gets the same
workloads back. What the scheduler keeps in memory is an index of the store, rebuilt on
start; the orphan sweep terminates tagged workloads no live attempt owns.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from multicloud import fleet as fleet_mod
from multicloud.models import Fleet, Job
from multicloud.planner import Plan, Policy, plan
from multicloud.planner.types import Assignment
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
    request_id,
)
from multicloud.service.effects import Effects, LaunchItem, LaunchOutcome
from multicloud.service.metrics import Metrics
from multicloud.store import (
    AttemptRecord,
    Decision,
    JobState,
    NewAttempt,
    Store,
    Transition,
)

__all__ = ["CRASH_POINTS", "CrashPoints", "Scheduler", "Settings"]

log = logging.getLogger(__name__)

S = JobState

CRASH_POINTS: tuple[str, ...] = ("after_decide", "after_launch", "mid_status")
"""Places where :class:`CrashPoints` may kill the process (restart-safety tests)."""


@dataclass(frozen=True)
class Settings:
    """How the cycle paces itself.

    Attributes:
        tick_s: Longest sleep between ticks when nothing wakes the loop.
        status_interval_s: How often each provider is asked for the status of its workloads.
        replan_interval_s: How often pending jobs are planned again when nothing changed
            (new capacity may have appeared in a cloud).
        blocked_ttl_s: How long a scope that failed with a capacity or quota error is
            kept out of plans.
        offers_timeout_s: How long a provider that is not a ROFR holder may take to answer
            for offers before a plan goes ahead without it.
        max_attempts: Attempts after which a job that keeps being requeued fails.
        transient_retries: Re-sends of a launch that failed with a transient error before
            it is re-placed elsewhere.
        retry_backoff_s: Wait before the first re-send (doubles each time).
        sweep_interval_s: How often the orphan sweep runs (it also runs at start).
        launch_batch: Launches sent to one provider in one call at most.
        status_chunk: Jobs whose status changes are recorded per store transaction.
        max_plan_jobs: Pending jobs one plan takes at most, in queue order (the rest go
            in the next plan, right after).
    """

    tick_s: float = 0.05
    status_interval_s: float = 0.5
    replan_interval_s: float = 2.0
    blocked_ttl_s: float = 60.0
    offers_timeout_s: float = 10.0
    max_attempts: int = 10
    transient_retries: int = 3
    retry_backoff_s: float = 0.2
    sweep_interval_s: float = 10.0
    launch_batch: int = 256
    status_chunk: int = 64
    max_plan_jobs: int = 256


class CrashPoints:
    """Kill the process at named points with given probabilities (a test seam).

    Restart safety is a claim about crashes at *any* point; tests make the points that
    matter most likely: between deciding and launching, after a launch returned but
    before it was recorded, and half-way through applying a status batch.

    Args:
        probabilities: Point name (see ``CRASH_POINTS``) → probability per pass.
        seed: Seed of the random generator (None: from the OS).
        exit: How to die; ``os._exit`` so that nothing is flushed or cleaned up.

    Raises:
        ValueError: For an unknown point or a probability outside [0, 1].
    """

    def __init__(
        self,
        probabilities: Mapping[str, float],
        *,
        seed: int | None = None,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        for point, p in probabilities.items():
            if point not in CRASH_POINTS:
                raise ValueError(f"unknown crash point {point!r}; known: {CRASH_POINTS}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"crash probability for {point} must be in [0, 1], got {p}")
        self._p = dict(probabilities)
        self._rng = random.Random(seed)
        self._exit = exit

    def __call__(self, point: str) -> None:
        """Maybe die here."""
        p = self._p.get(point, 0.0)
        if p and self._rng.random() < p:
            log.warning("crash point %s: exiting", point)
            self._exit(86)


@dataclass
class _JobInfo:
    id: str
    spec: Job
    state: JobState
    attempt: int


@dataclass
class _OfferRound:
    started: float
    futures: dict[str, cf.Future[list[Offer]]]
    jobs: list[str]


@dataclass
class _Writes:
    """Store writes of one step of the cycle, sent in bulk when its transaction closes."""

    handles: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ends: list[tuple[str, str]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass
class _Counters:
    cycles: int = 0
    plans: int = 0
    launches: int = 0
    launch_errors: Counter[str] = field(default_factory=Counter)
    preemptions: int = 0
    orphans_terminated: int = 0
    relaunches: int = 0
    cycle_errors: int = 0
    last_error: str | None = None
    # (jobs, planner seconds, record seconds) of recent plans, for ping() and benchmarks.
    decisions: deque[tuple[int, float, float]] = field(default_factory=lambda: deque(maxlen=4096))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _place(offer: Offer) -> str:
    # Provider, region, zone and instance type: an inference job may use two offers of one
    # region in one attempt (even two providers' regions of the same name), and each launch
    # needs its own key.
    return f"{offer.provider}/{offer.region}/{offer.zone or '-'}/{offer.instance_type}"


class Scheduler:
    """The scheduling cycle over a store and a fleet.

    Args:
        store: The job store (the truth).
        fleet: The fleet (providers, contracts, budgets, time scale).
        effects: Asynchronous access to the fleet's adapters.
        install_id: Id tagged on every workload; defaults to the store's.
        settings: Pacing.
        policy: Planner search settings.
        clock: Current time (tz-aware).
        crash: Crash points (tests only).
        metrics: Prometheus metrics to update, if any.
        adapters: The adapters themselves, for extras such as ``logs``.
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
        clock: Callable[[], datetime] = _utcnow,
        crash: CrashPoints | None = None,
        metrics: Metrics | None = None,
        adapters: Mapping[str, object] | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.effects = effects
        self.install_id = install_id or store.install_id()
        self.settings = settings or Settings()
        self.policy = policy or Policy(time_limit_s=1.0)
        self.clock = clock
        self.crash = crash or CrashPoints({})
        self.metrics = metrics
        self.adapters = dict(adapters or {})
        self.counters = _Counters()
        self.lock = threading.RLock()
        self.wake = threading.Event()
        rofr = fleet.contracts.rofr
        self._holders = frozenset(rofr.holders) if rofr else frozenset()
        self._window = rofr.window if rofr else 0.0
        self._jobs: dict[str, _JobInfo] = {}
        self._live: dict[str, AttemptRecord] = {}
        self._rows: dict[str, set[str]] = defaultdict(set)
        self._in_flight: set[str] = set()
        # Live rows that have no handle yet (a superset: entries go stale when a row gets
        # its handle or ends, and dispatch drops them). Dispatch walks these rather than
        # every live row on every tick, which with thousands running was most of a tick.
        self._unlaunched: dict[str, None] = {}
        self._launches: list[tuple[cf.Future[list[LaunchOutcome]], str, list[str]]] = []
        self._retry_at: dict[str, float] = {}
        self._tries: Counter[str] = Counter()
        self._terminations: list[cf.Future[list[str | None]]] = []
        self._status: dict[str, cf.Future[dict[str, WorkloadStatus]]] = {}
        self._status_sent: dict[str, list[str]] = {}
        self._next_status = 0.0
        self._sweeps: dict[str, cf.Future[list[OwnedWorkload]]] = {}
        self._next_sweep = 0.0
        self._blocked: dict[str, float] = {}
        self._round: _OfferRound | None = None
        self._dirty = True
        self._next_plan = 0.0
        self._unplaced: dict[str, str] = {}
        self._spent: dict[str, float] = defaultdict(float)
        self._writes: _Writes | None = None
        # Pending job → number of the last plan that could not place it.
        self._tried: dict[str, int] = {}
        # Accepted jobs wait here for the cycle to take them in: a submission must not
        # wait for a whole tick (a plan, a status batch) to hold the lock. deque appends
        # and pops are atomic.
        self._inbox: deque[_JobInfo] = deque()
        self._recover()

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        """Rebuild the in-memory index from the store."""
        records = self.store.list_jobs()
        for record in records:
            if not record.state.is_terminal:
                self._jobs[record.id] = _JobInfo(
                    record.id,
                    record.job,
                    record.state,
                    max((a.attempt for a in record.attempts), default=0),
                )
        for record in records:
            for a in record.attempts:
                self._charge(record.team, a)
        for a in self.store.live_attempts():
            self._live[a.request_id] = a
            if a.handle is None:
                self._unlaunched[a.request_id] = None
            self._rows[a.job_id].add(a.request_id)
        # A crash between the store and the cloud leaves launches without handles: they go
        # out again on the first tick under the same request ids.
        self.counters.relaunches = sum(1 for a in self._live.values() if a.handle is None)
        if self.metrics is not None:
            self.metrics.set_terminal(self.store.count_by_state())

    def _charge(self, team: str | None, attempt: AttemptRecord) -> None:
        if team is None:
            return
        if attempt.outcome is None:
            hours = self._job_hours(attempt.job_id)
        elif attempt.ended_at is not None and attempt.handle is not None:
            hours = (attempt.ended_at - attempt.started_at).total_seconds() / (
                self.fleet.time_scale
            )
        else:
            hours = 0.0
        self._spent[team] += attempt.price_per_hour * hours

    def _job_hours(self, job_id: str) -> float:
        info = self._jobs.get(job_id)
        return info.spec.duration_hours if info is not None else 0.0

    # ------------------------------------------------------------------ API

    def submit(self, items: Sequence[tuple[Job, str | None]]) -> list[tuple[str, bool]]:
        """Accept jobs (already validated against the fleet).

        Args:
            items: ``(job, client_key)`` pairs.

        Returns:
            ``(job_id, created)`` per item.
        """
        now = self.clock()
        results = self.store.submit_many(items, now=now)
        for (job, _), (job_id, created) in zip(items, results, strict=True):
            if created:
                self._inbox.append(_JobInfo(job_id, job, S.PENDING, 0))
                if self.metrics is not None:
                    self.metrics.submitted()
        self.wake.set()
        return results

    def _take_inbox(self) -> None:
        """Move accepted jobs into the index (with the lock held)."""
        while self._inbox:
            info = self._inbox.popleft()
            self._jobs[info.id] = info
            self._dirty = True

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
            now = self.clock()
            with self._writing(now) as writes:
                writes.transitions.append(Transition(job_id, S.CANCELLED, reason))
                ended = self._end_rows(job_id, "cancelled", now)
            self._finish(job_id, S.CANCELLED)
            self._terminate_rows(ended)
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
        adapter = self.adapters.get(last.provider)
        reader = getattr(adapter, "logs", None)
        if reader is None:
            return (
                f"{last.provider} keeps no logs for multicloud to read; the workload is "
                f"{last.handle.get('id') if last.handle else '?'} in {last.region}\n"
            )
        return str(reader(_handle_of(last)))

    def stats(self) -> dict[str, Any]:
        """Return counters for ``ping`` and tests."""
        with self.lock:
            self._take_inbox()
            states = Counter(info.state.value for info in self._jobs.values())
            return {
                "install_id": self.install_id,
                "active_jobs": dict(states),
                "live_attempts": len(self._live),
                "in_flight_launches": len(self._in_flight),
                "blocked": sorted(self._blocked),
                "cycles": self.counters.cycles,
                "plans": self.counters.plans,
                "launches": self.counters.launches,
                "launch_errors": dict(self.counters.launch_errors),
                "preemptions": self.counters.preemptions,
                "orphans_terminated": self.counters.orphans_terminated,
                "relaunches_after_restart": self.counters.relaunches,
                "cycle_errors": self.counters.cycle_errors,
                "last_error": self.counters.last_error,
                **_decision_summary(self.counters.decisions),
            }

    # ------------------------------------------------------------------ the cycle

    def tick(self) -> None:
        """Run one pass of the cycle; never blocks on an adapter."""
        with self.lock:
            mono = time.monotonic()
            self.counters.cycles += 1
            self._take_inbox()
            self._reap_launches()
            # Placement and launch first: they are what a submitter waits for, while a
            # status batch of thousands of workloads can wait a few milliseconds.
            self._expire_blocks(mono)
            self._plan_pending(mono)
            self._dispatch(mono)
            self._reap_terminations()
            self._reap_status()
            self._reap_sweeps()
            if mono >= self._next_status:
                self._send_status()
                self._next_status = mono + self.settings.status_interval_s
            if mono >= self._next_sweep:
                self._send_sweeps()
                self._next_sweep = mono + self.settings.sweep_interval_s
            if self.metrics is not None:
                self.metrics.set_active(Counter(i.state.value for i in self._jobs.values()))

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a tick's error is logged and the loop goes on.

        Args:
            stop: Set to end the loop.
        """
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:
                log.exception("scheduling cycle failed; retrying")
                self.counters.cycle_errors += 1
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                stop.wait(0.5)
            self.wake.wait(self.settings.tick_s)
            self.wake.clear()

    def busy(self) -> bool:
        """True while adapter calls are outstanding (tests drive ticks until idle)."""
        with self.lock:
            return bool(self._inbox or self._launches or self._terminations or self._round)

    # ------------------------------------------------------------------ planning

    def _expire_blocks(self, mono: float) -> None:
        expired = [scope for scope, until in self._blocked.items() if until <= mono]
        for scope in expired:
            del self._blocked[scope]
        if expired:
            self._dirty = True

    def _pending(self) -> list[_JobInfo]:
        return [i for i in self._jobs.values() if i.state is S.PENDING]

    def _plan_pending(self, mono: float) -> None:
        if self._round is None:
            pending = self._pending()
            if not pending or not (self._dirty or mono >= self._next_plan):
                return
            cap = self.settings.max_plan_jobs
            more = False
            if len(pending) > cap:
                # The planner's cost grows faster than the batch (a contended batch goes to
                # the optimiser), and a backlog would otherwise make every plan bigger and
                # slower than the last. Jobs never tried go first, then those tried least
                # recently, each in queue order: a job nothing can place cannot hold back
                # the ones behind it.
                pending.sort(key=lambda i: (self._tried.get(i.id, -1), -i.spec.priority))
                more = any(i.id not in self._tried for i in pending[cap:])
                del pending[cap:]
            accelerators = tuple(sorted({a for i in pending for a in i.spec.resources.accelerator}))
            request = ResourceRequest(accelerators=accelerators)
            self._round = _OfferRound(
                mono,
                {name: self.effects.offers(name, request) for name in self.fleet.providers},
                [i.id for i in pending],
            )
            self._dirty = more  # plan the untried rest right after this one
            # Answers from in-process adapters take well under a millisecond: wait a little
            # rather than a whole tick, it is most of the submit-to-placed latency.
            cf.wait(list(self._round.futures.values()), timeout=0.02)
        round_ = self._round
        waited = time.monotonic() - round_.started
        offers: list[Offer] = []
        unresponsive: set[str] = set()
        for name, fut in round_.futures.items():
            limit = self._window if name in self._holders else self.settings.offers_timeout_s
            if not fut.done():
                if waited < limit:
                    return  # still within its time to answer
                if name in self._holders:
                    unresponsive.add(name)
                log.warning("%s did not answer for offers within %.1f s", name, limit)
                continue
            try:
                offers.extend(fut.result())
            except Exception as exc:
                log.warning("%s failed to list offers: %s", name, exc)
                if name in self._holders:
                    unresponsive.add(name)
        self._round = None
        self._next_plan = mono + self.settings.replan_interval_s
        jobs = [self._jobs[j] for j in round_.jobs if self._jobs.get(j, None) is not None]
        jobs = [i for i in jobs if i.state is S.PENDING]
        if jobs:
            self._decide(jobs, offers, frozenset(unresponsive))

    def _in_use_offers(self, offers: Sequence[Offer]) -> list[Offer]:
        # Launches recorded but not yet confirmed are not in the clouds' own counts yet.
        held: Counter[str] = Counter()
        for a in self._live.values():
            if a.handle is None and a.reservation is None:
                held[f"{a.provider}/{a.zone or a.region}/{a.instance_type}"] += a.nodes
        if not held:
            return list(offers)
        out = []
        for o in offers:
            used = held.get(o.key, 0)
            if used and o.capacity is not None:
                o = Offer(**{**_offer_fields(o), "capacity": max(0, o.capacity - used)})
            out.append(o)
        return out

    def _decide(
        self, jobs: list[_JobInfo], offers: list[Offer], unresponsive: frozenset[str]
    ) -> None:
        now = self.clock()
        reservation_used: Counter[str] = Counter()
        for a in self._live.values():
            if a.reservation is not None:
                reservation_used[a.reservation] += a.nodes
        snap = fleet_mod.snapshot(
            [i.spec for i in jobs],
            self.fleet,
            self._in_use_offers(offers),
            now=now,
            job_ids=[i.id for i in jobs],
            blocked=frozenset(self._blocked),
            unresponsive=unresponsive,
            reservation_used=dict(reservation_used),
            team_spent=dict(self._spent),
        )
        started = time.perf_counter()
        result = plan(snap, self.policy)
        elapsed = time.perf_counter() - started
        self.counters.plans += 1
        by_job: dict[str, list[Assignment]] = defaultdict(list)
        for placed in result.placements:
            by_job[placed.job].append(placed)
        # Stamped when the plan was made, not when the cycle began: "placed at" should not
        # hide the planner's own time from whoever measures submission to placement.
        self._record_plan(jobs, by_job, result, self.clock(), snap.catalog_version)
        self.counters.decisions.append(
            (len(jobs), elapsed, time.perf_counter() - started - elapsed)
        )
        if self.metrics is not None:
            self.metrics.decided(elapsed, len(by_job), result)
        self.crash("after_decide")

    def _record_plan(
        self,
        jobs: list[_JobInfo],
        by_job: Mapping[str, list[Assignment]],
        result: Plan,
        now: datetime,
        catalog_version: str,
    ) -> None:
        unplaced = {u.job: u for u in result.unplaced}
        changed_unplaced: dict[str, str] = {}
        transitions: list[Transition] = []
        attempts: list[NewAttempt] = []
        decisions: list[Decision] = []
        for info in jobs:
            assigns = by_job.get(info.id)
            if not assigns:
                u = unplaced.get(info.id)
                reason = u.reason if u is not None else "not placed"
                if self._unplaced.get(info.id) != reason:
                    details = list(u.details) if u is not None else []
                    decisions.append(Decision(info.id, [], [reason, *details], catalog_version))
                    changed_unplaced[info.id] = reason
                continue
            attempt = info.attempt + 1
            where = ", ".join(
                f"{a.offer.provider}/{a.offer.region} {a.offer.instance_type}×{a.nodes}"
                for a in assigns
            )
            transitions.append(Transition(info.id, S.PLACED, f"placed on {where}", S.PENDING))
            attempts.extend(
                NewAttempt(
                    info.id,
                    attempt=attempt,
                    request_id=request_id(info.id, attempt, _place(a.offer)),
                    provider=a.offer.provider,
                    region=a.offer.region,
                    zone=a.offer.zone,
                    instance_type=a.offer.instance_type,
                    nodes=a.nodes,
                    market=a.market,
                    price_per_hour=a.price_per_hour,
                    reservation=a.offer.reservation,
                )
                for a in assigns
            )
            decisions.append(
                Decision(
                    info.id,
                    [a.to_dict() for a in assigns],
                    [r for a in assigns for r in a.reasons],
                    assigns[0].offer.catalog_version,
                )
            )
        audit = [e for e in result.audit if e.job in by_job or e.job in changed_unplaced]
        # One transaction, a few statements per kind of row rather than a few per job: the
        # record is on the path from submission to placement.
        with self.store.batch():
            self.store.transition_many(transitions, now=now)
            new_rows = self.store.begin_attempts(attempts, now=now)
            self.store.record_decisions(decisions, now=now)
            self.store.record_audit(audit, now=now)
        # Committed: now the memory index may follow.
        self._unplaced.update(changed_unplaced)
        for info in jobs:
            if info.id not in by_job:
                self._tried[info.id] = self.counters.plans
        for row in new_rows:
            self._live[row.request_id] = row
            self._unlaunched[row.request_id] = None
            self._rows[row.job_id].add(row.request_id)
        for job_id in by_job:
            info = self._jobs[job_id]
            info.state = S.PLACED
            info.attempt += 1
            self._unplaced.pop(job_id, None)
            self._tried.pop(job_id, None)
            team = info.spec.team
            if team is not None:
                self._spent[team] += sum(a.cost for a in by_job[job_id])

    # ------------------------------------------------------------------ launching

    def _launch_item(self, row: AttemptRecord) -> LaunchItem | None:
        info = self._jobs.get(row.job_id)
        if info is None:
            return None
        spec = info.spec
        node_price = row.price_per_hour / max(row.nodes, 1)
        offer = Offer(
            provider=row.provider,
            region=row.region,
            zone=row.zone,
            instance_type=row.instance_type,
            # Adapters launch by instance type; the accelerator is informative here.
            accelerator=spec.resources.accelerator[0],
            count=spec.resources.count,
            price=node_price,
            # A spot attempt was placed on the offer's spot market: say so, as real adapters
            # (AWS, Azure) refuse a spot launch on an offer without a spot price.
            spot_price=node_price if row.market is MarketKind.SPOT else None,
            reservation=row.reservation,
        )
        run = spec.run
        launch = LaunchSpec(
            job_id=row.job_id,
            job_name=spec.name,
            attempt=row.attempt,
            nodes=row.nodes,
            market=row.market,
            install_id=self.install_id,
            image=run.image,
            command=run.command,
            env=dict(run.env),
            secrets=run.secrets,
            duration_hours=spec.duration_hours,
            checkpoint=run.checkpoint,
            cpus=spec.resources.cpus,
            ray=run.ray,
        )
        return LaunchItem(row.request_id, offer, launch)

    def _dispatch(self, mono: float) -> None:
        batches: dict[str, list[LaunchItem]] = defaultdict(list)
        for key in list(self._unlaunched):
            row = self._live.get(key)
            if row is None or row.handle is not None:
                del self._unlaunched[key]
                continue
            if key in self._in_flight:
                continue
            if self._retry_at.get(row.request_id, 0.0) > mono:
                continue
            item = self._launch_item(row)
            if item is not None:
                batches[row.provider].append(item)
        size = self.settings.launch_batch
        for provider, items in batches.items():
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                fut = self.effects.launch(provider, chunk)
                keys = [i.request_id for i in chunk]
                self._in_flight.update(keys)
                self._launches.append((fut, provider, keys))

    def _reap_launches(self) -> None:
        done = [entry for entry in self._launches if entry[0].done()]
        if not done:
            return
        self._launches = [entry for entry in self._launches if not entry[0].done()]
        outcomes: list[tuple[str, LaunchOutcome]] = []
        for fut, provider, keys in done:
            self._in_flight.difference_update(keys)
            try:
                outcomes.extend((provider, o) for o in fut.result())
            except Exception as exc:  # the task itself died: retry every item
                outcomes.extend(
                    (
                        provider,
                        LaunchOutcome(k, error="transient", scope=provider, message=str(exc)),
                    )
                    for k in keys
                )
        self.crash("after_launch")
        now = self.clock()
        to_terminate: list[AttemptRecord] = []
        settled: list[tuple[str, AttemptRecord]] = []
        failed_jobs: dict[str, tuple[str, str, bool]] = {}
        with self._writing(now) as writes:
            for provider, o in outcomes:
                row = self._live.get(o.request_id)
                if o.handle is not None:
                    handle = _handle_json(o.handle)
                    if row is None:
                        # The attempt ended (cancelled, or a sibling failed) while the
                        # launch was in flight: the workload is unwanted.
                        to_terminate.append(_orphan_row(o.request_id, provider, o.handle))
                        continue
                    writes.handles.append((o.request_id, handle))
                    settled.append((o.request_id, _with_handle(row, handle)))
                    self.counters.launches += 1
                    if self.metrics is not None:
                        self.metrics.launched(provider, "ok")
                    continue
                if row is None:
                    continue
                kind = o.error or "transient"
                self.counters.launch_errors[kind] += 1
                if self.metrics is not None:
                    self.metrics.launched(provider, kind)
                if kind == "transient":
                    self._tries[o.request_id] += 1
                    tries = self._tries[o.request_id]
                    if tries <= self.settings.transient_retries:
                        self._retry_at[o.request_id] = time.monotonic() + (
                            self.settings.retry_backoff_s * 2 ** (tries - 1)
                        )
                        continue
                scope = o.scope or provider
                if kind in ("capacity", "quota", "transient"):
                    self._block(scope)
                elif kind == "auth":
                    self._block(provider)
                requeue = kind != "invalid"
                failed_jobs[row.job_id] = (kind, f"{kind} error on {scope}: {o.message}", requeue)
            for request, row in settled:
                self._live[request] = row
            for job_id in {row.job_id for _, row in settled}:
                if job_id in failed_jobs:
                    continue
                self._maybe_provisioning(job_id, now)
            for job_id, (outcome, reason, requeue) in failed_jobs.items():
                to_terminate.extend(self._fail_attempt(job_id, outcome, reason, now, requeue))
        self._terminate_rows(to_terminate)

    def _maybe_provisioning(self, job_id: str, now: datetime) -> None:
        info = self._jobs.get(job_id)
        if info is None or info.state is not S.PLACED:
            return
        rows = [self._live[r] for r in self._rows.get(job_id, ())]
        if rows and all(r.handle is not None for r in rows):
            where = ", ".join(str((r.handle or {}).get("id")) for r in rows)
            self._move(info, S.PROVISIONING, f"launched: {where}", now)

    def _block(self, scope: str) -> None:
        self._blocked[scope] = time.monotonic() + self.settings.blocked_ttl_s
        self._dirty = True

    # ------------------------------------------------------------------ job state

    @contextmanager
    def _writing(self, now: datetime) -> Iterator[_Writes]:
        """One store transaction for a step of the cycle, its writes sent in bulk at the end.

        Per-job store calls cost a few statements each; a step that settles a thousand
        launches or status answers would spend most of its time on them. The step's
        logic is unchanged: it queues its writes here, and they go out, in order, as a
        handful of statements in the same transaction (nothing if the step raised).

        Args:
            now: The step's time, stamped on its events and ended attempts.

        Yields:
            The queue of writes.
        """
        writes = _Writes()
        with self.store.batch():
            self._writes = writes
            try:
                yield writes
            finally:
                self._writes = None
            self.store.set_attempt_handles(writes.handles)
            self.store.end_attempts(writes.ends, now=now)
            self.store.transition_many(writes.transitions, now=now)

    def _queue(self) -> _Writes:
        if self._writes is None:
            raise RuntimeError("store writes of the cycle must run inside _writing()")
        return self._writes

    def _move(self, info: _JobInfo, to: JobState, reason: str, now: datetime) -> None:
        del now  # stamped when the step's writes are sent
        self._queue().transitions.append(Transition(info.id, to, reason, info.state))
        info.state = to
        if to.is_terminal:
            self._finish(info.id, to)

    def _finish(self, job_id: str, state: JobState) -> None:
        self._jobs.pop(job_id, None)
        self._unplaced.pop(job_id, None)
        self._tried.pop(job_id, None)
        if self.metrics is not None:
            self.metrics.finished(state.value)

    def _end_rows(self, job_id: str, outcome: str, now: datetime) -> list[AttemptRecord]:
        """End every live row of a job (inside a batch); return those to terminate."""
        ended = [
            self._end_row(job_id, key, outcome, now) for key in sorted(self._rows.get(job_id, ()))
        ]
        return [row for row in ended if row is not None and row.handle is not None]

    def _end_row(self, job_id: str, key: str, outcome: str, now: datetime) -> AttemptRecord | None:
        """End one live row (inside a batch); return it, or None if it was not live."""
        rows = self._rows.get(job_id)
        if rows is not None:
            rows.discard(key)
            if not rows:
                del self._rows[job_id]
        row = self._live.pop(key, None)
        if row is None:
            return None
        self._queue().ends.append((key, outcome))
        self._retry_at.pop(key, None)
        self._tries.pop(key, None)
        if row.handle is not None and self.metrics is not None:
            hours = (now - row.started_at).total_seconds() / self.fleet.time_scale
            self.metrics.spent(row.provider, row.price_per_hour * hours)
        return row

    def _fail_attempt(
        self, job_id: str, outcome: str, reason: str, now: datetime, requeue: bool
    ) -> list[AttemptRecord]:
        info = self._jobs.get(job_id)
        ended = self._end_rows(job_id, outcome, now)
        if info is None:
            return ended
        self._dirty = True
        if requeue and info.attempt >= self.settings.max_attempts:
            requeue = False
            reason = f"{reason}; gave up after {info.attempt} attempts"
        if not requeue:
            self._move(info, S.FAILED, reason, now)
            return ended
        if info.state is S.RUNNING:
            self._move(info, S.PREEMPTED, reason, now)
        self._move(info, S.PENDING, f"requeued: {reason}", now)
        return ended

    def _terminate_rows(self, rows: Iterable[AttemptRecord]) -> None:
        batches: dict[str, list[tuple[Handle, str]]] = defaultdict(list)
        for row in rows:
            if row.handle is None:
                continue
            batches[row.provider].append((_handle_of(row), "terminate-" + row.request_id))
        for provider, items in batches.items():
            self._terminations.append(self.effects.terminate(provider, items))

    def _reap_terminations(self) -> None:
        for fut in [f for f in self._terminations if f.done()]:
            self._terminations.remove(fut)
            try:
                errors = [e for e in fut.result() if e]
            except Exception as exc:
                errors = [str(exc)]
            for error in errors:
                # The sweep finds the workload again and retries.
                log.warning("terminate failed: %s", error)

    # ------------------------------------------------------------------ status

    def _send_status(self) -> None:
        by_provider: dict[str, list[AttemptRecord]] = defaultdict(list)
        for row in self._live.values():
            if row.handle is not None:
                by_provider[row.provider].append(row)
        for provider, rows in by_provider.items():
            if provider in self._status:
                continue  # the last batch has not answered: do not pile up
            self._status[provider] = self.effects.status(provider, [_handle_of(r) for r in rows])
            self._status_sent[provider] = [r.request_id for r in rows]

    def _reap_status(self) -> None:
        for provider in [p for p, f in self._status.items() if f.done()]:
            fut = self._status.pop(provider)
            keys = self._status_sent.pop(provider, [])
            try:
                answers = fut.result()
            except Exception as exc:
                log.warning("status from %s failed: %s", provider, exc)
                continue
            by_job: dict[str, list[tuple[AttemptRecord, WorkloadStatus]]] = defaultdict(list)
            for key in keys:
                row = self._live.get(key)
                if row is None or row.handle is None:
                    continue
                answer = answers.get(str(row.handle.get("id")))
                if answer is not None:
                    by_job[row.job_id].append((row, answer))
            self._apply_status(by_job)

    def _apply_status(
        self, by_job: Mapping[str, list[tuple[AttemptRecord, WorkloadStatus]]]
    ) -> None:
        jobs = list(by_job.items())
        chunk = self.settings.status_chunk
        for start in range(0, len(jobs), chunk):
            if start:
                self.crash("mid_status")
            now = self.clock()
            to_terminate: list[AttemptRecord] = []
            with self._writing(now):
                for job_id, answers in jobs[start : start + chunk]:
                    to_terminate.extend(self._job_status(job_id, answers, now))
            self._terminate_rows(to_terminate)

    def _job_status(
        self, job_id: str, answers: list[tuple[AttemptRecord, WorkloadStatus]], now: datetime
    ) -> list[AttemptRecord]:
        info = self._jobs.get(job_id)
        if info is None:
            return []
        states = {s.state for _, s in answers}
        bad = [
            (row, s)
            for row, s in answers
            if s.state
            in (
                WorkloadState.FAILED,
                WorkloadState.PREEMPTED,
                WorkloadState.TERMINATED,
                WorkloadState.UNKNOWN,
            )
        ]
        if bad:
            row, s = bad[0]
            where = f"{row.provider}/{row.region}"
            if s.state is WorkloadState.FAILED:
                code = f" (exit code {s.exit_code})" if s.exit_code is not None else ""
                return self._fail_attempt(
                    job_id,
                    "failed",
                    f"workload failed on {where}{code}: {s.message}",
                    now,
                    requeue=False,
                )
            outcome = "preempted" if s.state is WorkloadState.PREEMPTED else "lost"
            self.counters.preemptions += outcome == "preempted"
            if s.blocked_scope:
                # Capacity lost after launch: the next plan must not walk straight back in.
                self._block(s.blocked_scope)
            return self._fail_attempt(
                job_id, outcome, f"{outcome} on {where}: {s.message}", now, requeue=True
            )
        if info.state is S.PROVISIONING and states & {
            WorkloadState.RUNNING,
            WorkloadState.SUCCEEDED,
        }:
            self._move(info, S.RUNNING, "running", now)
        # Rows finish one by one: an inference job's replicas on two clouds are reported
        # in two status batches.
        for row, s in answers:
            if s.state is WorkloadState.SUCCEEDED:
                self._end_row(job_id, row.request_id, "succeeded", now)
        if job_id not in self._rows and info.state is S.RUNNING:
            self._move(info, S.SUCCEEDED, "finished", now)
        return []

    # ------------------------------------------------------------------ orphan sweep

    def _send_sweeps(self) -> None:
        for provider in self.fleet.providers:
            if provider in self._sweeps:
                continue
            fut = self.effects.owned(provider, self.install_id)
            if fut is not None:
                self._sweeps[provider] = fut

    def _reap_sweeps(self) -> None:
        for provider in [p for p, f in self._sweeps.items() if f.done()]:
            fut = self._sweeps.pop(provider)
            try:
                owned = fut.result()
            except Exception as exc:
                log.warning("orphan sweep of %s failed: %s", provider, exc)
                continue
            live = {(a.job_id, a.attempt) for a in self._live.values()}
            orphans = [w for w in owned if (w.job_id, w.attempt) not in live]
            if not orphans:
                continue
            self.counters.orphans_terminated += len(orphans)
            log.warning(
                "orphan sweep: terminating %d workload(s) on %s no live attempt owns",
                len(orphans),
                provider,
            )
            items = [(w.handle, "sweep-" + w.handle.id) for w in orphans]
            self._terminations.append(self.effects.terminate(provider, items))
            if self.metrics is not None:
                self.metrics.orphans(provider, len(orphans))


# ---------------------------------------------------------------------- helpers


def _decision_summary(samples: Iterable[tuple[int, float, float]]) -> dict[str, Any]:
    """Percentiles of recent plans: jobs per plan, planner and store-record milliseconds."""
    rows = list(samples)
    if not rows:
        return {}

    def summary(values: list[float], scale: float) -> dict[str, float]:
        values = sorted(values)
        p50 = values[len(values) // 2]
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        return {
            "p50": round(p50 * scale, 3),
            "p99": round(p99 * scale, 3),
            "max": round(values[-1] * scale, 3),
            "mean": round(sum(values) / len(values) * scale, 3),
        }

    return {
        "recent_plans": len(rows),
        "plan_jobs": summary([float(r[0]) for r in rows], 1.0),
        "plan_ms": summary([r[1] for r in rows], 1e3),
        "record_ms": summary([r[2] for r in rows], 1e3),
    }


def _offer_fields(offer: Offer) -> dict[str, Any]:
    return {name: getattr(offer, name) for name in offer.__dataclass_fields__}


def _handle_json(handle: Handle) -> dict[str, Any]:
    return {
        "provider": handle.provider,
        "id": handle.id,
        "request_id": handle.request_id,
        "region": handle.region,
        "zone": handle.zone,
        "instance_type": handle.instance_type,
        "nodes": handle.nodes,
        "market": handle.market.value,
        "job_id": handle.job_id,
        "extra": [list(pair) for pair in handle.extra],
    }


def _handle_of(row: AttemptRecord) -> Handle:
    h = row.handle or {}
    return Handle(
        provider=str(h.get("provider", row.provider)),
        id=str(h.get("id", "")),
        request_id=str(h.get("request_id", row.request_id)),
        region=str(h.get("region", row.region)),
        zone=h.get("zone", row.zone),
        instance_type=str(h.get("instance_type", row.instance_type)),
        nodes=int(h.get("nodes", row.nodes)),
        market=MarketKind(h.get("market", row.market.value)),
        job_id=str(h.get("job_id", row.job_id)),
        extra=tuple((str(k), str(v)) for k, v in h.get("extra", [])),
    )


def _with_handle(row: AttemptRecord, handle: dict[str, Any]) -> AttemptRecord:
    fields = {name: getattr(row, name) for name in row.__dataclass_fields__}
    fields["handle"] = handle
    return AttemptRecord(**fields)


def _orphan_row(key: str, provider: str, handle: Handle) -> AttemptRecord:
    return AttemptRecord(
        job_id=handle.job_id,
        attempt=0,
        request_id=key,
        provider=provider,
        region=handle.region,
        zone=handle.zone,
        instance_type=handle.instance_type,
        nodes=handle.nodes,
        market=handle.market,
        price_per_hour=0.0,
        handle=_handle_json(handle),
        outcome="orphaned",
        started_at=_utcnow(),
        ended_at=None,
    )
