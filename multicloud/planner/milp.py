"""The exact optimiser used when capacity (or a budget) is contended.

A mixed-integer program solved by HiGHS through ``scipy.optimize.milp``:

* Training jobs of identical shape, duration, priority, team and ROFR standing are
  interchangeable, so they form one class with one integer variable per option ("how many
  of this class run here"). This keeps the model small when many jobs look alike.
* Each inference job has an integer replica count per option, a binary per provider (for
  ``spread``) and a binary "placed".
* Constraints: each offer's capacity in nodes, each team's budget, and for inference the
  replica count, the spread and the total price cap.
* Objective, lexicographic: placed jobs per priority tier from the top, then total cost.
  Tiers are combined into one weighted solve while the weights stay exact in floating
  point, and solved one after another beyond that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from multicloud.models import Kind
from multicloud.planner.options import Opt
from multicloud.planner.types import PlanStats

if TYPE_CHECKING:
    from multicloud.planner.core import _Planner, _Slot

_MAX_WEIGHT = 1e7  # keeps weighted tier counts exact next to HiGHS's tolerances


@dataclass
class _Model:
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)

    def var(self, lb: float, ub: float, cost: float, integral: bool = True) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.cost.append(cost)
        self.integral.append(1 if integral else 0)
        return len(self.lb) - 1

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.row_lb)
        for c, v in terms:
            self.rows.append(r)
            self.cols.append(c)
            self.vals.append(v)
        self.row_lb.append(lo)
        self.row_ub.append(hi)

    def solve(
        self,
        objective: np.ndarray,
        extra: list[tuple[np.ndarray, float]],
        policy_limit: float,
        gap: float,
        relax: bool = False,
    ) -> tuple[np.ndarray | None, bool, float]:
        n = len(self.lb)
        constraints = []
        if self.row_lb:
            a = coo_array((self.vals, (self.rows, self.cols)), shape=(len(self.row_lb), n)).tocsr()
            constraints.append(LinearConstraint(a, self.row_lb, self.row_ub))
        for vec, lo in extra:
            constraints.append(LinearConstraint(vec.reshape(1, -1), lo, np.inf))
        res = milp(
            objective,
            integrality=np.zeros(n) if relax else np.array(self.integral),
            bounds=Bounds(np.array(self.lb), np.array(self.ub)),
            constraints=constraints,
            options={"time_limit": policy_limit, "mip_rel_gap": gap, "disp": False},
        )
        if res.x is None:
            return None, False, math.inf
        optimal = res.status == 0
        mip_gap = float(getattr(res, "mip_gap", 0.0) or 0.0)
        return np.asarray(res.x), optimal, mip_gap


@dataclass
class _Class:
    slots: list[_Slot]
    opts: list[Opt]
    vars: list[int]


@dataclass
class _Service:
    slot: _Slot
    opts: list[Opt]
    y: list[int]
    placed: int


def _usable(planner: _Planner, s: _Slot) -> list[Opt]:
    """Options worth modelling: fit now, allowed by ROFR standing, not dominated."""
    out: list[Opt] = []
    for opt in s.options.opts:
        if s.restricted and opt.holder:
            continue
        c = planner.cap[opt.oi]
        if c is not None and c < s.nodes:
            continue
        out.append(opt)
        if c is None and s.job.kind is Kind.TRAINING:
            break  # an unlimited option beats every pricier one for a gang
    return out


def build(
    planner: _Planner, slots: list[_Slot]
) -> tuple[_Model, list[_Class], list[_Service], dict[int, list[int]]]:
    """Build the model for the given (non-pinned) slots against the capacity left."""
    model = _Model()
    classes: dict[tuple[object, ...], _Class] = {}
    services: list[_Service] = []
    tier_vars: dict[int, list[int]] = defaultdict(list)
    cap_terms: dict[int, list[tuple[int, float]]] = defaultdict(list)
    team_terms: dict[str, list[tuple[int, float]]] = defaultdict(list)
    budgeted = planner.team_left

    grouped: dict[tuple[object, ...], list[_Slot]] = {}
    for s in slots:
        key: tuple[object, ...]
        if s.job.kind is Kind.TRAINING:
            key = (
                "gang",
                id(s.options),
                s.restricted,
                s.job.duration_hours,
                s.job.priority,
                s.job.team,
            )
        else:
            key = ("svc", s.idx)
        grouped.setdefault(key, []).append(s)

    for key, members in grouped.items():
        first = members[0]
        opts = _usable(planner, first)
        if not opts:
            continue
        team = first.job.team if first.job.team in budgeted else None
        hours = first.job.duration_hours
        if key[0] != "svc":
            cls = _Class(members, opts, [])
            size = len(members)
            for opt in opts:
                c = planner.cap[opt.oi]
                ub = size if c is None else min(size, c // first.nodes)
                v = model.var(0, ub, opt.rank * first.nodes * hours)
                cls.vars.append(v)
                tier_vars[first.job.priority].append(v)
                if c is not None:
                    cap_terms[opt.oi].append((v, first.nodes))
                if team is not None:
                    team_terms[team].append((v, opt.node_price * first.nodes * hours))
            model.row([(v, 1.0) for v in cls.vars], 0, size)
            classes[key] = cls
            continue
        s = first
        r = s.replicas
        placed = model.var(0, 1, 0)
        tier_vars[s.job.priority].append(placed)
        ys: list[int] = []
        by_provider: dict[str, list[int]] = defaultdict(list)
        price_terms: list[tuple[int, float]] = []
        for opt in opts:
            c = planner.cap[opt.oi]
            ub = r if c is None else min(r, c // s.nodes)
            v = model.var(0, ub, opt.rank * s.nodes * hours)
            ys.append(v)
            by_provider[opt.provider].append(v)
            price_terms.append((v, opt.node_price * s.nodes))
            if c is not None:
                cap_terms[opt.oi].append((v, s.nodes))
            if team is not None:
                team_terms[team].append((v, opt.node_price * s.nodes * hours))
        model.row([(v, 1.0) for v in ys] + [(placed, -float(r))], 0, 0)
        zs = []
        for vs in by_provider.values():
            z = model.var(0, 1, 0)
            zs.append(z)
            for v in vs:
                model.row([(v, 1.0), (z, -float(r))], -np.inf, 0)
            model.row([(z, 1.0), *((v, -1.0) for v in vs)], -np.inf, 0)
        model.row([(z, 1.0) for z in zs] + [(placed, -float(s.spread))], 0, np.inf)
        if s.job.max_price_per_hour is not None:
            model.row([*price_terms, (placed, -s.job.max_price_per_hour)], -np.inf, 0)
        services.append(_Service(s, opts, ys, placed))

    for oi, terms in cap_terms.items():
        c = planner.cap[oi]
        assert c is not None
        if sum(v for _, v in terms) > c:  # only rows that can bind
            model.row(terms, 0, c)
    for team, terms in team_terms.items():
        model.row(terms, -np.inf, max(budgeted[team], 0.0))
    return model, list(classes.values()), services, tier_vars


def optimise(planner: _Planner, slots: list[_Slot]) -> PlanStats:
    """Re-assign the non-pinned jobs optimally; mutates the slots and the planner's capacity.

    Args:
        planner: The planner after its queue walk.
        slots: All slots in queue order.

    Returns:
        Statistics of the solve.
    """
    free = [s for s in slots if not s.pinned and not s.static_fail]
    greedy = {s.idx: list(s.chosen) for s in free}
    greedy_reason = {s.idx: s.unplaced for s in free}
    for s in free:
        if s.chosen:
            planner.release(s)
    model, classes, services, tier_vars = build(planner, free)
    n = len(model.lb)
    if n == 0:
        for s in free:
            if greedy[s.idx]:
                planner.take(s, greedy[s.idx])
        return PlanStats(path="optimizer", jobs=len(slots), optimizer_jobs=len(free))
    limit = planner.policy.time_limit_s
    gap = planner.policy.mip_rel_gap

    tiers = sorted(tier_vars, reverse=True)
    tier_size = {t: sum(1 for s in free if s.job.priority == t) for t in tiers}
    greedy_count = {t: sum(1 for s in free if s.job.priority == t and greedy[s.idx]) for t in tiers}
    best: dict[int, float] = {}
    optimal = True
    mip_gap = 0.0
    if all(greedy_count[t] == tier_size[t] for t in tiers):
        best = {t: float(tier_size[t]) for t in tiers}  # nobody to add: skip the count solve
    else:
        chunks: list[list[int]] = []
        for t in tiers:  # top tier first; a chunk's weights must stay exact
            if chunks and _weight_span(chunks[-1] + [t], tier_size) <= _MAX_WEIGHT:
                chunks[-1].append(t)
            else:
                chunks.append([t])
        for chunk in chunks:
            weights: dict[int, float] = {}
            w = 1.0
            for t in reversed(chunk):
                weights[t] = w
                w *= tier_size[t] + 1
            obj = np.zeros(n)
            for t in chunk:
                obj[tier_vars[t]] = -weights[t]
            x, ok, g = model.solve(obj, _count_rows(n, tier_vars, best), limit, 0.0)
            if x is None:
                return _fallback(planner, free, greedy, n)
            optimal &= ok
            for t in chunk:
                best[t] = float(round(x[tier_vars[t]].sum()))
            _ = g
    count_rows = _count_rows(n, tier_vars, best)
    x, ok, g = model.solve(np.array(model.cost), count_rows, limit, gap)
    if x is None:
        return _fallback(planner, free, greedy, n)
    optimal &= ok
    mip_gap = max(mip_gap, g)
    bound_gap: float | None = None
    if planner.policy.lp_bound:
        # The LP relaxation of the cost stage (tier counts held) bounds the optimum from below.
        lp, _, _ = model.solve(np.array(model.cost), count_rows, limit, 0.0, relax=True)
        if lp is not None:
            got, low = float(np.dot(model.cost, x)), float(np.dot(model.cost, lp))
            bound_gap = (got - low) / low if low > 0 else 0.0
    _decode(planner, x, classes, services, greedy, greedy_reason)
    return PlanStats(
        path="optimizer",
        jobs=len(slots),
        optimizer_jobs=len(free),
        optimizer_variables=n,
        optimal=optimal,
        mip_gap=mip_gap,
        lp_bound_gap=bound_gap,
    )


def _weight_span(chunk: list[int], sizes: dict[int, int]) -> float:
    w = 1.0
    for t in chunk:
        w *= sizes[t] + 1
    return w


def _count_rows(
    n: int, tier_vars: dict[int, list[int]], best: dict[int, float]
) -> list[tuple[np.ndarray, float]]:
    rows = []
    for t, count in best.items():
        vec = np.zeros(n)
        vec[tier_vars[t]] = 1.0
        rows.append((vec, count - 0.5))
    return rows


def _fallback(
    planner: _Planner,
    free: list[_Slot],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    n: int,
) -> PlanStats:
    """The optimiser found nothing in time: keep the queue walk's feasible plan."""
    for s in free:
        if greedy[s.idx]:
            planner.take(s, greedy[s.idx])
    return PlanStats(
        path="optimizer",
        jobs=len(planner.snap.jobs),
        optimizer_jobs=len(free),
        optimizer_variables=n,
        optimal=False,
        mip_gap=math.inf,
    )


