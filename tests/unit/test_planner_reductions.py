"""The optimiser's exact reductions give the plan of the unreduced model (issue 11).

The reductions: dominated options left out (``model.usable_options``), options cut after a
set with guaranteed room (``model.prune_with_guaranteed_room``): the reduced models'
lexicographic optimum (placed per tier, then cost), solved whole, must equal the full
models' (every option that fits, nothing pruned). Components where no job can affect
another (``milp._unlinked``) are placed without a solver: the plan must be the solver's.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from multicloud.models import Budget, Contracts, Job, Kind
from multicloud.planner import Plan, Policy, Snapshot, plan
from multicloud.planner import milp as optimiser
from multicloud.planner.model import build, problem_of, usable_by_slot, usable_options
from multicloud.planner.options import Opt, Options
from multicloud.planner.slot import Slot
from multicloud.provider import MarketKind, Offer
from multicloud.testing.builders import commitment, job, offer

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)

# aws is behind its commitment: its rank is 5 % under its price, so rank order and price
# order (what a budget or a price cap counts) differ between aws and the others.
BEHIND = commitment("aws")


@dataclass
class Case:
    name: str
    jobs: list[Job]
    offers: list[Offer]
    want: dict[str, str] = field(default_factory=dict)  # job -> provider, "-" unplaced
    contracts: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)


def snapshot(case: Case) -> Snapshot:
    return Snapshot(
        jobs=case.jobs,
        offers=case.offers,
        contracts=Contracts.model_validate(case.contracts),
        budgets={k: Budget(max_cost_usd=v) for k, v in case.budgets.items()},
        now=NOW,
    )


def every_option(planner: Any, s: Slot) -> list[Opt]:
    """The full model: every option that fits and the job's ROFR standing allows."""
    out = []
    for opt in s.options.opts:
        c = planner.cap[opt.oi]
        if s.restricted and opt.holder:
            continue
        if s.ceiling is not None and opt.node_price * s.nodes >= s.ceiling - 1e-9:
            continue
        if c is None or c >= s.nodes:
            out.append(opt)
    return out


def component_optima(
    snap: Snapshot, monkeypatch: pytest.MonkeyPatch, *, full: bool
) -> tuple[Counter[int], float]:
    """Each component's lexicographic optimum, solved whole and proven, summed.

    Components are independent, so the sums are the optimum of the whole batch. The
    models are solved from scratch (no start, no neighbourhoods): what is compared is
    the models, not a search of them.
    """
    counts: Counter[int] = Counter()
    cost = 0.0

    def solve(planner: Any, comp: list[Slot], usable: dict[int, list[Opt]], *args: Any) -> Any:
        nonlocal cost
        got, value = lexicographic_optimum(planner, comp, usable)
        counts.update(got)
        cost += value
        return solve_as_usual(planner, comp, usable, *args)

    solve_as_usual = optimiser._solve
    with monkeypatch.context() as m:
        m.setattr(optimiser, "_solve", solve)
        m.setattr(optimiser, "_unlinked", lambda *args: False)
        if full:
            m.setattr(
                optimiser,
                "usable_by_slot",
                lambda planner, slots: {s.idx: every_option(planner, s) for s in slots},
            )
            m.setattr(optimiser, "prune_with_guaranteed_room", lambda *args: None)
        plan(snap, Policy(force_optimizer=True))
    return counts, cost


def lexicographic_optimum(
    planner: Any, comp: list[Slot], usable: dict[int, list[Opt]]
) -> tuple[dict[int, int], float]:
    """The most placed per tier from the top, each then held, then the least cost."""
    model, classes, services, tier_vars = build(planner, comp, usable)
    n = len(model.lb)
    if n == 0:
        return {}, 0.0
    prob = problem_of(model, classes, services)
    rows = [LinearConstraint(prob.a, prob.row_lb, prob.row_ub)]
    bounds = Bounds(np.zeros(n), prob.ub)
    counts: dict[int, int] = {}
    for t in sorted(tier_vars, reverse=True):
        tier = np.zeros(n)
        tier[tier_vars[t]] = 1.0
        res = milp(-tier, constraints=rows, integrality=prob.integral, bounds=bounds)
        assert res.success
        counts[t] = round(-res.fun)
        rows.append(LinearConstraint(tier, counts[t], np.inf))
    res = milp(np.array(model.cost), constraints=rows, integrality=prob.integral, bounds=bounds)
    assert res.success
    return counts, float(res.fun)


