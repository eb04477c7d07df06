"""A stalled cost search's trades within tiers (``Hood.substitutes``, ``Search.substitute``).

Small problems with pools, one row per job (one option at most), a held count per tier
and a budget, built from a table of jobs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np
import pytest
from scipy.sparse import csc_array

from multicloud.models import Contracts
from multicloud.planner import Policy, Snapshot, plan
from multicloud.planner.count import COUNT_GAP, TIE
from multicloud.planner.hood import Hood
from multicloud.planner.problem import Problem
from multicloud.planner.search import Search, Settings
from multicloud.testing.builders import job, offer


class Option(NamedTuple):
    cost: float
    pool: int = -1  # -1: no limited pool
    budget: float = 0.0  # what it spends of the budget


class Job(NamedTuple):
    tier: int
    options: list[Option]
    placed: int | None = None  # the option the plan at hand uses


def problem_of(
    jobs: list[Job], pools: list[float], held: dict[int, int], budget: float
) -> tuple[Problem, np.ndarray, np.ndarray]:
    """The problem, the cost per variable and the plan at hand."""
    cols = [(k, j, o) for k, j in enumerate(jobs) for o in j.options]
    n = len(cols)
    tiers = sorted(held)
    rows = len(pools) + len(jobs) + len(tiers) + 1
    a = np.zeros((rows, n))
    plan = np.zeros(n)
    for v, (k, j, o) in enumerate(cols):
        if o.pool >= 0:
            a[o.pool, v] = 1.0
        a[len(pools) + k, v] = 1.0
        if j.tier in held:  # else the tier a count search counts: no row yet
            a[len(pools) + len(jobs) + tiers.index(j.tier), v] = 1.0
        a[-1, v] = o.budget
        if j.placed is not None and j.options[j.placed] is o:
            plan[v] = 1.0
    row_lb = np.concatenate(
        [np.full(len(pools) + len(jobs), -np.inf), [float(held[t]) for t in tiers], [-np.inf]]
    )
    row_ub = np.concatenate([pools, np.ones(len(jobs)), np.full(len(tiers), np.inf), [budget]])
    rank = np.array([j.options.index(o) for _, j, o in cols], dtype=np.int64)
    p = Problem(
        a=csc_array(a),
        row_lb=row_lb,
        row_ub=row_ub,
        ub=np.ones(n),
        integral=np.ones(n, dtype=np.bool_),
        owner=np.array([k for k, _, _ in cols]),
        pool=np.array([o.pool for _, _, o in cols]),
        use=np.ones(n),
        rank=rank,
    )
    return p, np.array([o.cost for _, _, o in cols]), plan


@pytest.mark.parametrize(
    ("jobs", "per_tier", "want"),
    [
        pytest.param(
            [
                Job(0, [Option(100.0)], placed=0),
                Job(0, [Option(3.0)], placed=0),
                Job(0, [Option(7.0)]),
                Job(0, [Option(2.0)]),
            ],
            1,
            [0, 3],
            id="the tier's dearest placed job and its cheapest left-out one",
        ),
        pytest.param(
            [
                Job(0, [Option(100.0)], placed=0),
                Job(1, [Option(50.0)], placed=0),
                Job(1, [Option(1.0)]),
                Job(0, [Option(9.0)]),
            ],
            1,
            [0, 1, 2, 3],
            id="each tier on its own",
        ),
        pytest.param(
            [Job(0, [Option(5.0)], placed=0), Job(0, [Option(4.0)], placed=0)],
            2,
            [0, 1],
            id="fewer than asked: all of them",
        ),
        pytest.param(
            [
                Job(0, [Option(50.0)], placed=0),
                Job(0, [Option(10.0), Option(1.0)]),
                Job(0, [Option(2.0)]),
            ],
            1,
            [0, 1],
            id="a left-out job by its cheapest option, not its first",
        ),
        pytest.param(
            [
                Job(0, [Option(50.0)], placed=0),
                Job(0, [Option(10.0), Option(9.0), Option(8.0), Option(1.0)]),
                Job(0, [Option(2.0)]),
            ],
            1,
            [0, 2],
            id="only a job's three cheapest-ranked options count",
        ),
        pytest.param(
            [Job(0, [Option(5.0)], placed=0), Job(0, [Option(4.0)], placed=0)],
            0,
            [],
            id="none asked",
        ),
    ],
)
def test_substitutes_are_the_dearest_placed_and_cheapest_left_out_per_tier(
    jobs: list[Job], per_tier: int, want: list[int]
) -> None:
    held = {j.tier: sum(1 for i in jobs if i.tier == j.tier and i.placed is not None) for j in jobs}
    p, cost, plan = problem_of(jobs, [], held, budget=1e9)
    hood = Hood(p, [plan], plan, None)
    assert hood.substitutes(cost, plan, per_tier) == want


def budget_trade() -> tuple[Problem, np.ndarray, np.ndarray]:
    """A tier-0 job placed dear, off the budget; a cheap one left out needs the budget,
    which a tier-1 job holds and could give up for an option a little dearer."""
    jobs = [
        Job(0, [Option(100.0)], placed=0),
        Job(0, [Option(5.0, budget=5.0)]),
        Job(1, [Option(5.0, budget=5.0), Option(6.0)], placed=0),
    ]
    return problem_of(jobs, [], {0: 1, 1: 1}, budget=5.0)


def test_a_trade_linked_by_the_budget_is_found_where_the_rounds_find_none() -> None:
    p, cost, plan = budget_trade()
    settings = Settings(exact_below=0, max_free=100)
    # The LP at hand agrees with the plan (a degenerate LP may point nowhere): the rounds
    # have no disagreement to start from, and nothing can move somewhere cheaper alone.
    rounds = Search(p, settings).improve(cost, plan, plan, good_enough=-np.inf)
    assert float(cost @ rounds) == 105.0
    traded = Search(p, settings).substitute(cost, plan, plan, good_enough=-np.inf)
    assert float(cost @ traded) == 11.0  # the optimum: the cheap job in, the tier-1 job moved
    assert p.feasible(traded)


def test_a_trade_neighbourhood_past_its_size_is_not_tried() -> None:
    p, cost, plan = budget_trade()
    out = Search(p, Settings(exact_below=0, max_free=0)).substitute(cost, plan, plan, -np.inf)
    assert out is plan


def test_a_count_search_places_a_job_a_budget_trade_makes_room_for() -> None:
    # Tier 0 is counted (each of its jobs -1, plus a price tie-break), tier 1 held at 1: the
    # tier-0 job fits only once the tier-1 job moves off the budget.
    jobs = [
        Job(0, [Option(5.0, budget=5.0)]),
        Job(1, [Option(5.0, budget=5.0), Option(6.0)], placed=0),
    ]
    p, price, plan = problem_of(jobs, [], {1: 1}, budget=5.0)
    tier0 = p.owner == 0
    objective = np.where(tier0, -1.0, 0.0) + price * (TIE / float(price @ p.ub))
    settings = Settings(exact_below=0, max_free=100, count_tie=TIE, abs_gap=COUNT_GAP)
    scope = np.ones(p.n, dtype=np.bool_)
    rounds = Search(p, settings).improve(objective, plan, plan, -1.0 + TIE, scope)
    assert float(rounds[tier0].sum()) == 0.0
    traded = Search(p, settings).substitute(objective, plan, plan, -1.0 + TIE, scope)
    assert float(traded[tier0].sum()) == 1.0
    assert p.feasible(traded)


def test_jobs_out_of_a_count_search_scope_are_never_substitutes() -> None:
    jobs = [
        Job(1, [Option(100.0)], placed=0),
        Job(1, [Option(1.0)]),
        Job(0, [Option(200.0)], placed=0),  # a lower tier: only holds capacity here
        Job(0, [Option(0.5)]),
    ]
    p, cost, plan = problem_of(jobs, [], {1: 1, 0: 1}, budget=1e9)
    scope = np.isin(p.owner, [0, 1])
    hood = Hood(p, [plan], np.where(scope, plan, 0.0), scope)
    assert hood.substitutes(cost, np.where(scope, plan, 0.0), 1) == [0, 1]


@pytest.mark.parametrize("rounds_move", [False, True])
def test_a_cost_search_still_stalled_after_its_wider_pass_trades_once(
    rounds_move: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The walk puts the 1-node job on the cheap pool and the 2-node job on the dear one
    # (70 an hour, the optimum 50). With the cost search's rounds held where they start,
    # they stall far above the bound, and the trade finds the optimum; with the real
    # rounds the plan reaches its stop and no trade is tried.
    snap = Snapshot(
        jobs=[job("small", accelerator="A100", nodes=1), job("large", accelerator="A100", nodes=2)],
        offers=[
            offer("aws", instance_type="a", accelerator="A100", price=10, capacity=2),
            offer("gcp", instance_type="b", accelerator="A100", price=30, capacity=2),
        ],
        contracts=Contracts(),
        now=datetime(2026, 11, 23, tzinfo=timezone.utc),
    )
    improve, substitute = Search.improve, Search.substitute
    trades: list[float] = []

    def held(self: Search, objective: Any, lp: Any, incumbent: Any, *a: Any, **k: Any) -> Any:
        if self.settings.count_tie > 0 or rounds_move:
            return improve(self, objective, lp, incumbent, *a, **k)
        return incumbent

    def counted(self: Search, objective: Any, *a: Any) -> Any:
        if self.settings.count_tie <= 0:
            trades.append(1.0)
        return substitute(self, objective, *a)

    monkeypatch.setattr(Search, "improve", held)
    monkeypatch.setattr(Search, "substitute", counted)
    got = plan(snap, Policy(force_optimizer=True, exact_below=0, workers=1))
    best = plan(snap, Policy(force_optimizer=True, prove=True, workers=1))
    assert len(trades) == (0 if rounds_move else 1)
    assert len(got.placements) == 2
    assert got.total_cost == pytest.approx(best.total_cost)
