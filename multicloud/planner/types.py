"""Inputs and outputs of the pure planner.

A :class:`Snapshot` is everything the planner may look at; a :class:`Plan` is everything it
decides, with the reasons. Both are plain immutable data so that plans can be stored,
compared, replayed and explained without re-running anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from multicloud.models import Budget, Contracts, Job
from multicloud.provider import MarketKind, Offer

LatencyFn = Callable[[str, str], "float | None"]


@dataclass(frozen=True)
class Policy:
    """How the planner searches (never what it may do: that is the contracts' and jobs' job).

    The search is bounded by deterministic work, so the same snapshot and policy give the
    same plan under any load and on any CPU (the search's sums do not go through the
    BLAS, whose kernels differ by CPU; other numpy, SciPy or HiGHS versions may still
    round a tie otherwise). The wall clock is only a safety net.

    Attributes:
        time_limit_s: Safety ceiling on the optimiser's solver time for one plan. Normal
            searches end on the work limits below long before; if it fires, the best plan
            so far is kept and ``stats.timed_out`` says so (the plan may then depend on
            machine load). 300 s: at 60 s it fired on a 10,000-job benchmark batch on a
            machine three times slower, at the time, than another of the same kind
            (trace seed 7, about 65-79 s of solver time there), which kept the count
            stage's plan, 7 tier-0 jobs fewer and 10 % dearer.
        mip_rel_gap: Relative gap at which the cost stage's integer programs stop (a count
            stage's stop on whole jobs instead), at which a model small enough to be
            solved whole is solved, at which a plan is reported optimal
            (``stats.optimal``, against the LP relaxation's bound or a proof's), and at
            which a proof (``prove``) stops.
        cost_stop_gap: Relative gap to the cost LP's bound at which the cost search's
            neighbourhood rounds stop, on models too large to be solved whole
            (``mip_rel_gap`` where that is larger): a plan that reaches it is at most this
            far above the optimum; a search that stalls far above it gets one pass of
            wider neighbourhoods, and may still end above it. The rounds past 1 % buy
            tenths of a percent for seconds (10,000-job trace seed 7: 0.71 % above the
            bound at 31 CPU s, 0.25 % at 36 s). 0: search on to ``mip_rel_gap``.
        force_optimizer: Use the optimiser even where the fast path would do (tests, bench).
        node_limit: Branch-and-bound nodes for each neighbourhood the search solves (a
            count's wider passes: a third and a sixth of it, their neighbourhoods being
            three and six times larger; at least one).
        search_rounds: Neighbourhoods tried per objective after repairing the LP, per
            20,000 variables of a component's model.
        neighbourhood_size: Most variables one neighbourhood frees.
        exact_below: Components whose model has at most this many variables are solved
            whole rather than by neighbourhoods (0: always by neighbourhoods).
        prove: After the neighbourhoods, solve each stage's whole model to proven
            optimality (no node limit; slow; used for benchmark references).
        workers: Threads that search independent components side by side (0: one per
            core this process may use, at most 4). The plan is the same for any value.
    """

    time_limit_s: float = 300.0
    mip_rel_gap: float = 1e-3
    cost_stop_gap: float = 1e-2
    force_optimizer: bool = False
    node_limit: int = 200
    search_rounds: int = 6
    neighbourhood_size: int = 1_000
    exact_below: int = 1_000
    prove: bool = False
    workers: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Everything the planner may look at.

    Attributes:
        jobs: Jobs to place, in submission order (the planner derives queue order).
        offers: Offers with the capacity left now (running work already subtracted).
        contracts: ROFR, reservations and commitments.
        budgets: Spending caps by team.
        job_ids: Ids of ``jobs`` (defaults to their names).
        now: Current time, for deadlines, reservation windows and commitment schedules.
        blocked: Scopes recently failing with capacity/quota errors: ``provider``,
            ``provider/region`` or ``provider/region/zone`` (``errors.error_scope``; the
            short ``provider/zone`` is honoured too).
        unresponsive: ROFR holders that did not answer within their window.
        reservation_used: Nodes of each reservation already in use.
        team_spent: Spend already charged against each team's budget.
        latency: Round-trip estimate between two regions (None when unknown).
        catalog_version: Version of the price data, written into the audit ledger.
        previous: An earlier plan of (some of) these jobs, e.g. the last cycle's. The
            optimiser starts its search from it where it is still feasible and no worse
            than the queue walk, so a re-plan after small changes is cheap. The plan
            stays a function of the snapshot: the same snapshot (with the same previous
            plan) gives the same plan.
    """

    jobs: Sequence[Job]
    offers: Sequence[Offer]
    contracts: Contracts = field(default_factory=Contracts)
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    job_ids: Sequence[str] | None = None
    now: datetime | None = None
    blocked: frozenset[str] = frozenset()
    unresponsive: frozenset[str] = frozenset()
    reservation_used: Mapping[str, int] = field(default_factory=dict)
    team_spent: Mapping[str, float] = field(default_factory=dict)
    latency: LatencyFn | None = None
    catalog_version: str = ""
    previous: Plan | None = None