def outcome(p: Plan, jobs: list[Job]) -> tuple[tuple[int, ...], float]:
    placed = {a.job for a in p.placements}
    tiers = sorted({j.priority for j in jobs}, reverse=True)
    counts = tuple(sum(1 for j in jobs if j.priority == t and j.name in placed) for t in tiers)
    return counts, p.total_cost


def where(p: Plan, name: str) -> str:
    got = p.for_job(name)
    return "+".join(sorted({a.offer.provider for a in got})) if got else "-"


CASES = [
    Case(
        # The first unlimited option (aws, cheapest by rank) is not the cheapest for the
        # budget: only gcp's lower price fits both jobs in it.
        "budget gang keeps a later offer with a lower price",
        [job("a", team="r"), job("b", team="r")],
        [offer("aws", price=10.3), offer("gcp", price=10)],
        {"a": "gcp", "b": "gcp"},
        contracts=BEHIND,
        budgets={"r": 20},
    ),
    Case(
        # aws has room for both (guaranteed room), yet cutting gcp would cost the budget.
        "guaranteed room does not cut a lower price for a budget",
        [job("a", team="r"), job("b", team="r")],
        [offer("aws", price=10.3, capacity=10), offer("gcp", price=10)],
        {"a": "gcp", "b": "gcp"},
        contracts=BEHIND,
        budgets={"r": 20},
    ),
    Case(
        "budget gang without a cheaper later offer",
        [job("a", team="r"), job("b", team="r", priority=1)],
        [offer("aws", price=9), offer("gcp", price=10)],
        {"a": "-", "b": "aws"},
        contracts=BEHIND,
        budgets={"r": 15},
    ),
    Case(
        # Per provider, one unlimited offer holds any number of replicas: the dearer
        # offers of that provider behind it are never needed, other providers' are.
        "service keeps each provider's first unlimited offer",
        [
            job("big", nodes=2, priority=5),
            job("svc", kind="inference", serving={"replicas": 3, "spread": 2}),
        ],
        [
            offer("aws", price=1, capacity=2, instance_type="a1"),
            offer("aws", price=2, instance_type="a2"),
            offer("aws", price=3, instance_type="a3"),
            offer("gcp", price=4, instance_type="g1"),
            offer("gcp", price=5, instance_type="g2"),
        ],
        {"big": "aws", "svc": "aws+gcp"},
    ),
    Case(
        "service under a price cap and a budget",
        [
            job("big", nodes=2, priority=5, team="r"),
            job(
                "svc",
                kind="inference",
                team="r",
                max_price_per_hour=30,
                serving={"replicas": 3, "spread": 2},
            ),
        ],
        [
            offer("aws", price=1, capacity=2, instance_type="a1"),
            offer("aws", price=6, instance_type="a2"),
            offer("gcp", price=7, instance_type="g1"),
            offer("gcp", price=8, instance_type="g2"),
            offer("azure", price=6.5, instance_type="z1"),
        ],
        contracts=BEHIND,
        budgets={"r": 40},
    ),
    Case(
        # Each job's only option left is unlimited: placed without a solver.
        "unlinked gangs after contention",
        [job("a", priority=5), job("b"), job("c", nodes=2, team="t")],
        [offer("aws", price=1, capacity=1), offer("gcp", price=3), offer("azure", price=4)],
        {"a": "aws", "b": "gcp", "c": "gcp"},
    ),
]


