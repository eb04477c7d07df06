"""Placing: from pending jobs to recorded attempts, planning only what changed.

A round of offers is asked for when jobs wait for their first plan, or when capacity may
have come back for jobs that could not be placed (an attempt ended, a block ran out, or the
periodic probe). When the offers are in:

1. the usable capacity of every pool is compared with what the last plan left of it; the
   stuck jobs that accept the accelerator of a pool that grew are woken;
2. the fresh jobs (new, requeued, woken) are planned together, in one ``plan()`` over the
   whole set — no slices — on the planner thread, so the cycle goes on meanwhile;
3. the plan's placements, attempts (each with its :class:`~multicloud.provider.Place`),
   decisions and ROFR lines are written in one store transaction.

Stuck jobs that were not woken cannot use any capacity that appeared since they were last
planned, so planning the fresh ones alone places what planning the whole queue would
(``docs/architecture.md``, "Incremental planning").
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from multicloud import fleet as fleet_mod
from multicloud.lifecycle import JobState, Transition
from multicloud.models import Fleet
from multicloud.planner import Assignment, Plan, Policy, ShapeCache, Snapshot, plan
from multicloud.provider import Offer, Place, request_id
from multicloud.service.scheduler.book import Book
from multicloud.service.scheduler.index import JobIndex, JobInfo
from multicloud.service.scheduler.offers import OfferRounds, RoundResult
from multicloud.service.scheduler.settings import CrashPoints, Settings
from multicloud.service.scheduler.timing import Clock, Timer
from multicloud.store import Decision, NewAttempt

__all__ = ["Placer"]

log = logging.getLogger(__name__)

S = JobState


def _reservation_accelerators(fleet: Fleet, offers: list[Offer], names: set[str]) -> set[str]:
    """The accelerators the named reservation blocks hold, as the planner reads them.

    A block that does not name its accelerator holds the one of the offer of its provider,
    region and instance type, as the planner turns blocks into offers. Without that offer
    in the round (no waiting job asked for its accelerator) the planner cannot use the
    block either, so it wakes nobody.

    Args:
        fleet: The fleet (its contracts' reservations).
        offers: The round's offers.
        names: The blocks that freed nodes.

    Returns:
        The accelerators.
    """
    known = {(o.provider, o.region, o.instance_type): o.accelerator for o in offers}
    out: set[str] = set()
    for res in fleet.contracts.reservations:
        if res.name in names:
            accel = res.accelerator or known.get((res.provider, res.region, res.instance_type))
            if accel is not None:
                out.add(accel)
    return out


def _scopes(offer: Offer) -> tuple[str, ...]:
    """The block scopes that cover an offer (as ``errors.error_scope`` spells them)."""
    p, r, z = offer.provider, offer.region, offer.zone
    if z is None:
        return (p, f"{p}/{r}")
    return (p, f"{p}/{r}", f"{p}/{r}/{z}", f"{p}/{z}")


@dataclass
class _Planning:
    jobs: list[JobInfo]
    snapshot: Snapshot
    usable: dict[str, float]
    future: cf.Future[tuple[Plan, float]]


class Placer:
    """The placing step of the cycle.

    Args:
        book: The cycle's bookkeeping.
        fleet: The fleet.
        rounds: Offer rounds.
        settings: Pacing.
        policy: Planner search settings.
        clock: The scheduler's clock.
        wall: UTC time for the store and the snapshot.
        crash: Crash points.
        executor: Where ``plan()`` runs (a single planner thread).
    """

    def __init__(
        self,
        book: Book,
        fleet: Fleet,
        rounds: OfferRounds,
        *,
        settings: Settings,
        policy: Policy,
        clock: Clock,
        wall: Callable[[], datetime],
        crash: CrashPoints,
        executor: cf.Executor,
    ) -> None:
        self.book = book
        self.fleet = fleet
        self.rounds = rounds
        self.policy = policy
        self.wall = wall
        self.crash = crash
        self.executor = executor
        self.probe = Timer(clock, settings.replan_interval_s, due_now=False)
        self.offers_wait_s = settings.offers_wait_s
        self.inline_plan_jobs = settings.inline_plan_jobs
        # Job shapes' options across plans: consecutive rounds mostly see the same offers
        # (only capacities move), so a shape is worked out once per table, not per plan.
        # Only one plan runs at a time, on the planner thread or here.
        self.shapes = ShapeCache()
        self._seen: dict[str, float] = {}
        self._seen_reserved: dict[str, int] = {}
        self._planning: _Planning | None = None
        # Launches not confirmed when the round asked for offers: the clouds' answers may
        # not count them yet, whatever happened to them since.
        self._unconfirmed: set[str] = set()
        self._reservation_edges = sorted(
            edge
            for res in fleet.contracts.reservations
            for edge in (res.start, res.end)
            if edge is not None
        )

    @property
    def index(self) -> JobIndex:
        """The cycle's index (rebuilt from the store after a failed tick)."""
        return self.book.index

    def outstanding(self) -> list[cf.Future[tuple[Plan, float]]]:
        """The plan being computed, if any."""
        p = self._planning
        return [p.future] if p is not None and not p.future.done() else []

    def busy(self) -> bool:
        """True while a round or a plan is in progress."""
        return self._planning is not None or self.rounds.active

    def step(self) -> None:
        """Advance placing by whatever is ready: record a plan, plan a round, start one.

        In the common case all of it happens in one step: the round starts, in-process
        adapters answer within ``offers_wait_s``, a plan of at most ``inline_plan_jobs``
        jobs runs right here, and is recorded.
        """
        if self._planning is not None:
            if not self._planning.future.done():
                return
            planning, self._planning = self._planning, None
            self._record(planning)
        if not self.rounds.active:
            if not self._wanted():
                return
            self.book.capacity_changed = False
            accels = {a for i in self.index.fresh() for a in i.spec.resources.accelerator}
            live = self.index.live
            self._unconfirmed = {
                k for k in self.index.unlaunched if k in live and live[k].handle is None
            }
            self.rounds.start(frozenset(accels | self.index.stuck_accelerators()))
            # Answers from adapters in this process take well under a millisecond: a
            # moment's wait here saves a whole trip round the loop for every job.
            self.rounds.wait(self.offers_wait_s)
        result = self.rounds.poll()
        if result is not None:
            self._decide(result)

    def _wanted(self) -> bool:
        if self.index.has_fresh():
            return True
        if not self.index.has_stuck():
            return False
        if self._reservation_edges and self._reservation_edges[0] <= self.wall():
            # A reservation window opened or closed: what is stuck may fit now.
            while self._reservation_edges and self._reservation_edges[0] <= self.wall():
                self._reservation_edges.pop(0)
            self.index.wake()
            return True
        return self.book.capacity_changed or self.probe.due()

    # ------------------------------------------------------------------ deciding

    def _usable(self, offers: list[Offer]) -> tuple[list[Offer], dict[str, float]]:
        """Offers with capacity held by unconfirmed launches taken off; usable capacity."""
        held: Counter[str] = Counter()
        for key in self._unconfirmed:
            row = self.index.live.get(key)
            if row is not None and row.reservation is None:
                held[row.place.pool] += row.nodes
        blocked = self.book.blocked.scopes()
        out: list[Offer] = []
        usable: dict[str, float] = {}
        for o in offers:
            used = held.get(o.key, 0)
            if used and o.capacity is not None:
                o = Offer(**{**o.to_json(), "capacity": max(0, o.capacity - used)})
            out.append(o)
            free = math.inf if o.capacity is None else float(o.capacity)
            usable[o.key] = 0.0 if blocked and any(s in blocked for s in _scopes(o)) else free
        return out, usable

    def _reserved(self) -> dict[str, int]:
        return {name: n for name, n in self.index.reserved.items() if n > 0}

    def _wake(
        self, offers: list[Offer], usable: dict[str, float], reserved: dict[str, int]
    ) -> None:
        grown = {o.accelerator for o in offers if usable[o.key] > self._seen.get(o.key, 0.0)}
        freed = {r for r, n in self._seen_reserved.items() if reserved.get(r, 0) < n}
        if freed:
            # A reservation block freed up nodes: wake the jobs that accept what it holds,
            # as for any pool that grew.
            grown |= _reservation_accelerators(self.fleet, offers, freed)
        if grown:
            self.index.wake(grown)

    def _decide(self, result: RoundResult) -> None:
        offers, usable = self._usable(result.offers)
        reserved = self._reserved()
        self._wake(offers, usable, reserved)
        self._seen = dict(usable)
        self._seen_reserved = reserved
        wanted = result.accelerators
        jobs = [
            i
            for i in self.index.fresh()
            if not wanted or set(i.spec.resources.accelerator) <= wanted
        ]
        if not jobs:
            return
        now = self.wall()
        snap = fleet_mod.snapshot(
            [i.spec for i in jobs],
            self.fleet,
            offers,
            now=now,
            job_ids=[i.id for i in jobs],
            blocked=self.book.blocked.scopes(),
            unresponsive=result.unresponsive,
            reservation_used=reserved,
            team_spent=dict(self.book.spent),
        )
        policy = self.policy
        shapes = self.shapes

        def run() -> tuple[Plan, float]:
            started = time.perf_counter()
            return plan(snap, policy, shapes=shapes), time.perf_counter() - started

        if len(jobs) <= self.inline_plan_jobs:
            # A small plan costs milliseconds: cheaper here than a hop to another thread.
            fut: cf.Future[tuple[Plan, float]] = cf.Future()
            try:
                fut.set_result(run())
            except Exception as exc:
                fut.set_exception(exc)
            self._record(_Planning(jobs, snap, usable, fut))
            return
        fut = self.executor.submit(run)
        self.book.watch(fut)
        self._planning = _Planning(jobs, snap, usable, fut)

    # ------------------------------------------------------------------ recording

    def _record(self, planning: _Planning) -> None:
        try:
            result, elapsed = planning.future.result()
        except Exception:
            log.exception("the planner failed; these jobs are planned again next round")
            return
        started = time.perf_counter()
        self.book.counters.plans += 1
        by_job: dict[str, list[Assignment]] = defaultdict(list)
        for placed in result.placements:
            by_job[placed.job].append(placed)
        # Jobs cancelled while the planner ran are no longer pending: leave them out.
        jobs = [i for i in planning.jobs if self.index.get(i.id) is i and i.state is S.PENDING]
        recorded = self._write(jobs, by_job, result, planning.snapshot.catalog_version)
        for a in result.placements:
            if a.job in recorded:
                self._seen[a.offer.key] = self._seen.get(a.offer.key, 0.0) - a.nodes
        self.index.planned(i for i in jobs if i.id not in recorded)
        self.book.counters.decisions.append(
            (len(planning.jobs), elapsed, time.perf_counter() - started)
        )
        if self.book.metrics is not None:
            self.book.metrics.decided(elapsed, len(recorded), result)
        self.crash("after_decide")

    def _write(
        self,
        jobs: list[JobInfo],
        by_job: dict[str, list[Assignment]],
        result: Plan,
        catalog_version: str,
    ) -> set[str]:
        unplaced = {u.job: u for u in result.unplaced}
        changed: dict[str, str] = {}
        transitions: list[Transition] = []
        attempts: list[NewAttempt] = []
        decisions: list[Decision] = []
        placed: list[JobInfo] = []
        for info in jobs:
            assigns = by_job.get(info.id)
            if not assigns:
                u = unplaced.get(info.id)
                reason = u.reason if u is not None else "not placed"
                if info.unplaced != reason:
                    details = list(u.details) if u is not None else []
                    decisions.append(Decision(info.id, [], [reason, *details], catalog_version))
                    changed[info.id] = reason
                continue
            placed.append(info)
            attempt = info.attempt + 1
            places = [Place(a.offer, a.nodes, a.market, a.price_per_hour) for a in assigns]
            where = ", ".join(
                f"{p.provider}/{p.region} {p.instance_type}×{p.nodes}" for p in places
            )
            transitions.append(Transition(info.id, S.PLACED, f"placed on {where}", S.PENDING))
            attempts.extend(
                NewAttempt(info.id, attempt, request_id(info.id, attempt, p.key), p) for p in places
            )
            decisions.append(
                Decision(
                    info.id,
                    [a.to_dict() for a in assigns],
                    [r for a in assigns for r in a.reasons],
                    assigns[0].offer.catalog_version or catalog_version,
                )
            )
        audit = [e for e in result.audit if e.job in by_job or e.job in changed]
        # Stamped when the plan is recorded: "placed at" must not hide the planner's time.
        now = self.wall()
        with self.book.store.batch():
            store = self.book.store
            # What earlier steps of this tick queued goes first, in the same transaction:
            # a job they requeued must be pending in the store before it is placed again.
            self.book.write_pending(now)
            store.transition_many(transitions, now=now)
            rows = store.begin_attempts(attempts, now=now)
            store.record_decisions(decisions, now=now)
            store.record_audit(audit, now=now)
        # Committed: now the index may follow, and what the queued writes ended may go.
        self.book.send_terminations()
        for job_id, reason in changed.items():
            waiting = self.index.get(job_id)
            if waiting is not None:
                waiting.unplaced = reason
        for row in rows:
            self.index.add_row(row)
            info_of = self.index.get(row.job_id)
            if info_of is not None:
                # Charged like any live attempt: its job's whole duration, until it ends.
                self.book.charge(info_of.spec.team, row, info_of.spec.duration_hours)
        for info in placed:
            self.index.set_state(info, S.PLACED)
            info.attempt += 1
            info.unplaced = None
        return {i.id for i in placed}