@dataclass(frozen=True)
class RofrOutcome:
    """How the right of first refusal went for one job.

    Attributes:
        holder: The holder that accepted, or the first holder asked when all declined.
        outcome: ``accepted`` or ``declined``.
        reason: Why (the accepting or the first declining holder's answer).
        outside_price_per_hour: The outside price P offered as terms (None: no outside offer).
    """

    holder: str
    outcome: Literal["accepted", "declined"]
    reason: str
    outside_price_per_hour: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by ``multicloud plan --json``."""
        return {
            "holder": self.holder,
            "outcome": self.outcome,
            "reason": self.reason,
            "outside_price_per_hour": _money(self.outside_price_per_hour),
        }


@dataclass(frozen=True, init=False)
class Assignment:
    """Where (part of) a job goes: a gang of nodes of one offer.

    Training jobs get one assignment; inference jobs get one per offer their replicas use.

    Attributes:
        job: Job id.
        offer: The offer used.
        market: Market billed.
        nodes: Nodes on this offer.
        replicas: Inference replicas on this offer (1 for training).
        node_price: Billed price per node-hour (after any ROFR match; 0 for reservations).
        duration_hours: The job's duration.
        rofr: The ROFR outcome, when ROFR applied.
        reasons: Why this placement.
    """

    job: str
    offer: Offer
    market: MarketKind
    nodes: int
    replicas: int
    node_price: float
    duration_hours: float
    rofr: RofrOutcome | None
    reasons: tuple[str, ...]

    def __init__(
        self,
        job: str,
        offer: Offer,
        market: MarketKind,
        nodes: int,
        replicas: int,
        node_price: float,
        duration_hours: float,
        rofr: RofrOutcome | None,
        reasons: tuple[str, ...],
    ) -> None:
        # The fields go into the instance's dict directly: a frozen dataclass's own
        # initialiser sets each through object.__setattr__ (2.0 µs an object against 0.6),
        # and the fast path builds one of these per placed job. So the signature must list
        # the fields in order (tests/unit/test_plan_types.py checks it), and the class
        # needs its __dict__ (no slots=True).
        d = self.__dict__
        d["job"] = job
        d["offer"] = offer
        d["market"] = market
        d["nodes"] = nodes
        d["replicas"] = replicas
        d["node_price"] = node_price
        d["duration_hours"] = duration_hours
        d["rofr"] = rofr
        d["reasons"] = reasons

    @property
    def price_per_hour(self) -> float:
        """Price of all nodes of this assignment per hour."""
        return self.node_price * self.nodes

    @property
    def cost(self) -> float:
        """Price per hour × duration."""
        return self.price_per_hour * self.duration_hours

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by ``multicloud plan --json``."""
        return {
            "job": self.job,
            "provider": self.offer.provider,
            "region": self.offer.region,
            "zone": self.offer.zone,
            "instance_type": self.offer.instance_type,
            "accelerator": self.offer.accelerator,
            "nodes": self.nodes,
            "replicas": self.replicas,
            "market": self.market.value,
            "reservation": self.offer.reservation,
            "price_per_hour": _money(self.price_per_hour),
            "cost": _money(self.cost),
            "rofr": self.rofr.to_dict() if self.rofr else None,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Unplaced:
    """A job the plan could not place.

    Attributes:
        job: Job id.
        reason: The main reason, one line.
        details: Supporting detail (how many offers each constraint removed, ...).
    """

    job: str
    reason: str
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by ``multicloud plan --json``."""
        return {"job": self.job, "reason": self.reason, "details": list(self.details)}


@dataclass(frozen=True, init=False)
class AuditEntry:
    """One ROFR offer to a holder and its answer: a line of the audit ledger.

    Attributes:
        job: Job id.
        holder: Holder asked.
        terms: What was offered (accelerators, count, nodes, replicas, regions, residency).
        outside_price_per_hour: Outside price P (None: no outside offer).
        holder_price_per_hour: The holder's own best price (None: it had none).
        answer: ``accepted`` or ``declined``.
        reason: Why.
        billed_price_per_hour: What the accepted placement is billed (None when declined).
        at: When the offer was made (the snapshot's time).
        catalog_version: Price data version.
    """

    job: str
    holder: str
    terms: Mapping[str, Any]
    outside_price_per_hour: float | None
    holder_price_per_hour: float | None
    answer: Literal["accepted", "declined"]
    reason: str
    billed_price_per_hour: float | None
    at: datetime | None
    catalog_version: str

    def __init__(
        self,
        job: str,
        holder: str,
        terms: Mapping[str, Any],
        outside_price_per_hour: float | None,
        holder_price_per_hour: float | None,
        answer: Literal["accepted", "declined"],
        reason: str,
        billed_price_per_hour: float | None,
        at: datetime | None,
        catalog_version: str,
    ) -> None:
        # As in Assignment (2.2 µs against 0.6): the fast path builds one per ROFR offer.
        d = self.__dict__
        d["job"] = job
        d["holder"] = holder
        d["terms"] = terms
        d["outside_price_per_hour"] = outside_price_per_hour
        d["holder_price_per_hour"] = holder_price_per_hour
        d["answer"] = answer
        d["reason"] = reason
        d["billed_price_per_hour"] = billed_price_per_hour
        d["at"] = at
        d["catalog_version"] = catalog_version

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by ``multicloud plan --json`` and ``audit``."""
        return {
            "job": self.job,
            "holder": self.holder,
            "terms": dict(self.terms),
            "outside_price_per_hour": _money(self.outside_price_per_hour),
            "holder_price_per_hour": _money(self.holder_price_per_hour),
            "answer": self.answer,
            "reason": self.reason,
            "billed_price_per_hour": _money(self.billed_price_per_hour),
            "at": self.at.isoformat() if self.at else None,
            "catalog_version": self.catalog_version,
        }


@dataclass(frozen=True)
class PlanStats:
    """How the plan was found.

    Attributes:
        path: ``fast`` (no contention: every job got its cheapest option) or ``optimizer``.
        jobs: Jobs considered.
        optimizer_jobs: Jobs handed to the optimiser.
        optimizer_variables: Variables in the optimiser model.
        optimal: True if the optimiser proved optimality, to within ``Policy.mip_rel_gap``
            (``mip_gap`` says how close; always True on the fast path).
        mip_gap: Relative gap of the optimised jobs' cost to the best proven lower bound.
        lp_bound_gap: Relative cost gap of the optimised jobs to the LP relaxation bound
            (None on the fast path, and where a group kept the queue walk's plan because
            the optimiser found none: its LP bound says nothing of that plan).
        work: Deterministic effort spent: simplex iterations plus branch-and-bound nodes.
        timed_out: The safety ceiling ``Policy.time_limit_s`` stopped a solve, so the
            plan may differ from what an unloaded machine would give.
        counts_optimal: The placed count of every priority tier is proven the most
            possible (each reached its LP bound, or a proof); the cost may still be
            within ``mip_gap`` of optimal only.
    """

    path: Literal["fast", "optimizer"]
    jobs: int
    optimizer_jobs: int = 0
    optimizer_variables: int = 0
    optimal: bool = True
    mip_gap: float = 0.0
    lp_bound_gap: float | None = None
    work: int = 0
    timed_out: bool = False
    counts_optimal: bool = True


@dataclass(frozen=True)
class Plan:
    """The planner's decision.

    Attributes:
        placements: Assignments, in queue order of their jobs.
        unplaced: Jobs not placed, with reasons.
        audit: ROFR ledger entries, in the order the offers were made.
        stats: How the plan was found.
    """

    placements: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...]
    audit: tuple[AuditEntry, ...]
    stats: PlanStats

    @property
    def total_cost(self) -> float:
        """Sum of the cost of every assignment."""
        return sum(a.cost for a in self.placements)

    def for_job(self, job: str) -> list[Assignment]:
        """Return the assignments of one job."""
        return [a for a in self.placements if a.job == job]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document ``multicloud plan --json`` prints."""
        return {
            "placements": [a.to_dict() for a in self.placements],
            "unplaced": [u.to_dict() for u in self.unplaced],
            "audit": [e.to_dict() for e in self.audit],
            "total_cost": _money(self.total_cost),
            "stats": {
                "path": self.stats.path,
                "jobs": self.stats.jobs,
                "optimizer_jobs": self.stats.optimizer_jobs,
                "optimizer_variables": self.stats.optimizer_variables,
                "optimal": self.stats.optimal,
                "mip_gap": _finite(self.stats.mip_gap),
                "lp_bound_gap": _finite(self.stats.lp_bound_gap),
                "work": self.stats.work,
                "timed_out": self.stats.timed_out,
                "counts_optimal": self.stats.counts_optimal,
            },
        }


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an unknown gap is null."""
    return None if value is None or not math.isfinite(value) else value


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