def random_case(seed: int) -> Case:
    """A small contended snapshot: pools, teams with budgets, services, a commitment."""
    rng = random.Random(seed)
    offers = [
        offer(
            rng.choice(["aws", "gcp", "azure"]),
            instance_type=f"t{i}",
            price=float(rng.randint(5, 15)),
            capacity=rng.choice([None, None, 0, 1, 2, 4]),
        )
        for i in range(rng.randint(2, 5))
    ]
    jobs = []
    for i in range(rng.randint(2, 6)):
        fields: dict[str, Any] = {
            "priority": rng.choice([0, 1, 2]),
            "duration_hours": float(rng.randint(1, 4)),
            "team": rng.choice([None, "r", "s"]),
        }
        if rng.random() < 0.3:
            replicas = rng.randint(1, 3)
            fields |= {
                "kind": "inference",
                "serving": {"replicas": replicas, "spread": rng.randint(1, min(2, replicas))},
            }
            if rng.random() < 0.5:
                fields["max_price_per_hour"] = float(rng.randint(15, 45))
        else:
            fields["nodes"] = rng.randint(1, 3)
        jobs.append(job(f"j{i}", **{k: v for k, v in fields.items() if v is not None}))
    return Case(
        f"random {seed}",
        jobs,
        offers,
        contracts=BEHIND if rng.random() < 0.7 else {},
        budgets={"r": float(rng.randint(10, 120))},
    )


