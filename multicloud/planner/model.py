"""The optimiser's integer program, built from the slots (docs/architecture.md, the planner).

* Training jobs of identical shape, duration, priority, team and ROFR standing are
  interchangeable, so they form one class with one integer variable per option ("how many
  of this class run here"). This keeps the model small when many jobs look alike.
* Each inference job has an integer replica count per option, a binary per provider (for
  ``spread``) and a binary "placed".
* Constraints: each offer's capacity in nodes (with its gang-size roundings, which keep
  the LP from packing fractions of gangs), each team's budget, and for inference the
  replica count, the spread and the total price cap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import coo_array

from multicloud.models import Kind
from multicloud.planner.options import Opt
from multicloud.planner.problem import FloatArray, IntArray, Problem
from multicloud.planner.slot import Slot

if TYPE_CHECKING:
    from multicloud.planner.core import Planner


@dataclass
class Model:
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)
    # per variable: the offer of the option it stands for (-1: none, a service's flags)
    # and the nodes each of its gangs or replicas uses there
    offer: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    cap_row: dict[int, int] = field(default_factory=dict)  # offer -> its capacity row

    def var(self, lb: float, ub: float, cost: float, offer: int = -1, nodes: int = 0) -> int:
        """A whole variable; ``offer`` and ``nodes``: the option it stands for, if any."""
        self.lb.append(lb)
        self.ub.append(ub)
        self.cost.append(cost)
        self.integral.append(1)
        self.offer.append(offer)
        self.nodes.append(nodes)
        return len(self.lb) - 1

    def vars(self, ub: list[int], cost: list[float], offers: list[int], nodes: int) -> list[int]:
        """Whole variables from 0 up to each ``ub``, one per option, appended together.

        A class of gangs has one per option, and those are most of a model's variables
        (394,000 in a 10,000-job batch's models): a call per variable was a fifth of
        building them. A service has one per option too (its replicas there).

        Args:
            ub: Each variable's upper bound.
            cost: Each variable's cost.
            offers: The offer of each variable's option.
            nodes: The nodes each gang or replica uses.

        Returns:
            The variables' indices.
        """
        at = len(self.lb)
        self.lb.extend([0] * len(ub))
        self.ub.extend(ub)
        self.cost.extend(cost)
        self.integral.extend([1] * len(ub))
        self.offer.extend(offers)
        self.nodes.extend([nodes] * len(ub))
        return list(range(at, at + len(ub)))

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        self.row_of([c for c, _ in terms], [v for _, v in terms], lo, hi)

    def row_of(self, cols: list[int], vals: list[float] | list[int], lo: float, hi: float) -> None:
        """A row with the terms ``vals[i] * x[cols[i]]``, between ``lo`` and ``hi``."""
        self.rows.extend([len(self.row_lb)] * len(cols))
        self.cols.extend(cols)
        self.vals.extend(vals)
        self.row_lb.append(lo)
        self.row_ub.append(hi)


@dataclass
class GangClass:
    slots: list[Slot]
    opts: list[Opt]
    vars: list[int]


@dataclass
class Service:
    slot: Slot
    opts: list[Opt]
    y: list[int]
    placed: int
    z: dict[str, int]


def usable_options(planner: Planner, s: Slot) -> list[Opt]:
    """Options worth modelling: fit now, allowed by ROFR standing, not dominated.

    Dominated, exactly: a pricier market on a pool already listed (same capacity, same
    count, higher cost), and anything after an unlimited option that a gang (any
    unlimited option) or a service (one of the same provider, for the spread) could use
    instead at no higher rank and, where a price counts (a team budget, a service's price
    cap), no higher node price. Options come in rank order, so an earlier one never ranks
    higher; an unlimited pool holds any number of gangs or replicas.

    Args:
        planner: The planner (capacity left, budgets).
        s: The slot.

    Returns:
        The slot's options in rank order.
    """
    out: list[Opt] = []
    seen: set[int] = set()
    ceiling = s.ceiling
    gang = s.job.kind is Kind.TRAINING
    # Where no price but the ranked cost counts, the first unlimited option of the scope
    # (the gang, a service's provider) dominates all after it.
    priced = s.job.team in planner.team_left or (not gang and s.job.max_price_per_hour is not None)
    # scope -> the lowest node price among its unlimited options kept so far
    free: dict[str, float] = {}
    for opt in s.options.opts:
        if (s.restricted and opt.holder) or opt.oi in seen:
            continue
        if ceiling is not None and opt.node_price * s.nodes >= ceiling - 1e-9:
            continue
        c = planner.cap[opt.oi]
        if c is not None and c < s.nodes:
            continue
        scope = "" if gang else opt.provider
        least = free.get(scope)
        if least is not None and (not priced or opt.node_price >= least):
            continue
        seen.add(opt.oi)
        out.append(opt)
        if c is None:
            free[scope] = opt.node_price if least is None else min(least, opt.node_price)
            if gang and not priced:
                break
    return out


def usable_by_slot(planner: Planner, slots: list[Slot]) -> dict[int, list[Opt]]:
    """:func:`usable_options` of every slot, computed once per distinct input.

    Jobs of one shape share their options object, and most share their size and standing
    too: the result is a function of exactly these (and the capacity left, the same for
    all slots in one call). Each slot gets its own list, as later steps cut it in place.

    Args:
        planner: The planner (capacity left, budgets).
        slots: The slots.

    Returns:
        Each slot's options in rank order, by slot index.
    """
    budgeted = planner.team_left
    seen: dict[tuple[object, ...], list[Opt]] = {}
    out: dict[int, list[Opt]] = {}
    for s in slots:
        job = s.job
        gang = job.kind is Kind.TRAINING
        priced = job.team in budgeted or (not gang and job.max_price_per_hour is not None)
        key = (id(s.options), s.restricted, s.ceiling, s.nodes, gang, priced)
        hit = seen.get(key)
        if hit is None:
            hit = seen[key] = usable_options(planner, s)
        out[s.idx] = hit.copy()
    return out


def same_options(opts: list[Opt]) -> tuple[int, ...]:
    """A key equal for option lists holding the same options in the same order.

    Jobs of one shape hold equal option lists (:func:`usable_by_slot`): a 10,000-job batch
    has 737,000 job options in a few hundred distinct lists, so work per list is done
    once per key. By identity: the options are shared objects, alive while the lists are.
    """
    return tuple(map(id, opts))


def prune_with_guaranteed_room(
    planner: Planner, usable: dict[int, list[Opt]], slots: list[Slot]
) -> None:
    """Cut each gang's options after the cheapest set that always has room for it.

    If the cheapest options S of job j hold more j-sized gangs than every other job could
    ever occupy there (a job of n nodes blocks at most n/n_j + 1 of j's gangs in a pool),
    then any plan with j elsewhere can move j into S at no higher cost and no lower count.
    So some optimal plan uses S, and the options after S can be dropped exactly. For a
    job with a team budget the move must not cost the budget more either: the options
    after S are dropped only if none has a lower node price than S's dearest.

    Each slot's list must be its own object (as :func:`usable_by_slot` makes them): lists
    are cut in place, and a cut worked out for one list is applied to the equal lists of
    other slots, which a shared, already cut list would not be.
    """
    # The loads are summed per distinct list (``same_options``), and each list's cut is
    # worked out once per gang size and standing: slot by slot this was a second of a
    # 10,000-job plan, before any search. The loads are sums of whole numbers, exact in
    # any order.
    lists: dict[tuple[int, ...], tuple[list[Opt], list[int]]] = {}  # a list, its nodes, jobs
    key_of: dict[int, tuple[int, ...]] = {}
    owned: set[int] = set()
    for s in slots:
        opts = usable.get(s.idx)
        if not opts:
            continue
        assert id(opts) not in owned, "two slots share one option list"
        owned.add(id(opts))
        key = key_of[s.idx] = same_options(opts)
        w = lists.setdefault(key, (opts, [0, 0]))[1]
        w[0] += s.nodes * s.replicas
        w[1] += s.replicas
    load_nodes: dict[int, float] = defaultdict(float)
    load_jobs: dict[int, float] = defaultdict(float)
    for opts, (nodes, jobs) in lists.values():
        for opt in opts:
            load_nodes[opt.oi] += nodes
            load_jobs[opt.oi] += jobs
    cuts: dict[tuple[object, ...], int | None] = {}
    for s in slots:
        opts = usable.get(s.idx)
        if not opts or s.job.kind is not Kind.TRAINING:
            continue
        budgeted = s.job.team in planner.team_left
        at = (key_of[s.idx], s.nodes, budgeted)
        if at not in cuts:
            cuts[at] = _guaranteed(planner, opts, s.nodes, budgeted, load_nodes, load_jobs)
        cut = cuts[at]
        if cut is not None:
            del opts[cut:]


def _guaranteed(
    planner: Planner,
    opts: list[Opt],
    nodes: int,
    budgeted: bool,
    load_nodes: dict[int, float],
    load_jobs: dict[int, float],
) -> int | None:
    """Where a gang's options may be cut (:func:`prune_with_guaranteed_room`); None: nowhere."""
    room = 0
    blocked = 0.0
    for i, opt in enumerate(opts):
        c = planner.cap[opt.oi]
        if c is None:
            return None
        room += c // nodes
        blocked += (load_nodes[opt.oi] - nodes) / nodes + (load_jobs[opt.oi] - 1)
        if room > blocked:
            if budgeted and min((o.node_price for o in opts[i + 1 :]), default=math.inf) < max(
                o.node_price for o in opts[: i + 1]
            ):
                return None
            return i + 1
    return None


def build(
    planner: Planner,
    slots: list[Slot],
    usable: dict[int, list[Opt]],
    *,
    by_shape: bool = False,
) -> tuple[Model, list[GangClass], list[Service], dict[int, list[int]]]:
    """Build the model for the given (non-pinned) slots against the capacity left.

    Args:
        planner: The planner after its walk (capacity released for these slots).
        slots: The slots to model.
        usable: Each slot's options.
        by_shape: For counting only: gangs that differ only in duration (and whose team
            has no budget) are one class, since a count does not see durations. A
            class's costs then use its members' mean duration.
    """
    model = Model()
    classes: dict[tuple[object, ...], GangClass] = {}
    services: list[Service] = []
    tier_vars: dict[int, list[int]] = defaultdict(list)
    team_terms: dict[str, list[tuple[int, float]]] = defaultdict(list)
    budgeted = planner.team_left

    grouped: dict[tuple[object, ...], list[Slot]] = {}
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
        hours = first.job.duration_hours
        # A count model's class merges run times, so its unit costs the members' mean
        # hours: only a tie-break between equal counts, but one that sees durations, so
        # the count stage hands the cost stage a plan of cheap jobs (a per-hour price
        # here left the 10,000-job batches' cost stage 5-40 % above its bound).
        # (Budgets still need the real cost: budgeted classes keep their duration.)
        rank_hours = (
            sum(m.job.duration_hours for m in members) / len(members) if by_shape else hours
        )
        if key[0] != "svc":
            size = len(members)
            nodes = first.nodes
            caps = [planner.cap[opt.oi] for opt in opts]
            made = model.vars(
                [size if c is None else min(size, c // nodes) for c in caps],
                [opt.rank * nodes * rank_hours for opt in opts],
                [opt.oi for opt in opts],
                nodes,
            )
            cls = GangClass(members, opts, made)
            tier_vars[first.job.priority].extend(cls.vars)
            if team is not None:
                team_terms[team].extend(
                    (v, opt.node_price * nodes * hours) for v, opt in zip(made, opts, strict=True)
                )
            model.row([(v, 1.0) for v in cls.vars], 0, size)
            classes[key] = cls
            continue
        s = first
        r = s.replicas
        placed = model.var(0, 1, 0)
        tier_vars[s.job.priority].append(placed)
        caps = [planner.cap[opt.oi] for opt in opts]
        ys = model.vars(
            [r if c is None else min(r, c // s.nodes) for c in caps],
            [opt.rank * s.nodes * rank_hours for opt in opts],
            [opt.oi for opt in opts],
            s.nodes,
        )
        by_provider: dict[str, list[int]] = defaultdict(list)
        for v, opt in zip(ys, opts, strict=True):
            by_provider[opt.provider].append(v)
        price_terms = [(v, opt.node_price * s.nodes) for v, opt in zip(ys, opts, strict=True)]
        if team is not None:
            team_terms[team].extend(
                (v, opt.node_price * s.nodes * hours) for v, opt in zip(ys, opts, strict=True)
            )
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
        services.append(Service(s, opts, ys, placed, zmap))

    _capacity_rows(planner, model)
    for team, terms in team_terms.items():
        model.row(terms, -np.inf, max(budgeted[team], 0.0))
    return model, list(classes.values()), services, tier_vars


def _capacity_rows(planner: Planner, model: Model) -> None:
    """Each limited pool's row, and its gang cuts, in the order the variables first use them.

    Worked out over arrays, pool by pool: per variable in Python, this was a third of
    building a 10,000-job batch's models. A pool's terms are its variables in index order.
    """
    limited = np.array([c is not None for c in planner.cap], dtype=np.bool_)
    offer = np.array(model.offer, dtype=np.int64)
    nodes = np.array(model.nodes, dtype=np.int64)
    ub = np.array(model.ub, dtype=np.float64)  # whole numbers: the sums below are exact
    on = np.nonzero((offer >= 0) & limited[np.maximum(offer, 0)])[0]
    by_pool = on[np.argsort(offer[on], kind="stable")]  # each pool's variables in order
    pools, start = np.unique(offer[by_pool], return_index=True)
    end = np.append(start[1:], len(by_pool))
    for j in np.argsort(by_pool[start]).tolist():  # by each pool's first variable
        oi = int(pools[j])
        c = planner.cap[oi]
        assert c is not None
        vs = by_pool[start[j] : end[j]]
        use = nodes[vs]
        # Only rows that can bind: a variable may stand for several gangs or replicas,
        # so its largest use of the pool is nodes × its upper bound.
        if float(use @ ub[vs]) > c:
            model.cap_row[oi] = len(model.row_lb)
            model.row_of(vs.tolist(), use.tolist(), 0, c)
            _gang_cuts(model, vs, use, ub[vs], c)


def _gang_cuts(model: Model, vs: IntArray, use: IntArray, ub: FloatArray, cap: int) -> None:
    """Add the rounded capacity rows that make gang packing tight in the LP.

    Dividing a pool's row by a gang size d and rounding down both sides is valid for whole
    gangs (Chvátal-Gomory): ``Σ ⌊nodes/d⌋·x ≤ ⌊cap/d⌋``. Without it the LP packs half a
    16-node gang into 8 spare nodes, and its bound, and every rounding of it, drift.

    Args:
        model: The model the rows are added to.
        vs: The pool's variables.
        use: The nodes each of their gangs or replicas uses.
        ub: Their upper bounds.
        cap: The pool's nodes.
    """
    for d in np.unique(use[use > 1]).tolist():
        big = use >= d
        if cap % d == 0 and not (use[big] % d).any():
            continue  # the same row divided by d: nothing to cut
        k = use[big] // d
        if float(k @ ub[big]) > cap // d:
            model.row_of(vs[big].tolist(), k.astype(np.float64).tolist(), -np.inf, cap // d)


def problem_of(model: Model, classes: list[GangClass], services: list[Service]) -> Problem:
    """The model as arrays, with each variable's owner, pool and option rank."""
    n = len(model.lb)
    # Each owner's option variables at once, over arrays (per variable in Python this was
    # most of this function on a 10,000-job model): the owners in order, each one's
    # variables in its options' rank order.
    lists = [cls.vars for cls in classes] + [svc.y for svc in services]
    sizes = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    at = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(sizes.sum()))
    firsts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    owner = np.full(n, -1, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    owner[at] = np.repeat(np.arange(len(lists), dtype=np.int64), sizes)
    rank[at] = np.arange(len(at), dtype=np.int64) - firsts
    # a service's "placed" and spread flags are its own too
    flags = [
        (k, v)
        for k, svc in enumerate(services, start=len(classes))
        for v in (svc.placed, *svc.z.values())
    ]
    if flags:
        held = np.array(flags, dtype=np.int64)
        owner[held[:, 1]] = held[:, 0]
    offer = np.array(model.offer, dtype=np.int64)
    option = offer >= 0  # every option of a class or a service, and only those
    row_of = np.full(int(offer.max(initial=-1)) + 1, -1, dtype=np.int64)
    for oi, row in model.cap_row.items():
        row_of[oi] = row
    # a pool that can never fill (no row) links nobody
    pool = np.where(option, row_of[np.maximum(offer, 0)], -1)
    use = np.where(pool >= 0, np.array(model.nodes, dtype=np.float64), 0.0)
    a = coo_array((model.vals, (model.rows, model.cols)), shape=(len(model.row_lb), n)).tocsc()
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
        option=option,
    )


def encode(
    model: Model,
    classes: list[GangClass],
    services: list[Service],
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


def choices(
    x: np.ndarray, classes: list[GangClass], services: list[Service]
) -> dict[int, list[tuple[Opt, int, float]]]:
    """Per-slot placements of a model solution.

    Within a class the members differ at most in duration, so the cost is least when the
    shortest members are the ones placed and, among those, the longest get the cheapest
    options (an exchange argument: swapping two members never lowers the cost otherwise).
    Equal durations keep queue order: earlier jobs get the cheaper options.
    """
    out: dict[int, list[tuple[Opt, int, float]]] = {}
    # Whole numbers once, as Python ints: rounding numpy scalars one by one was a tenth
    # of a heavy batch's planning time.
    whole: list[int] = np.rint(x).astype(np.int64).tolist()
    for cls in classes:
        counts = [whole[v] for v in cls.vars]
        placed = sum(counts)
        members = sorted(range(len(cls.slots)), key=lambda i: (cls.slots[i].job.duration_hours, i))
        chosen = sorted(members[:placed], key=lambda i: (-cls.slots[i].job.duration_hours, i))
        queue = iter(chosen)
        for opt, k in zip(cls.opts, counts, strict=True):
            for _ in range(k):
                out[cls.slots[next(queue)].idx] = [(opt, 1, opt.node_price)]
    for svc in services:
        if whole[svc.placed] < 1:
            continue
        out[svc.slot.idx] = [
            (opt, whole[v], opt.node_price)
            for opt, v in zip(svc.opts, svc.y, strict=True)
            if whole[v] > 0
        ]
    return out