def _decode(
    planner: _Planner,
    x: np.ndarray,
    classes: list[_Class],
    services: list[_Service],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    greedy_reason: dict[int, str | None],
) -> None:
    note = "placed by the optimiser (capacity or budget contended)"
    for cls in classes:
        counts = [round(x[v]) for v in cls.vars]
        queue = iter(cls.slots)  # earlier jobs of the class get the cheaper options
        for opt, k in zip(cls.opts, counts, strict=True):
            for _ in range(k):
                s = next(queue)
                planner.take(s, [(opt, 1, opt.node_price)])
                s.reasons = [*s.reasons, note] if s.reasons else [note]
                s.unplaced = None
        for s in queue:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
    for svc in services:
        s = svc.slot
        if round(x[svc.placed]) < 1:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
            continue
        choice = [
            (opt, round(x[v]), opt.node_price)
            for opt, v in zip(svc.opts, svc.y, strict=True)
            if round(x[v]) > 0
        ]
        planner.take(s, choice)
        s.reasons = [*s.reasons, note] if s.reasons else [note]
        s.unplaced = None
    for idx_slots in classes:
        for s in idx_slots.slots:
            if not s.chosen and s.unplaced is None:
                s.unplaced = _lost(s)


def _lost(s: _Slot) -> str:
    if s.job.team is not None:
        return (
            "capacity or team budget is needed by higher-priority or earlier jobs "
            "(optimiser: placing it would displace them)"
        )
    return (
        "capacity is needed by higher-priority or earlier jobs "
        "(optimiser: placing it would displace them)"
    )
