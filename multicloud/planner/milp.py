"""The optimiser used when capacity (or a budget) is contended.

An integer program, searched by :mod:`multicloud.planner.search` on HiGHS:

* Training jobs of identical shape, duration, priority, team and ROFR standing are
  interchangeable, so they form one class with one integer variable per option ("how many
  of this class run here"). This keeps the model small when many jobs look alike.
* Each inference job has an integer replica count per option, a binary per provider (for
  ``spread``) and a binary "placed".
* Constraints: each offer's capacity in nodes (with its gang-size roundings, which keep
  the LP from packing fractions of gangs), each team's budget, and for inference the
  replica count, the spread and the total price cap.
* Objective, lexicographic: placed jobs per priority tier from the top, each tier's count
  then held exactly, then total cost.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import coo_array

from multicloud.models import Kind
from multicloud.planner.options import Opt
from multicloud.planner.search import Problem, Search, Settings
from multicloud.planner.types import PlanStats, Policy

if TYPE_CHECKING:
    from multicloud.planner.core import _Planner, _Slot

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
    pool: dict[int, tuple[int, int]] = field(default_factory=dict)  # var -> (offer, nodes)
    cap_row: dict[int, int] = field(default_factory=dict)  # offer -> its capacity row

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
    z: dict[str, int]


def _usable(planner: _Planner, s: _Slot) -> list[Opt]:
    """Options worth modelling: fit now, allowed by ROFR standing, not dominated.

    Dominated, exactly: a pricier market on a pool already listed (same capacity, same
    count, higher cost) and, for a gang, anything after an option with no capacity limit.
    """
    out: list[Opt] = []
    seen: set[int] = set()
    ceiling = s.ceiling
    for opt in s.options.opts:
        if (s.restricted and opt.holder) or opt.oi in seen:
            continue
        if ceiling is not None and opt.node_price * s.nodes >= ceiling - 1e-9:
            continue
        c = planner.cap[opt.oi]
        if c is not None and c < s.nodes:
            continue
        seen.add(opt.oi)
        out.append(opt)
        if c is None and s.job.kind is Kind.TRAINING:
            break
    return out


def _prune_with_guaranteed_room(
    planner: _Planner, usable: dict[int, list[Opt]], slots: list[_Slot]
) -> None:
    """Cut each gang's options after the cheapest set that always has room for it.

    If the cheapest options S of job j hold more j-sized gangs than every other job could
    ever occupy there (a job of n nodes blocks at most n/n_j + 1 of j's gangs in a pool),
    then any plan with j elsewhere can move j into S at no higher cost and no lower count.
    So some optimal plan uses S, and the options after S can be dropped exactly.
    """
    load_nodes: dict[int, float] = defaultdict(float)
    load_jobs: dict[int, float] = defaultdict(float)
    for s in slots:
        for opt in usable.get(s.idx, ()):
            load_nodes[opt.oi] += s.nodes * s.replicas
            load_jobs[opt.oi] += s.replicas
    for s in slots:
        opts = usable.get(s.idx)
        if not opts or s.job.kind is not Kind.TRAINING:
            continue
        room = 0
        blocked = 0.0
        for i, opt in enumerate(opts):
            c = planner.cap[opt.oi]
            if c is None:
                break
            room += c // s.nodes
            blocked += (load_nodes[opt.oi] - s.nodes) / s.nodes + (load_jobs[opt.oi] - 1)
            if room > blocked:
                del opts[i + 1 :]
                break


def build(
    planner: _Planner,
    slots: list[_Slot],
    usable: dict[int, list[Opt]],
    *,
    by_shape: bool = False,
) -> tuple[_Model, list[_Class], list[_Service], dict[int, list[int]]]:
    """Build the model for the given (non-pinned) slots against the capacity left.

    Args:
        planner: The planner after its walk (capacity released for these slots).
        slots: The slots to model.
        usable: Each slot's options.
        by_shape: For counting only: gangs that differ only in duration (and whose team
            has no budget) are one class, since a count does not see durations. Costs
            are then per hour.
    """
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
            timed = not by_shape or s.job.team in budgeted
            key = (
                "gang",
                id(s.options),
                s.restricted,
                s.ceiling,
                s.job.duration_hours if timed else None,
                s.job.priority,
                s.job.team if timed else None,
            )
        else:
            key = ("svc", s.idx)
        grouped.setdefault(key, []).append(s)

    for key, members in grouped.items():
        first = members[0]
        opts = usable.get(first.idx, [])
        if not opts:
            continue
        team = first.job.team if first.job.team in budgeted else None
        # the count model's costs are per hour: only a tie-break between equal counts
        # (budgets still need the real cost: budgeted classes keep their duration)
        hours = first.job.duration_hours
        rank_hours = 1.0 if by_shape else hours
        if key[0] != "svc":
            cls = _Class(members, opts, [])
            size = len(members)
            for opt in opts:
                c = planner.cap[opt.oi]
                ub = size if c is None else min(size, c // first.nodes)
                v = model.var(0, ub, opt.rank * first.nodes * rank_hours)
                model.pool[v] = (opt.oi, first.nodes)
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
            v = model.var(0, ub, opt.rank * s.nodes * rank_hours)
            model.pool[v] = (opt.oi, s.nodes)
            ys.append(v)
            by_provider[opt.provider].append(v)
            price_terms.append((v, opt.node_price * s.nodes))
            if c is not None:
                cap_terms[opt.oi].append((v, s.nodes))
            if team is not None:
                team_terms[team].append((v, opt.node_price * s.nodes * hours))
        model.row([(v, 1.0) for v in ys] + [(placed, -float(r))], 0, 0)
        zs = []
        zmap: dict[str, int] = {}
        for prov, vs in by_provider.items():
            z = model.var(0, 1, 0)
            zs.append(z)
            zmap[prov] = z
            # replicas on a provider only if it counts towards the spread, and it counts
            # only if it has one (one row per provider, not per option: services are a
            # fifth of the jobs, and per-option rows were most of a large model's rows)
            model.row([*((v, 1.0) for v in vs), (z, -float(r))], -np.inf, 0)
            model.row([(z, 1.0), *((v, -1.0) for v in vs)], -np.inf, 0)
            # and only if the service is placed: else the LP half-places every service
            # that has a single provider, one provider meeting spread × ½
            model.row([(z, 1.0), (placed, -1.0)], -np.inf, 0)
        model.row([(z, 1.0) for z in zs] + [(placed, -float(s.spread))], 0, np.inf)
        if s.job.max_price_per_hour is not None:
            model.row([*price_terms, (placed, -s.job.max_price_per_hour)], -np.inf, 0)
        services.append(_Service(s, opts, ys, placed, zmap))

    for oi, terms in cap_terms.items():
        c = planner.cap[oi]
        assert c is not None
        # Only rows that can bind: a variable may stand for several gangs or replicas,
        # so its largest use of the pool is nodes × its upper bound.
        if sum(nodes * model.ub[v] for v, nodes in terms) > c:
            model.cap_row[oi] = len(model.row_lb)
            model.row(terms, 0, c)
            _gang_cuts(model, terms, c)
    for team, terms in team_terms.items():
        model.row(terms, -np.inf, max(budgeted[team], 0.0))
    return model, list(classes.values()), services, tier_vars


def _gang_cuts(model: _Model, terms: list[tuple[int, float]], cap: int) -> None:
    """Add the rounded capacity rows that make gang packing tight in the LP.

    Dividing a pool's row by a gang size d and rounding down both sides is valid for whole
    gangs (Chvátal-Gomory): ``Σ ⌊nodes/d⌋·x ≤ ⌊cap/d⌋``. Without it the LP packs half a
    16-node gang into 8 spare nodes, and its bound, and every rounding of it, drift.
    """
    for d in sorted({int(nodes) for _, nodes in terms if nodes > 1}):
        big = [(v, float(int(nodes) // d)) for v, nodes in terms if nodes >= d]
        if cap % d == 0 and all(int(nodes) % d == 0 for _, nodes in terms if nodes >= d):
            continue  # the same row divided by d: nothing to cut
        if sum(k * model.ub[v] for v, k in big) > cap // d:
            model.row(big, -np.inf, cap // d)


def settings_of(policy: Policy) -> Settings:
    """The search limits a policy asks for."""
    return Settings(
        nodes=policy.node_limit,
        rounds=policy.search_rounds,
        max_free=policy.neighbourhood_size,
        exact_below=policy.exact_below,
        gap=policy.mip_rel_gap,
        seconds=policy.time_limit_s,
        prove=policy.prove,
    )


def optimise(planner: _Planner, slots: list[_Slot]) -> PlanStats:
    """Re-assign the non-pinned jobs optimally; mutates the slots and the planner's capacity.

    Jobs that share no limited pool (and no budget) cannot affect each other, so the free
    jobs split into independent components. A component in which no job lost an option to
    capacity keeps the queue walk's placement (each job has its cheapest option: optimal);
    each other component is one integer program, searched by :mod:`.search`.

    Args:
        planner: The planner after its queue walk.
        slots: All slots in queue order.

    Returns:
        Statistics of the solves.
    """
    free = [s for s in slots if not s.pinned and not s.static_fail]
    greedy = {s.idx: list(s.chosen) for s in free}
    greedy_reason = {s.idx: s.unplaced for s in free}
    for s in free:
        if s.chosen:
            planner.release(s)
    usable = {s.idx: _usable(planner, s) for s in free}
    force = planner.policy.force_optimizer
    jobs = variables = work = 0
    optimal = counts_optimal = True
    timed_out = False
    value = 0.0
    lp_bound: float | None = 0.0
    bound = 0.0
    settings = settings_of(planner.policy)
    seconds = 0.0
    for comp in _components(planner, free, usable):
        if not force and not any(s.contended for s in comp):
            for s in comp:
                if greedy[s.idx]:
                    planner.take(s, greedy[s.idx])
            continue
        _prune_with_guaranteed_room(planner, usable, comp)
        # The safety ceiling is for the whole plan: each component gets what is left.
        left = replace(settings, seconds=max(settings.seconds - seconds, 0.01))
        res = _solve(planner, comp, usable, greedy, greedy_reason, left)
        seconds += res.seconds
        jobs += len(comp)
        variables += res.variables
        work += res.work
        timed_out |= res.timed_out
        optimal &= res.optimal
        counts_optimal &= res.counts_optimal
        value += res.value
        bound += res.bound
        lp_bound = None if lp_bound is None or res.lp_bound is None else lp_bound + res.lp_bound
    return PlanStats(
        path="optimizer",
        jobs=len(slots),
        optimizer_jobs=jobs,
        optimizer_variables=variables,
        optimal=optimal,
        mip_gap=_gap(value, bound) if jobs else 0.0,
        lp_bound_gap=None if lp_bound is None or not jobs else _gap(value, lp_bound),
        work=work,
        timed_out=timed_out,
        counts_optimal=counts_optimal,
    )


def _components(
    planner: _Planner, free: list[_Slot], usable: dict[int, list[Opt]]
) -> list[list[_Slot]]:
    """Split jobs into groups linked by a shared limited pool or a shared budget."""
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: object, b: object) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    for s in free:
        me = ("job", s.idx)
        find(me)
        for opt in usable[s.idx]:
            if planner.cap[opt.oi] is not None:
                union(me, ("pool", opt.oi))
        if s.job.team is not None and s.job.team in planner.team_left:
            union(me, ("team", s.job.team))
    groups: dict[object, list[_Slot]] = defaultdict(list)
    for s in free:  # keeps queue order inside each group
        groups[find(("job", s.idx))].append(s)
    return list(groups.values())


@dataclass
class _Result:
    variables: int
    optimal: bool
    value: float = 0.0  # the plan's objective (ranked cost)
    lp_bound: float | None = None  # LP relaxation bound of that objective
    bound: float = -math.inf  # best proven bound (LP or a proof's)
    work: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    counts_optimal: bool = True


def _problem(model: _Model, classes: list[_Class], services: list[_Service]) -> Problem:
    """The model as arrays, with each variable's owner, pool and option rank."""
    n = len(model.lb)
    owner = np.full(n, -1, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    for k, cls in enumerate(classes):
        owner[cls.vars] = k
        rank[cls.vars] = np.arange(len(cls.vars))
    for k, svc in enumerate(services, start=len(classes)):
        owner[[*svc.y, svc.placed, *svc.z.values()]] = k
        rank[svc.y] = np.arange(len(svc.y))
    pool = np.full(n, -1, dtype=np.int64)
    use = np.zeros(n)
    for v, (oi, nodes) in model.pool.items():
        row = model.cap_row.get(oi)
        if row is not None:  # a pool that can never fill links nobody
            pool[v] = row
            use[v] = nodes
    a = coo_array(
        (model.vals, (model.rows, model.cols)), shape=(len(model.row_lb), n)
    ).tocsc()
    return Problem(
        a=a,
        row_lb=np.array(model.row_lb, dtype=np.float64),
        row_ub=np.array(model.row_ub, dtype=np.float64),
        ub=np.array(model.ub, dtype=np.float64),
        integral=np.array(model.integral, dtype=np.bool_),
        owner=owner,
        pool=pool,
        use=use,
        rank=rank,
    )


def _solve(
    planner: _Planner,
    comp: list[_Slot],
    usable: dict[int, list[Opt]],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    greedy_reason: dict[int, str | None],
    settings: Settings,
) -> _Result:
    """Place one component: tier counts from the top tier down, then cost."""
    model, classes, services, tier_vars = build(planner, comp, usable)
    n = len(model.lb)
    if n == 0:
        for s in comp:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
        return _Result(0, True, 0.0)
    prob = _problem(model, classes, services)
    # The walk's plan (with nothing placed as the last resort: always feasible before
    # counts are held) is the first incumbent.
    walk = _encode(model, classes, services, greedy)
    x = walk if walk is not None and prob.feasible(walk) else np.zeros(n)
    tiers = sorted(tier_vars, reverse=True)
    earlier = _previous(planner, comp, usable)
    if earlier:
        # An earlier plan, where it still fits, may place more (tier by tier) or as
        # many for less: then the search starts from it.
        hint = _encode(model, classes, services, earlier)
        if hint is not None and prob.feasible(hint):

            def rank(y: np.ndarray) -> tuple[float, ...]:
                counts = (round(float(y[tier_vars[t]].sum())) for t in tiers)
                return (*counts, -float(np.array(model.cost) @ y))

            if rank(hint) > rank(x):
                x = hint
                greedy = {**greedy, **{s.idx: earlier.get(s.idx, []) for s in comp}}
    modelled = {t: sum(1 for s in comp if s.job.priority == t and usable[s.idx]) for t in tiers}
    placed = {t: round(float(x[tier_vars[t]].sum())) for t in tiers}
    work = 0
    seconds = 0.0
    timed_out = False
    optimal = counts_optimal = True
    if placed != modelled:
        # Counts do not see durations: count on the (often much smaller) model where
        # gangs differing only in duration are one class.
        counted = _count(planner, comp, usable, greedy, settings)
        work, seconds, timed_out = counted.work, counted.seconds, counted.timed_out
        optimal = counts_optimal = counted.proven
        placed = counted.best
        start = _encode(model, classes, services, counted.choices)
        if start is not None and prob.feasible(start):
            x = start
        # otherwise the walk's plan, counts below the best: the rows below are met by
        # the cost stage's own repair (the LP is feasible, and so is the count plan).
    settings = replace(settings, seconds=max(settings.seconds - seconds, 0.01))
    search = Search(prob, settings)
    # Held exactly: a looser row would let the LP trade a placed job for fractions of
    # cheaper ones, and its bound (and rounding) would drift.
    prob.add_rows(
        [(np.array(tier_vars[t], dtype=np.int64), float(placed[t]), math.inf) for t in tiers]
    )
    if not prob.feasible(x):
        x = np.zeros(n)  # replaced by the first repair below
    cost = np.array(model.cost)
    lp, low = search.relax(cost, x if x.any() else None)
    bound = low
    limit = low + settings.gap * abs(low) if math.isfinite(low) else -math.inf
    x = search.improve(cost, lp, x, limit, feasible=prob.feasible(x))
    bound = max(bound, search.bound)
    if not prob.feasible(x):  # no plan at hand met the counts: search the whole model
        found = search.prove(cost, None, nodes=settings.nodes).x
        if found is None:
            return _fallback(planner, comp, greedy, n)
        x = found
    value = float(cost @ x)
    if value > limit and settings.prove:
        out = search.prove(cost, x)
        if out.x is not None and float(cost @ out.x) < value:
            x = out.x
            value = float(cost @ x)
        bound = max(bound, out.bound)
    optimal &= _gap(value, bound) <= settings.gap
    _decode(planner, x, classes, services, greedy_reason)
    return _Result(
        n,
        optimal,
        value,
        low if math.isfinite(low) else None,
        bound,
        work + search.work,
        seconds + search.seconds,
        timed_out or search.timed_out,
        counts_optimal,
    )


_TIE = 0.25  # the most a count objective's price tie-break may weigh, in jobs


def _previous(
    planner: _Planner, comp: list[_Slot], usable: dict[int, list[Opt]]
) -> dict[int, list[tuple[Opt, int, float]]]:
    """The snapshot's previous plan for these slots, as options they may still use."""
    prev = planner.snap.previous
    if prev is None:
        return {}
    by_job: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for a in prev.placements:
        by_job[a.job].append((a.offer.key, a.market.value, a.replicas))
    out: dict[int, list[tuple[Opt, int, float]]] = {}
    for s in comp:
        was = by_job.get(s.id)
        if not was:
            continue
        where = {(planner.offers[o.oi].key, o.market.value): o for o in usable[s.idx]}
        choice = [
            (where[(k, m)], r, where[(k, m)].node_price) for k, m, r in was if (k, m) in where
        ]
        if len(choice) == len(was):
            out[s.idx] = choice
    return out


@dataclass
class _Counted:
    best: dict[int, int]  # placed jobs per tier
    choices: dict[int, list[tuple[Opt, int, float]]]  # a plan placing them
    proven: bool
    work: int
    seconds: float
    timed_out: bool


def _count(
    planner: _Planner,
    comp: list[_Slot],
    usable: dict[int, list[Opt]],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    settings: Settings,
) -> _Counted:
    """The most jobs each tier can place, from the top tier down, each count then held."""
    model, classes, services, tier_vars = build(planner, comp, usable, by_shape=True)
    n = len(model.lb)
    prob = _problem(model, classes, services)
    search = Search(prob, settings)
    walk = _encode(model, classes, services, greedy)
    x = walk if walk is not None and prob.feasible(walk) else np.zeros(n)
    owner_tier = np.array(
        [c.slots[0].job.priority for c in classes] + [v.slot.job.priority for v in services],
        dtype=np.int64,
    )
    tier_of = owner_tier[prob.owner]
    proven = True
    best: dict[int, int] = {}
    # Each count objective carries the price per hour, scaled to at most _TIE in all:
    # it never outweighs one job, and it breaks the LP's ties (a count LP is massively
    # degenerate otherwise) towards cheap plans, which the cost stage starts from.
    price = np.array(model.cost)
    tie = _TIE / max(float(price @ prob.ub), 1.0)
    for t in sorted(tier_vars, reverse=True):
        idx = np.array(tier_vars[t], dtype=np.int64)
        modelled = sum(1 for s in comp if s.job.priority == t and usable[s.idx])
        got = round(float(x[idx].sum()))
        if got < modelled:
            scope = tier_of >= t
            objective = np.where(scope, price * tie, 0.0)
            objective[idx] -= 1.0
            lp, value = search.relax(objective, x)
            # The LP's count is at most -value + _TIE, and a count is whole.
            bound = math.floor(-value + _TIE + 1e-6) if math.isfinite(value) else modelled
            target = min(modelled, bound)
            if got < target:
                # Lower tiers only hold capacity here: the search releases it, then the
                # walk's placements of theirs that still fit are put back.
                x = search.improve(objective, lp, x, -target + _TIE, scope=scope)
                got = round(float(x[idx].sum()))
                if walk is not None:
                    x = search.refill(x, walk, ~scope)
            if got < target and settings.prove:
                out = search.prove(objective, x)
                if out.x is not None and round(float(out.x[idx].sum())) > got:
                    x = out.x
                    got = round(float(x[idx].sum()))
                proven &= out.proven or got >= target
            else:
                proven &= got >= target
        best[t] = got
        prob.add_rows([(idx, float(got), math.inf)])
    return _Counted(
        best, _choices(x, classes, services), proven, search.work, search.seconds, search.timed_out
    )


def _gap(value: float, bound: float) -> float:
    """Relative distance of ``value`` above a lower ``bound`` (0 when equal)."""
    if value - bound <= 1e-9 * max(1.0, abs(value)):
        return 0.0
    return (value - bound) / bound if bound > 1e-9 else math.inf


def _encode(
    model: _Model,
    classes: list[_Class],
    services: list[_Service],
    greedy: dict[int, list[tuple[Opt, int, float]]],
) -> np.ndarray | None:
    """Per-slot placements (the walk's, or another model's) as a solution of this model.

    None if a placement uses an option the model pruned.
    """
    x = np.zeros(len(model.lb))
    for cls in classes:
        where = {opt.oi: v for opt, v in zip(cls.opts, cls.vars, strict=True)}
        for s in cls.slots:
            for opt, _, _ in greedy.get(s.idx, ()):
                if opt.oi not in where:
                    return None
                x[where[opt.oi]] += 1
    for svc in services:
        choice = greedy.get(svc.slot.idx)
        if not choice:
            continue
        where = {opt.oi: v for opt, v in zip(svc.opts, svc.y, strict=True)}
        for opt, reps, _ in choice:
            if opt.oi not in where:
                return None
            x[where[opt.oi]] += reps
            x[svc.z[opt.provider]] = 1
        x[svc.placed] = 1
    return x


def _fallback(
    planner: _Planner,
    comp: list[_Slot],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    n: int,
) -> _Result:
    """The optimiser found nothing in time: keep the queue walk's feasible plan."""
    for s in comp:
        if greedy[s.idx]:
            planner.take(s, greedy[s.idx])
    return _Result(n, False, math.inf, math.nan, counts_optimal=False)


def _choices(
    x: np.ndarray, classes: list[_Class], services: list[_Service]
) -> dict[int, list[tuple[Opt, int, float]]]:
    """Per-slot placements of a model solution.

    Within a class the members differ at most in duration, so the cost is least when the
    shortest members are the ones placed and, among those, the longest get the cheapest
    options (an exchange argument: swapping two members never lowers the cost otherwise).
    Equal durations keep queue order: earlier jobs get the cheaper options.
    """
    out: dict[int, list[tuple[Opt, int, float]]] = {}
    for cls in classes:
        counts = [round(x[v]) for v in cls.vars]
        placed = sum(counts)
        members = sorted(range(len(cls.slots)), key=lambda i: (cls.slots[i].job.duration_hours, i))
        chosen = sorted(
            members[:placed], key=lambda i: (-cls.slots[i].job.duration_hours, i)
        )
        queue = iter(chosen)
        for opt, k in zip(cls.opts, counts, strict=True):
            for _ in range(k):
                out[cls.slots[next(queue)].idx] = [(opt, 1, opt.node_price)]
    for svc in services:
        if round(x[svc.placed]) < 1:
            continue
        out[svc.slot.idx] = [
            (opt, round(x[v]), opt.node_price)
            for opt, v in zip(svc.opts, svc.y, strict=True)
            if round(x[v]) > 0
        ]
    return out


def _decode(
    planner: _Planner,
    x: np.ndarray,
    classes: list[_Class],
    services: list[_Service],
    greedy_reason: dict[int, str | None],
) -> None:
    note = "placed by the optimiser (capacity or budget contended)"
    chosen = _choices(x, classes, services)
    slots = [s for cls in classes for s in cls.slots] + [svc.slot for svc in services]
    for s in slots:
        choice = chosen.get(s.idx)
        if choice is None:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
            continue
        planner.take(s, choice)
        s.reasons = [*s.reasons, note] if s.reasons else [note]
        s.unplaced = None


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
