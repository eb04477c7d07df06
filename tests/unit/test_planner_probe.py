"""Probing the cost LP: a gang held placed only when no cheaper plan leaves it out."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.sparse import csc_array

from multicloud.planner.probe import Group, candidates, probe
from multicloud.planner.problem import Problem
from multicloud.planner.search import Search, Settings


@dataclass(frozen=True)
class Gang:
    pool: int
    nodes: int
    cost: float


def problem(gangs: list[Gang], caps: list[int], placed: int) -> tuple[Problem, np.ndarray]:
    """One binary per gang (one option each), pool rows, and "at least ``placed`` placed"."""
    n = len(gangs)
    a = np.zeros((len(caps) + 1, n))
    for j, g in enumerate(gangs):
        a[g.pool, j] = g.nodes
        a[len(caps), j] = 1.0
    prob = Problem(
        a=csc_array(a),
        row_lb=np.array([0.0] * len(caps) + [float(placed)]),
        row_ub=np.array([float(c) for c in caps] + [math.inf]),
        ub=np.ones(n),
        integral=np.ones(n, dtype=np.bool_),
        owner=np.arange(n, dtype=np.int64),
        pool=np.array([g.pool for g in gangs], dtype=np.int64),
        use=np.array([float(g.nodes) for g in gangs]),
        rank=np.zeros(n, dtype=np.int64),
    )
    return prob, np.array([g.cost for g in gangs])


def optimum(prob: Problem, cost: np.ndarray) -> float:
    """The best plan's cost, by trying every plan."""
    plans = (np.array(x, dtype=np.float64) for x in itertools.product([0, 1], repeat=prob.n))
    return min(float(cost @ x) for x in plans if prob.feasible(x))


# Two 6-node gangs share 8 nodes: the LP places 1 1/3 of them and 2/3 of the long 4-node
# gang to meet a count of 2, where every plan needs the long gang whole.
SPLIT = [Gang(0, 6, 1.0), Gang(0, 6, 1.0), Gang(1, 4, 100.0)]
CASES = [
    # (gangs, capacities, count, the plan at hand, rows added, the bound after probing)
    (SPLIT, [8, 4], 2, [1, 0, 1], 1, "plan"),
    # A third pool with a gang at 50: leaving the long gang out pays, so no row.
    ([*SPLIT, Gang(2, 6, 50.0)], [8, 4, 6], 2, [1, 0, 1, 0], 0, "lp"),
    # The same against the best plan (51): no plan without the gang at 50 costs less
    # (the long gang's 100 is more), so that gang is held, and the bound meets the plan.
    ([*SPLIT, Gang(2, 6, 50.0)], [8, 4, 6], 2, [1, 0, 0, 1], 1, "plan"),
    # Nothing split: the LP is the plan already.
    ([Gang(0, 6, 1.0), Gang(1, 4, 100.0)], [8, 4], 2, [1, 1], 0, "plan"),
]


@pytest.mark.parametrize(("gangs", "caps", "placed", "plan", "rows", "after"), CASES)
def test_probe_raises_the_bound_only_where_every_good_plan_agrees(
    gangs: list[Gang], caps: list[int], placed: int, plan: list[int], rows: int, after: str
) -> None:
    prob, cost = problem(gangs, caps, placed)
    x = np.array(plan, dtype=np.float64)
    assert prob.feasible(x)
    search = Search(prob, Settings())
    lp, low = search.relax(cost, x)
    groups = [Group(np.array([j]), np.array([j])) for j in range(prob.n)]
    before = prob.a.shape[0]
    _, bound = probe(search, cost, groups, lp, low, x, float(cost @ x))
    assert prob.a.shape[0] - before == rows
    assert bound == pytest.approx(float(cost @ x) if after == "plan" else low)
    assert low - 1e-9 <= bound <= optimum(prob, cost) + 1e-9
    assert prob.feasible(x)  # a row never cuts off the plan it was probed against


@pytest.mark.parametrize(
    ("lp", "low", "want"),
    [
        # Leaving out the long gang's two thirds could move the bound most, then placing
        # its missing third, then the short gang's.
        ([1.0, 1 / 3, 2 / 3], 68.0, [(2, False), (2, True), (1, True), (1, False)]),
        # Against a larger bound the short gang's third is worth too little.
        ([1.0, 1 / 3, 2 / 3], 1000.0, [(2, False), (2, True)]),
        ([1.0, 1 / 3, 2 / 3], 1e6, []),  # worth too little against the bound
        ([1.0, 0.0, 1.0], 101.0, []),  # nothing split
    ],
)
def test_candidates_put_the_largest_possible_gain_first(
    lp: list[float], low: float, want: list[tuple[int, bool]]
) -> None:
    cost = np.array([1.0, 1.0, 100.0])
    groups = [Group(np.array([j]), np.array([j])) for j in range(3)]
    assert candidates(groups, cost, np.array(lp), low) == want


@pytest.mark.parametrize(
    ("out", "want"),
    [
        ([2], math.inf),  # without the long gang two 6-node gangs cannot share 8 nodes
        ([0], 101.0),  # without a short gang the other and the long one meet the count
        ([], 68.0),  # nothing held out: the LP as it was (1 + 1/3 + 2/3 of 100)
    ],
)
def test_relax_without_holds_the_group_out_and_then_restores_it(
    out: list[int], want: float
) -> None:
    prob, cost = problem(SPLIT, [8, 4], 2)
    search = Search(prob, Settings())
    _, low = search.relax(cost)
    ub = prob.ub.copy()
    assert search.relax_without(cost, np.array(out, dtype=np.int64)) == pytest.approx(want)
    assert np.array_equal(prob.ub, ub)
    assert search.relax(cost)[1] == pytest.approx(low)