@pytest.mark.parametrize(
    "case", CASES + [random_case(seed) for seed in range(40)], ids=lambda c: c.name
)
def test_reduced_models_have_the_full_models_optimum(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = snapshot(case)
    counts, cost = component_optima(snap, monkeypatch, full=False)
    want_counts, want_cost = component_optima(snap, monkeypatch, full=True)
    assert +counts == +want_counts
    assert cost == pytest.approx(want_cost, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plans_place_as_the_full_model_does(case: Case) -> None:
    got = plan(snapshot(case))
    for name, expected in case.want.items():
        assert where(got, name) == expected, name


POLICIES = {
    "auto": Policy(),
    "optimizer": Policy(force_optimizer=True),
    "neighbourhoods": Policy(
        force_optimizer=True, exact_below=0, mip_rel_gap=1e-9, cost_stop_gap=0.0
    ),
}


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
@pytest.mark.parametrize(
    "case", CASES + [random_case(seed) for seed in range(40)], ids=lambda c: c.name
)
def test_unlinked_components_placed_as_the_solver_would(
    case: Case, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = snapshot(case)
    got = plan(snap, policy)
    with monkeypatch.context() as m:
        m.setattr(optimiser, "_unlinked", lambda *args: False)
        want = plan(snap, policy)
    # The same document but for the solver's work: the reduction skips the simplex
    # iterations (the cost LP is not presolved) that the solver spends on these gangs.
    got_doc, want_doc = got.to_dict(), want.to_dict()
    assert got_doc["stats"].pop("work") <= want_doc["stats"].pop("work")
    assert got_doc == want_doc


@pytest.mark.parametrize(
    "case", CASES + [random_case(seed) for seed in range(40)], ids=lambda c: c.name
)
def test_a_proof_from_a_start_reaches_the_optimum(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HiGHS's presolve, handed a start, once called the start optimal with a better plan
    # in the model (random case 24: 128 against 127); a proof must reach the optimum.
    snap = snapshot(case)
    want_counts, want_cost = component_optima(snap, monkeypatch, full=False)
    counts: Counter[int] = Counter()
    cost = 0.0

    def solve(planner: Any, comp: list[Slot], *args: Any) -> Any:
        nonlocal cost
        res = solve_as_usual(planner, comp, *args)
        cost += res.value
        place = res.place

        def place_and_count() -> None:  # a component's plan is placed after all searches
            place()
            counts.update(s.job.priority for s in comp if s.unplaced is None and s.chosen)

        res.place = place_and_count
        return res

    solve_as_usual = optimiser._solve
    monkeypatch.setattr(optimiser, "_solve", solve)
    monkeypatch.setattr(optimiser, "_unlinked", lambda *args: False)
    plan(snap, Policy(force_optimizer=True, prove=True, mip_rel_gap=1e-9))
    assert +counts == +want_counts
    assert cost == pytest.approx(want_cost, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_usable_options_per_distinct_slot_as_per_slot(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Copies of each job share its options object: the cached options must be each
    # slot's own, and a list of its own (the guaranteed-room pruning cuts them in place).
    # The copies differ in what else the options depend on: a budgeted team or not, a
    # gang's size, a service's price cap (and their ROFR standing follows the walk).
    case = random_case(seed)

    def variant(j: Job, k: int) -> Job:
        update: dict[str, Any] = {"name": f"{j.name}-{k}"}
        if k == 1:
            update["team"] = None if j.team == "r" else "r"
        elif k == 2 and j.kind is Kind.TRAINING:
            update["resources"] = j.resources.model_copy(
                update={"nodes": j.resources.nodes % 3 + 1}
            )
        elif k == 2:
            update["max_price_per_hour"] = None if j.max_price_per_hour else 45.0
        return j.model_copy(update=update)

    jobs = [variant(j, k) for j in case.jobs for k in range(3)]
    snap = snapshot(replace(case, jobs=jobs))
    calls = 0

    def checked(planner: Any, slots: list[Slot]) -> dict[int, list[Opt]]:
        nonlocal calls
        calls += 1
        got = usable_by_slot(planner, slots)
        assert got == {s.idx: usable_options(planner, s) for s in slots}
        assert len({id(opts) for opts in got.values()}) == len(got)
        return got

    with monkeypatch.context() as m:
        m.setattr(optimiser, "usable_by_slot", checked)
        plan(snap, Policy(force_optimizer=True))
    assert calls == 1


# One options object shared by every slot below (offer index: capacity in nodes):
# 0 the ROFR holder's, cheapest, 1 node; 1 aws unlimited; 2 gcp unlimited, ranked above
# aws but billed below it (aws is behind a commitment); 3 a dear 2-node pool.
SHARED = Options(
    [
        Opt(0, MarketKind.ON_DEMAND, 10.0, 10.0, True, "azure"),
        Opt(1, MarketKind.ON_DEMAND, 12.0, 11.0, False, "aws"),
        Opt(2, MarketKind.ON_DEMAND, 9.0, 13.0, False, "gcp"),
        Opt(3, MarketKind.ON_DEMAND, 30.0, 30.0, False, "oci"),
    ]
)
CAPACITY: list[int | None] = [1, None, None, 2]


def shared_slot(idx: int, **change: Any) -> Slot:
    """A one-node training slot on ``SHARED`` with no team; ``change`` sets job or slot fields."""
    fields: dict[str, Any] = {"nodes": 1, "restricted": False, "ceiling": None}
    job_fields = {k: change.pop(k) for k in ("kind", "team") if k in change}
    fields.update(change)
    return Slot(
        idx=idx,
        id=f"s{idx}",
        job=job(f"j{idx}", nodes=fields["nodes"], **job_fields),
        options=SHARED,
        nodes=fields["nodes"],
        replicas=1,
        spread=1,
        restricted=fields["restricted"],
        ceiling=fields["ceiling"],
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"restricted": True}, id="ROFR declined: no holder option"),
        pytest.param({"ceiling": 11.0}, id="a price ceiling"),
        pytest.param({"nodes": 2}, id="a larger gang"),
        pytest.param({"kind": "inference"}, id="a service: one unlimited option per provider"),
        pytest.param({"team": "r"}, id="a budgeted team: a cheaper bill after the first"),
    ],
)
def test_usable_options_cache_key_has_each_part(change: dict[str, Any]) -> None:
    # Two slots share their options object and differ in one part of what their usable
    # options depend on: each must get its own (a key without that part would hand the
    # second the first's list).
    planner = SimpleNamespace(cap=CAPACITY, team_left={"r": 1000.0})
    first, second = shared_slot(0), shared_slot(1, **change)
    own = [usable_options(planner, s) for s in (first, second)]  # type: ignore[arg-type]
    assert own[0] != own[1], "the change must matter to the options"
    got = usable_by_slot(planner, [first, second])  # type: ignore[arg-type]
    assert got == {0: own[0], 1: own[1]}
    assert got[0] is not got[1]


def _prune_slot_by_slot(planner: Any, usable: dict[int, list[Any]], slots: list[Any]) -> None:
    """``prune_with_guaranteed_room`` as its docstring states it, one slot at a time."""
    load_nodes: dict[int, float] = {}
    load_jobs: dict[int, float] = {}
    for s in slots:
        for opt in usable.get(s.idx, ()):
            load_nodes[opt.oi] = load_nodes.get(opt.oi, 0.0) + s.nodes * s.replicas
            load_jobs[opt.oi] = load_jobs.get(opt.oi, 0.0) + s.replicas
    for s in slots:
        opts = usable.get(s.idx)
        if not opts or s.job.kind is not Kind.TRAINING:
            continue
        room, blocked = 0, 0.0
        for i, opt in enumerate(opts):
            c = planner.cap[opt.oi]
            if c is None:
                break
            room += c // s.nodes
            blocked += (load_nodes[opt.oi] - s.nodes) / s.nodes + (load_jobs[opt.oi] - 1)
            if room > blocked:
                tail = min((o.node_price for o in opts[i + 1 :]), default=np.inf)
                if s.job.team in planner.team_left and tail < max(
                    o.node_price for o in opts[: i + 1]
                ):
                    break
                del opts[i + 1 :]
                break


def _prune_case(seed: int) -> tuple[Any, dict[int, list[Any]], list[Any]]:
    """Random gangs and services on six pools, in four shapes (equal lists, each its own)."""
    rng = random.Random(seed)
    pools = 6
    cap = [rng.choice([None, 0, 2, 8, 16, 40, 200]) for _ in range(pools)]
    opts = [SimpleNamespace(oi=i, node_price=rng.choice([1.0, 2.0, 3.0])) for i in range(pools)]
    shapes = [rng.sample(opts, rng.randint(1, pools)) for _ in range(4)]
    planner = SimpleNamespace(cap=cap, team_left={"capped": 100.0})
    slots = []
    usable: dict[int, list[Any]] = {}
    for idx in range(rng.randint(1, 30)):
        kind = Kind.TRAINING if rng.random() < 0.8 else Kind.INFERENCE
        slot = SimpleNamespace(
            idx=idx,
            nodes=rng.choice([1, 2, 8]),
            replicas=1 if kind is Kind.TRAINING else rng.randint(1, 3),
            job=SimpleNamespace(kind=kind, team=rng.choice([None, "capped", "free"])),
        )
        slots.append(slot)
        usable[idx] = list(rng.choice(shapes))
    return planner, usable, slots


@pytest.mark.parametrize("seed", range(40))
def test_guaranteed_room_cuts_every_slot_as_one_by_one(seed: int) -> None:
    # The pruning works each distinct option list out once (slots of one shape share
    # equal lists): every slot's list must be cut as the slot-by-slot rule cuts it, with
    # gangs of several sizes, services, budgets and unlimited pools among them.
    from multicloud.planner.model import prune_with_guaranteed_room

    planner, usable, slots = _prune_case(seed)
    want = {i: list(o) for i, o in usable.items()}
    _prune_slot_by_slot(planner, want, slots)
    prune_with_guaranteed_room(planner, usable, slots)
    assert {i: [o.oi for o in v] for i, v in usable.items()} == {
        i: [o.oi for o in v] for i, v in want.items()
    }


def test_the_random_pruning_cases_cut_some_lists_and_not_others() -> None:
    # What the cases above compare: lists the rule cuts, and lists it leaves whole.
    cut = whole = 0
    for seed in range(40):
        planner, usable, slots = _prune_case(seed)
        before = {i: len(v) for i, v in usable.items()}
        _prune_slot_by_slot(planner, usable, slots)
        cut += sum(len(usable[i]) < n for i, n in before.items())
        whole += sum(len(usable[i]) == n for i, n in before.items())
    assert cut >= 20 and whole >= 20


def test_guaranteed_room_refuses_slots_sharing_one_list() -> None:
    # Lists are cut in place and a cut is reused for equal lists: a list two slots share
    # would be cut for one and then taken as uncut for the other (found by review: caps
    # 8/16/8, node prices 2/3/1, a budgeted 1-node gang cut by a 4-node gang's cut).
    from multicloud.planner.model import prune_with_guaranteed_room

    opts = [SimpleNamespace(oi=i, node_price=p) for i, p in enumerate((2.0, 3.0, 1.0))]
    planner = SimpleNamespace(cap=[8, 16, 8], team_left={"capped": 100.0})
    shared = list(opts)
    slots = [
        SimpleNamespace(idx=i, nodes=n, replicas=1, job=SimpleNamespace(kind=Kind.TRAINING, team=t))
        for i, (n, t) in enumerate(((1, "capped"), (4, None), (1, "capped")))
    ]
    with pytest.raises(AssertionError, match="share one option list"):
        prune_with_guaranteed_room(planner, {0: shared, 1: shared, 2: list(opts)}, slots)
