"""The optimiser used when capacity (or a budget) is contended (docs/architecture.md).

The integer program is built by :mod:`.model` and searched by :mod:`.search` on HiGHS.
The objective is lexicographic: placed jobs per priority tier from the top (:mod:`.count`),
each tier's count then held exactly, then total cost.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from multicloud.models import Kind
from multicloud.planner.count import STEPS_FROM, count_tiers
from multicloud.planner.graph import component_labels
from multicloud.planner.model import (
    GangClass,
    Service,
    build,
    choices,
    encode,
    problem_of,
    prune_with_guaranteed_room,
    same_options,
    usable_by_slot,
)
from multicloud.planner.options import Opt
from multicloud.planner.parallel import Clock as _Clock
from multicloud.planner.parallel import in_parallel, workers
from multicloud.planner.probe import Group, probe
from multicloud.planner.problem import IntArray, dot
from multicloud.planner.search import Search, Settings
from multicloud.planner.slot import Slot
from multicloud.planner.types import PlanStats, Policy

if TYPE_CHECKING:
    from multicloud.planner.core import Planner

# Progress of a long optimisation, one INFO line per step (a group's tier counted, its cost
# stage begun, a group done), for a command line's status line or an application's logs.
log = logging.getLogger("multicloud.planner")

_STALLED = 2  # a cost search ending this many times its stop gap above the bound stalled
_WIDER = 2  # its wider pass's neighbourhoods, in neighbourhood sizes


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


def optimise(planner: Planner, slots: list[Slot]) -> PlanStats:
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
    usable = usable_by_slot(planner, free)
    _keep_walk(usable, free, greedy)
    force = planner.policy.force_optimizer
    jobs = variables = work = 0
    optimal = counts_optimal = True
    timed_out = False
    value = 0.0
    lp_bound: float | None = 0.0
    bound = 0.0
    todo: list[list[Slot]] = []
    for comp in _components(planner, free, usable):
        if not force and not any(s.contended for s in comp):
            for s in comp:
                if greedy[s.idx]:
                    planner.take(s, greedy[s.idx])
            continue
        if _unlinked(planner, comp, usable):
            # Nothing to search: each gang's first option is its cheapest, always free.
            cost = _place_unlinked(planner, comp, usable, greedy_reason)
            jobs += len(comp)
            variables += sum(len(usable[s.idx]) for s in comp)
            value += cost
            bound += cost
            lp_bound = None if lp_bound is None else lp_bound + cost
            continue
        prune_with_guaranteed_room(planner, usable, comp)
        todo.append(comp)
    settings = settings_of(planner.policy)
    clock = _Clock(settings.seconds)
    if todo:
        searched = sum(len(c) for c in todo)
        log.info("searching %s in %s", _plural(searched, "job"), _plural(len(todo), "group"))
    # A large group's steps are logged under its name (its place in component order).
    labels = {
        id(comp): f"group {k}/{len(todo)}, {len(comp):,} jobs"
        for k, comp in enumerate(todo, start=1)
        if len(comp) >= STEPS_FROM
    }
    finished = [0]
    lock = threading.Lock()

    def solve(comp: list[Slot]) -> _Result:
        # The safety ceiling is for the whole plan: each component gets what is left.
        left = replace(settings, seconds=clock.left())
        res = _solve(planner, comp, usable, greedy, greedy_reason, left, labels.get(id(comp)))
        clock.spend(res.seconds)
        if len(todo) > 1:  # one group's end is the plan's: the caller sees it
            with lock:
                finished[0] += 1
                log.info("%d of %d groups searched", finished[0], len(todo))
        return res

    # Components share no limited pool and no budget: each is searched on its own (on
    # another core where there is one), then placed in component order.
    for comp, res in zip(todo, in_parallel(solve, todo, workers(planner.policy), len), strict=True):
        res.place()
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
    planner: Planner, free: list[Slot], usable: dict[int, list[Opt]]
) -> list[list[Slot]]:
    """Split jobs into groups linked by a shared limited pool or a shared budget.

    Groups come in the order of their first job, each in queue order.
    """
    # One graph over jobs, pools and teams, its components found in C: a union-find in
    # Python over every (job, option) pair was a second of a 10,000-job batch.
    n_jobs = len(free)
    n_offers = len(planner.cap)
    teams: dict[str, int] = {}
    # each distinct option list's limited pools, listed once (``same_options``)
    pools: dict[tuple[int, ...], IntArray] = {}
    each: list[IntArray] = []
    heads: list[int] = []  # a job and its team
    tails: list[int] = []
    for k, s in enumerate(free):
        opts = usable[s.idx]
        key = same_options(opts)
        limited = pools.get(key)
        if limited is None:
            on = [n_jobs + o.oi for o in opts if planner.cap[o.oi] is not None]
            limited = pools[key] = np.array(on, dtype=np.int64)
        each.append(limited)
        if s.job.team is not None and s.job.team in planner.team_left:
            heads.append(k)
            tails.append(n_jobs + n_offers + teams.setdefault(s.job.team, len(teams)))
    sizes = np.array([len(t) for t in each], dtype=np.int64)
    jobs = np.repeat(np.arange(n_jobs, dtype=np.int64), sizes)
    labels = component_labels(
        n_jobs + n_offers + len(teams),
        np.concatenate([jobs, np.array(heads, dtype=np.int64)]),
        np.concatenate([*each, np.array(tails, dtype=np.int64)]),
    )
    groups: dict[int, list[Slot]] = {}
    for s, label in zip(free, labels[:n_jobs].tolist(), strict=True):
        groups.setdefault(label, []).append(s)
    return list(groups.values())


def _keep_walk(
    usable: dict[int, list[Opt]],
    free: list[Slot],
    greedy: dict[int, list[tuple[Opt, int, float]]],
) -> None:
    """Put back any option of the walk's plan that dominance left out.

    Keeping an option never changes the optimum; keeping these keeps each job linked to
    the pools it held, so a component that keeps the walk's plan shares no pool with
    another. (The guaranteed-room pruning after it may still drop one: the walk's plan
    then is no first incumbent, which costs search time, not the optimum.)
    """
    for s in free:
        opts = usable[s.idx]
        have = {o.oi for o in opts}
        missing = [o for o, _, _ in greedy[s.idx] if o.oi not in have]
        if missing:
            usable[s.idx] = sorted([*opts, *missing], key=lambda o: (o.rank, o.node_price))


def _unlinked(planner: Planner, comp: list[Slot], usable: dict[int, list[Opt]]) -> bool:
    """True if no job of the component can affect another's placement or the count.

    Gangs with no team budget whose options are all unlimited: each holds its own
    cheapest option whatever the others do, so that is the optimum (the count is all
    of them, the cost each one's least).
    """
    return all(
        s.job.kind is Kind.TRAINING
        and s.job.team not in planner.team_left
        and all(planner.cap[o.oi] is None for o in usable[s.idx])
        for s in comp
    )


def _place_unlinked(
    planner: Planner,
    comp: list[Slot],
    usable: dict[int, list[Opt]],
    greedy_reason: dict[int, str | None],
) -> float:
    """Place each gang of an unlinked component (:func:`_unlinked`) on its cheapest option.

    What the integer program would choose, with the same reasons; no solver involved.

    Returns:
        The plan's objective (ranked cost) for these gangs.
    """
    cost = 0.0
    for s in comp:
        opts = usable[s.idx]
        if not opts:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
            continue
        best = min(opts, key=lambda o: o.rank)
        _place(planner, s, [(best, 1, best.node_price)])
        cost += best.rank * s.nodes * s.job.duration_hours
    return cost


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
    place: Callable[[], None] = lambda: None  # puts the plan on the planner's slots


def _solve(
    planner: Planner,
    comp: list[Slot],
    usable: dict[int, list[Opt]],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    greedy_reason: dict[int, str | None],
    settings: Settings,
    label: str | None = None,
) -> _Result:
    """Place one component: tier counts from the top tier down, then cost.

    ``label`` names it in the progress log (None: its steps are not logged).
    """
    model, classes, services, tier_vars = build(planner, comp, usable)
    n = len(model.lb)
    if n == 0:

        def unplaced() -> None:
            for s in comp:
                s.unplaced = greedy_reason[s.idx] or _lost(s)

        # Nothing to choose: no plan can do better, and the bounds say so (left at their
        # defaults the batch reported optimal with an infinite gap and no LP gap).
        return _Result(0, True, 0.0, lp_bound=0.0, bound=0.0, place=unplaced)
    prob = problem_of(model, classes, services)
    # The walk's plan (with nothing placed as the last resort: always feasible before
    # counts are held) is the first incumbent.
    walk = encode(model, classes, services, greedy)
    x = walk if walk is not None and prob.feasible(walk) else np.zeros(n)
    tiers = sorted(tier_vars, reverse=True)
    earlier = _previous(planner, comp, usable)
    if earlier:
        # An earlier plan, where it still fits, may place more (tier by tier) or as
        # many for less: then the search starts from it.
        hint = encode(model, classes, services, earlier)
        if hint is not None and prob.feasible(hint):

            def rank(y: np.ndarray) -> tuple[float, ...]:
                counts = (round(float(y[tier_vars[t]].sum())) for t in tiers)
                return (*counts, -dot(np.array(model.cost), y))

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
        counted = count_tiers(planner, comp, usable, greedy, settings, label)
        work, seconds, timed_out = counted.work, counted.seconds, counted.timed_out
        optimal = counts_optimal = counted.proven
        placed = counted.best
        start = encode(model, classes, services, counted.choices)
        if start is not None and prob.feasible(start):
            x = start
        # otherwise the walk's plan, counts below the best: the rows below are met by
        # the cost stage's own repair (the LP is feasible, and so is the count plan).
    if label is not None:
        log.info("%s: lowering the cost", label)
    # The cost LP unpresolved: faster on the demo file (0.65 -> 0.42 s), and a vertex the
    # search did as well or better from (10,000-job trace seed 3: 1.18 against 1.39 % above
    # the bound; 1,000-job batches' worst 0.30 against 0.64 % above the optimum).
    settings = replace(settings, seconds=max(settings.seconds - seconds, 0.01), lp_presolve=False)
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
    if prob.feasible(x):
        groups = [Group(np.array(c.vars), np.array(c.vars)) for c in classes] + [
            Group(np.array([v.placed]), np.array(v.y)) for v in services
        ]
        lp, low = probe(search, cost, groups, lp, low, x, dot(cost, x))
    bound = low
    limit = _stop(low, settings.gap, 0.0)
    # The stop gap is for the neighbourhood rounds of large models: a model solved whole
    # is solved to ``mip_rel_gap`` (in milliseconds; with the stop, a 6-variable model
    # kept a plan at 232 for an optimum of 231, and no 1,000-job batch was reported optimal).
    whole = n <= settings.exact_below
    stop = limit if whole else _stop(low, settings.gap, planner.policy.cost_stop_gap)
    x = search.improve(cost, lp, x, stop, feasible=prob.feasible(x))
    bound = max(bound, search.bound)
    stalled = math.isfinite(low) and dot(cost, x) > low + _STALLED * (stop - low)
    if stalled and not whole and not search.timed_out and prob.feasible(x):
        # The rounds stalled far above their stop: neighbourhoods of the size that stalled
        # find nothing more, wider ones do (10,000-job trace seed 3: a group of 2,083 jobs
        # ended 10.8 % above its bound; one wider pass, 1.5 CPU s, ends it 0.01 % above).
        # Its repair runs again too: clusters up to twice as large are repaired whole (on
        # that batch, without it, the wider pass alone left the batch 0.76 % above).
        with search.widened(_WIDER):
            x = search.improve(cost, lp, x, stop)
        bound = max(bound, search.bound)
        if dot(cost, x) > low + _STALLED * (stop - low) and not search.timed_out:
            # Still stalled: the moves left trade jobs within a tier across pools and a
            # budget, which no ring of pools holds (``Search.substitute``).
            x = search.substitute(cost, lp, x, stop)
    if not prob.feasible(x):  # no plan at hand met the counts: search the whole model
        found = search.prove(cost, None, nodes=settings.nodes).x
        if found is None:
            # placed by its ``place``; the searches' work and clock still count
            spent = (work + search.work, seconds + search.seconds, timed_out or search.timed_out)
            return _fallback(planner, comp, greedy, n, *spent)
        x = found
    value = dot(cost, x)
    if value > limit and settings.prove:
        out = search.prove(cost, x)
        if out.x is not None and dot(cost, out.x) < value:
            x = out.x
            value = dot(cost, x)
        bound = max(bound, out.bound)
    # HiGHS measures its gap against the plan's value, ``_gap`` against the bound (a
    # factor 1 + gap apart): a sub-problem HiGHS stopped within the gap is within it here.
    optimal &= _gap(value, bound) <= settings.gap * (1 + settings.gap) + 1e-12
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
        lambda: _decode(planner, x, classes, services, greedy_reason),
    )


def _previous(
    planner: Planner, comp: list[Slot], usable: dict[int, list[Opt]]
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


def _plural(k: int, noun: str) -> str:
    return f"1 {noun}" if k == 1 else f"{k:,} {noun}s"


def _stop(low: float, gap: float, stop_gap: float) -> float:
    """The cost at which the cost search's neighbourhoods stop: ``stop_gap`` above ``low``.

    The search rounds, not the repair, are most of a large component's cost stage, and
    past 1 % above the bound each buys little: on the 10,000-job trace batch seed 7 its
    largest component went from 2.2 to 0.87 % above the bound in its first 2.3 s of rounds,
    then to 0.34 % in 5 s more. Stopping at 1 % takes that batch from 36.3 to 30.8 CPU s
    (0.25 -> 0.71 % above the bound; the other five batches within 0.11 points of
    before) and the 1,000-job batches' worst gap to their proven optima from 0.10 to
    0.21 %. ``gap`` (``mip_rel_gap``) is the floor: the stop is never tighter than what
    counts as optimal.

    Args:
        low: The cost LP's bound (minus infinity if there is none).
        gap: ``Policy.mip_rel_gap``.
        stop_gap: ``Policy.cost_stop_gap``.

    Returns:
        The cost at or below which a plan is good enough.
    """
    if not math.isfinite(low):
        return -math.inf
    return low + max(gap, stop_gap) * abs(low)


def _gap(value: float, bound: float) -> float:
    """Relative distance of ``value`` above a lower ``bound`` (0 when equal)."""
    if value - bound <= 1e-9 * max(1.0, abs(value)):
        return 0.0
    return (value - bound) / bound if bound > 1e-9 else math.inf


def _fallback(
    planner: Planner,
    comp: list[Slot],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    n: int,
    work: int,
    seconds: float,
    timed_out: bool,
) -> _Result:
    """The optimiser found nothing in time: keep the queue walk's feasible plan.

    Its value is unknown in the model's terms (infinite, as its gap) and so is an LP bound
    for it (None); the work, solver seconds and timeout of the searches that failed are
    reported as any other's.
    """

    def place() -> None:
        for s in comp:
            if greedy[s.idx]:
                planner.take(s, greedy[s.idx])

    return _Result(
        n,
        optimal=False,
        value=math.inf,
        lp_bound=None,
        bound=-math.inf,
        work=work,
        seconds=seconds,
        timed_out=timed_out,
        counts_optimal=False,
        place=place,
    )


def _decode(
    planner: Planner,
    x: np.ndarray,
    classes: list[GangClass],
    services: list[Service],
    greedy_reason: dict[int, str | None],
) -> None:
    chosen = choices(x, classes, services)
    slots = [s for cls in classes for s in cls.slots] + [svc.slot for svc in services]
    for s in slots:
        choice = chosen.get(s.idx)
        if choice is None:
            s.unplaced = greedy_reason[s.idx] or _lost(s)
            continue
        _place(planner, s, choice)


def _place(planner: Planner, s: Slot, choice: list[tuple[Opt, int, float]]) -> None:
    """Take the optimiser's choice for ``s``, with the reason it says so."""
    note = "placed by the optimiser (capacity or budget contended)"
    planner.take(s, choice)
    s.reasons = [*s.reasons, note] if s.reasons else [note]
    s.unplaced = None


def _lost(s: Slot) -> str:
    if s.job.team is not None:
        return (
            "capacity or team budget is needed by higher-priority or earlier jobs "
            "(optimiser: placing it would displace them)"
        )
    return (
        "capacity is needed by higher-priority or earlier jobs "
        "(optimiser: placing it would displace them)"
    )
