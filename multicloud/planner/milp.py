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
from collections.abc import Callable
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
    pool: dict[int, tuple[int, int]] = field(default_factory=dict)  # var -> (offer, nodes)

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

    def feasible(self, x: np.ndarray, extra: list[tuple[np.ndarray, float]]) -> bool:
        """True if ``x`` satisfies the bounds, the rows and the extra (≥) rows."""
        tol = 1e-6
        if np.any(x < np.array(self.lb) - tol) or np.any(x > np.array(self.ub) + tol):
            return False
        if self.row_lb:
            a = coo_array(
                (self.vals, (self.rows, self.cols)), shape=(len(self.row_lb), len(self.lb))
            ).tocsr()
            ax = a @ x
            if np.any(ax < np.array(self.row_lb) - tol) or np.any(ax > np.array(self.row_ub) + tol):
                return False
        return all(float(vec @ x) >= lo - tol for vec, lo in extra)

    def solve(
        self,
        objective: np.ndarray,
        extra: list[tuple[np.ndarray, float]],
        policy_limit: float,
        gap: float,
        relax: bool = False,
    ) -> tuple[np.ndarray | None, bool, float]:
        """Solve with the model's rows plus ``extra`` (≥) rows.

        Returns:
            The solution (None if none was found), whether it is proven optimal, and the
            proven lower bound of the objective (-inf when unknown).
        """
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
            return None, False, -math.inf
        optimal = res.status == 0
        x = np.asarray(res.x)
        if relax or optimal:
            return x, optimal, float(objective @ x)
        dual = getattr(res, "mip_dual_bound", None)
        return x, optimal, -math.inf if dual is None else float(dual)


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
    planner: _Planner, slots: list[_Slot], usable: dict[int, list[Opt]]
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
                s.ceiling,
                s.job.duration_hours,
                s.job.priority,
                s.job.team,
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
        hours = first.job.duration_hours
        if key[0] != "svc":
            cls = _Class(members, opts, [])
            size = len(members)
            for opt in opts:
                c = planner.cap[opt.oi]
                ub = size if c is None else min(size, c // first.nodes)
                v = model.var(0, ub, opt.rank * first.nodes * hours)
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
            v = model.var(0, ub, opt.rank * s.nodes * hours)
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
            for v in vs:
                model.row([(v, 1.0), (z, -float(r))], -np.inf, 0)
            model.row([(z, 1.0), *((v, -1.0) for v in vs)], -np.inf, 0)
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
            model.row(terms, 0, c)
    for team, terms in team_terms.items():
        model.row(terms, -np.inf, max(budgeted[team], 0.0))
    return model, list(classes.values()), services, tier_vars


def optimise(planner: _Planner, slots: list[_Slot]) -> PlanStats:
    """Re-assign the non-pinned jobs optimally; mutates the slots and the planner's capacity.

    Jobs that share no limited pool (and no budget) cannot affect each other, so the free
    jobs split into independent components. A component in which no job lost an option to
    capacity keeps the queue walk's placement (each job has its cheapest option: optimal);
    each other component is one MILP.

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
    jobs = variables = 0
    optimal = True
    mip_gap = 0.0
    value = 0.0
    lp_bound: float | None = 0.0
    bound = 0.0
    todo = []
    for comp in _components(planner, free, usable):
        if not force and not any(s.contended for s in comp):
            for s in comp:
                if greedy[s.idx]:
                    planner.take(s, greedy[s.idx])
            continue
        _prune_with_guaranteed_room(planner, usable, comp)
        todo.append((comp, sum(len(usable[s.idx]) for s in comp)))
    # The time limit is the optimiser's budget per stage, shared by size among components.
    total = sum(size for _, size in todo) or 1
    for comp, size in todo:
        share = max(planner.policy.time_limit_s * size / total, 0.1)
        res = _solve(planner, comp, usable, greedy, greedy_reason, share)
        jobs += len(comp)
        variables += res.variables
        optimal &= res.optimal
        value += res.value
        bound += res.bound
        lp_bound = None if lp_bound is None or res.lp_bound is None else lp_bound + res.lp_bound
    mip_gap = _gap(value, bound) if jobs else 0.0
    return PlanStats(
        path="optimizer",
        jobs=len(slots),
        optimizer_jobs=jobs,
        optimizer_variables=variables,
        optimal=optimal,
        mip_gap=mip_gap,
        lp_bound_gap=None if lp_bound is None or not jobs else _gap(value, lp_bound),
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
    mip_gap: float
    value: float = 0.0  # the plan's objective (ranked cost)
    lp_bound: float | None = None  # root LP relaxation bound of that objective
    bound: float = -math.inf  # best proven bound (LP or the MILP's dual bound)


def _solve(
    planner: _Planner,
    comp: list[_Slot],
    usable: dict[int, list[Opt]],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    greedy_reason: dict[int, str | None],
    limit: float,
) -> _Result:
    model, classes, services, tier_vars = build(planner, comp, usable)
    n = len(model.lb)
    if n == 0:
        for s in comp:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
        return _Result(0, True, 0.0)
    gap = planner.policy.mip_rel_gap

    tiers = sorted(tier_vars, reverse=True)
    tier_size = {t: sum(1 for s in comp if s.job.priority == t) for t in tiers}
    greedy_count = {t: sum(1 for s in comp if s.job.priority == t and greedy[s.idx]) for t in tiers}
    modelled = {t: sum(1 for s in comp if s.job.priority == t and usable[s.idx]) for t in tiers}
    best: dict[int, float] = {}
    optimal = True
    counts_x: np.ndarray | None = None
    if all(greedy_count[t] == modelled[t] for t in tiers):
        # the walk already placed every job that has an option: no count to improve
        best = {t: float(modelled[t]) for t in tiers}
    else:
        chunks: list[list[int]] = []
        for t in tiers:  # top tier first; a chunk's weights must stay exact
            if chunks and _weight_span([*chunks[-1], t], tier_size) <= _MAX_WEIGHT:
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
            x, ok, _ = model.solve(obj, _count_rows(n, tier_vars, best), limit, 0.0)
            if x is None:
                return _fallback(planner, comp, greedy, n)
            optimal &= ok
            counts_x = x
            for t in chunk:
                best[t] = float(round(x[tier_vars[t]].sum()))
    count_rows = _count_rows(n, tier_vars, best)
    cost = np.array(model.cost)
    # The LP relaxation bounds the cost from below, and rounding it gives a good plan
    # cheaply; the MILP only runs when no plan at hand is within the gap of that bound.
    lp, _, _ = model.solve(cost, count_rows, limit, 0.0, relax=True)
    low = float(cost @ lp) if lp is not None else None
    bound = -math.inf if low is None else low
    candidates = [
        c
        for c in (
            counts_x,
            _encode(model, classes, services, greedy),
            None
            if lp is None
            else _round_lp(planner, model, classes, services, lp, greedy, tier_vars, best),
        )
        if c is not None and model.feasible(c, count_rows)
    ]
    candidates = [_improve(planner, model, classes, c, count_rows) for c in candidates]
    x = min(candidates, key=lambda c: float(cost @ c)) if candidates else None
    ok = x is not None and _gap(float(cost @ x), bound) <= gap
    if not ok and (x is None or n <= planner.policy.max_milp_variables):
        mx, mok, mbound = model.solve(cost, count_rows, limit, gap)
        bound = max(bound, mbound)
        if mx is not None:
            mx = _improve(planner, model, classes, mx, count_rows)
            if x is None or float(cost @ mx) < float(cost @ x):
                x = mx
        ok = x is not None and (mok or _gap(float(cost @ x), bound) <= gap)
    if x is None:
        return _fallback(planner, comp, greedy, n)
    optimal &= ok
    g = _gap(float(cost @ x), bound)
    _decode(planner, x, classes, services, greedy_reason)
    for s in comp:
        if not s.chosen and not s.unplaced:
            s.unplaced = _lost(s)
    return _Result(n, optimal, g, float(cost @ x), low, bound)


def _gap(value: float, bound: float) -> float:
    """Relative distance of ``value`` above a lower ``bound`` (0 when equal)."""
    if value - bound <= 1e-9 * max(1.0, abs(value)):
        return 0.0
    return (value - bound) / bound if bound > 1e-9 else math.inf


def _improve(
    planner: _Planner,
    model: _Model,
    classes: list[_Class],
    x: np.ndarray,
    count_rows: list[tuple[np.ndarray, float]],
    passes: int = 5,
) -> np.ndarray:
    """Move gangs to cheaper options that still have room, until none can move.

    A feasible plan stays feasible in every row but budgets (a lower rank can carry a
    higher price when a commitment is preferred), so the result is checked once and the
    input kept if it fails.
    """
    original = x
    x = np.round(x)
    cost = model.cost
    free: dict[int, int | None] = {}
    for v, (oi, nodes) in model.pool.items():
        c = free.setdefault(oi, planner.cap[oi])
        if c is not None and x[v] > 0:
            free[oi] = c - nodes * int(x[v])
    moved_any = False
    for _ in range(passes):
        moved = False
        for cls in classes:
            for k in range(len(cls.vars) - 1, 0, -1):  # the priciest options first
                v = cls.vars[k]
                while x[v] >= 1:
                    target = None
                    for i in range(k):
                        w = cls.vars[i]
                        oi, nodes = model.pool[w]
                        c = free[oi]
                        if cost[w] < cost[v] and x[w] < model.ub[w] and (c is None or c >= nodes):
                            target = w
                            break
                    if target is None:
                        break
                    x[v] -= 1
                    x[target] += 1
                    for var, sign in ((v, 1), (target, -1)):
                        oi, nodes = model.pool[var]
                        c = free[oi]
                        if c is not None:
                            free[oi] = c + sign * nodes
                    moved = moved_any = True
        moved = _swap_in(model, classes, x, free) or moved
        moved_any = moved_any or moved
        if not moved:
            break
    if moved_any and not model.feasible(x, count_rows):
        return original
    return x


def _swap_in(
    model: _Model, classes: list[_Class], x: np.ndarray, free: dict[int, int | None]
) -> bool:
    """Swap a placed gang for a cheaper unplaced gang of the same tier (count kept)."""
    cost = model.cost
    waiting = [c for c in classes if sum(x[v] for v in c.vars) < len(c.slots)]
    if not waiting:
        return False
    spare = {id(c): len(c.slots) - int(sum(x[v] for v in c.vars)) for c in waiting}
    moved = False
    for cls in classes:
        tier = cls.slots[0].job.priority
        rivals = [c for c in waiting if c is not cls and c.slots[0].job.priority == tier]
        if not rivals:
            continue
        for k in range(len(cls.vars) - 1, -1, -1):
            v = cls.vars[k]
            if x[v] < 1:
                continue
            oi_v, nodes_v = model.pool[v]
            best: tuple[float, _Class, int] | None = None
            for other in rivals:
                if spare[id(other)] <= 0:
                    continue
                for w in other.vars:
                    oi, nodes = model.pool[w]
                    c = free[oi]
                    if c is not None and oi == oi_v:
                        c += nodes_v
                    if (c is None or c >= nodes) and x[w] < model.ub[w]:
                        if cost[w] < cost[v] and (best is None or cost[w] < best[0]):
                            best = (cost[w], other, w)
                        break
            if best is None:
                continue
            _, other, w = best
            x[v] -= 1
            x[w] += 1
            spare[id(other)] -= 1
            spare[id(cls)] = spare.get(id(cls), 0) + 1
            if spare[id(cls)] > 0 and cls not in waiting:
                waiting.append(cls)
            for var, sign in ((v, 1), (w, -1)):
                oi, nodes = model.pool[var]
                c = free[oi]
                if c is not None:
                    free[oi] = c + sign * nodes
            moved = True
    return moved


def _round_lp(
    planner: _Planner,
    model: _Model,
    classes: list[_Class],
    services: list[_Service],
    lp: np.ndarray,
    greedy: dict[int, list[tuple[Opt, int, float]]],
    tier_vars: dict[int, list[int]],
    best: dict[int, float],
) -> np.ndarray:
    """Round the LP solution down, then top each tier up to its count, cheapest first."""
    x = np.zeros(len(model.lb))
    cap: dict[int, int | None] = {}

    def room(oi: int, nodes: int) -> bool:
        c = cap.setdefault(oi, planner.cap[oi])
        return c is None or c >= nodes

    def use(oi: int, nodes: int) -> None:
        c = cap[oi]
        if c is not None:
            cap[oi] = c - nodes

    left: list[tuple[_Class, _Slot]] = []
    for cls in classes:
        nodes = cls.slots[0].nodes
        placed = 0
        for opt, v in zip(cls.opts, cls.vars, strict=True):
            k = math.floor(lp[v] + 1e-6)
            while k > 0 and room(opt.oi, nodes):
                x[v] += 1
                use(opt.oi, nodes)
                placed += 1
                k -= 1
        left.extend((cls, s) for s in cls.slots[placed:])
    svc_left: list[_Service] = []
    for svc in services:
        if lp[svc.placed] < 0.5 or not _place_service(
            svc, _round_replicas(svc, lp, room), x, room, use
        ):
            svc_left.append(svc)
    # Top up each tier to its count with the cheapest leftover placements.
    counts: dict[int, int] = defaultdict(int)
    for t, vs in tier_vars.items():
        counts[t] = round(float(x[vs].sum()))
    for t in sorted(best, reverse=True):
        for svc in svc_left:
            if counts[t] >= best[t]:
                break
            if svc.slot.job.priority == t:
                where = dict(zip((o.oi for o in svc.opts), svc.y, strict=True))
                walk = [(o, where[o.oi], r) for o, r, _ in greedy[svc.slot.idx] if o.oi in where]
                if walk and _place_service(svc, walk, x, room, use):
                    counts[t] += 1
        pool = [cs for cs in left if cs[1].job.priority == t]
        while counts[t] < best[t] and pool:
            pick: tuple[float, int, Opt, int] | None = None
            for i, (cls, s) in enumerate(pool):
                for opt, v in zip(cls.opts, cls.vars, strict=True):
                    if room(opt.oi, s.nodes):
                        if pick is None or model.cost[v] < pick[0]:
                            pick = (model.cost[v], i, opt, v)
                        break
            if pick is None:
                break
            _, i, opt, v = pick
            x[v] += 1
            use(opt.oi, pool[i][1].nodes)
            pool.pop(i)
            counts[t] += 1
    return x


def _round_replicas(
    svc: _Service, lp: np.ndarray, room: Callable[[int, int], bool]
) -> list[tuple[Opt, int, int]]:
    """Replica counts from the LP, rounded down and topped up on the cheapest options."""
    s = svc.slot
    counts = {i: math.floor(lp[v] + 1e-6) for i, v in enumerate(svc.y)}
    total = sum(counts.values())
    for i, opt in enumerate(svc.opts):  # cheapest first
        while total < s.replicas and room(opt.oi, s.nodes * (counts[i] + 1)):
            counts[i] += 1
            total += 1
    if total < s.replicas:
        return []
    return [(svc.opts[i], svc.y[i], k) for i, k in counts.items() if k > 0]


def _place_service(
    svc: _Service,
    pick: list[tuple[Opt, int, int]],
    x: np.ndarray,
    room: Callable[[int, int], bool],
    use: Callable[[int, int], None],
) -> bool:
    """Place a service's replicas if they fit, spread and stay under the price cap."""
    s = svc.slot
    if not pick or len({o.provider for o, _, _ in pick}) < s.spread:
        return False
    cap = s.job.max_price_per_hour
    if cap is not None and sum(o.node_price * s.nodes * r for o, _, r in pick) > cap + 1e-9:
        return False
    if not all(room(o.oi, s.nodes * r) for o, _, r in pick):
        return False
    for o, v, r in pick:
        x[v] += r
        x[svc.z[o.provider]] = 1
        use(o.oi, s.nodes * r)
    x[svc.placed] = 1
    return True


def _encode(
    model: _Model,
    classes: list[_Class],
    services: list[_Service],
    greedy: dict[int, list[tuple[Opt, int, float]]],
) -> np.ndarray | None:
    """The queue walk's placement as a model solution (None if it used a pruned option)."""
    x = np.zeros(len(model.lb))
    for cls in classes:
        where = {opt.oi: v for opt, v in zip(cls.opts, cls.vars, strict=True)}
        for s in cls.slots:
            for opt, _, _ in greedy[s.idx]:
                if opt.oi not in where:
                    return None
                x[where[opt.oi]] += 1
    for svc in services:
        choice = greedy[svc.slot.idx]
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
    comp: list[_Slot],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    n: int,
) -> _Result:
    """The optimiser found nothing in time: keep the queue walk's feasible plan."""
    for s in comp:
        if greedy[s.idx]:
            planner.take(s, greedy[s.idx])
    return _Result(n, False, math.inf, math.nan)


def _decode(
    planner: _Planner,
    x: np.ndarray,
    classes: list[_Class],
    services: list[_Service],
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
