"""``Search.shift``: a count's last step, the short tier's jobs free over the plan's pools."""

from __future__ import annotations

import numpy as np
import pytest

from multicloud.planner.count import TIE
from tests.unit.test_planner_search import INF, tiny_problem

PRICE = 0.01  # each variable's tie-break price, as a count objective carries
SHIFT_CASES = [
    # (name, matrix, row lb, row ub, var ub, owner, pool row, counted tier's variables,
    #  in scope, incumbent, the plan wanted (None: the incumbent itself, unchanged))
    (
        # Job 0 sits on the only pool job 1 can use, and can move to the other pool
        # (both are the tier's: each of their options is free).
        "a tier's job moves to a free pool to make way for another",
        [[1, 0, 1], [0, 1, 0]],
        [-INF, -INF],
        [1, 1],
        [1, 1, 1],
        [0, 0, 1],
        [0, 1, 0],
        [0, 1, 2],
        [True, True, True],
        [1, 0, 0],
        [0, 1, 1],
    ),
    (
        # A lower tier only holds capacity in a count search: the shift releases it
        # (the count stage puts back what still fits afterwards).
        "a lower tier's job gives up its pool",
        [[1, 1]],
        [-INF],
        [1],
        [1, 1],
        [0, 1],
        [0, 0],
        [0],
        [True, False],
        [0, 1],
        [1, 0],
    ),
    (
        # The held tier's class (owner 0, two jobs) uses both pools; one of its jobs moves
        # from pool 0, the only one the tier's job can use, to pool 1, which has room.
        "a held class moves a job to another option it uses, making way",
        [[1, 0, 1], [0, 1, 0], [1, 1, 0]],
        [-INF, -INF, 2.0],
        [1, 2, INF],
        [2, 2, 1],
        [0, 0, 1],
        [0, 1, 0],
        [2],
        [True, True, True],
        [1, 1, 0],
        [0, 2, 1],
    ),
    (
        # The held tier's job (owner 0) could move to pool 1, but the plan does not use
        # that option, so it stays at 0; and the held count keeps the job from dropping.
        "a held tier's job keeps to the options the plan uses",
        [[1, 0, 1], [0, 1, 0], [1, 1, 0]],
        [-INF, -INF, 1.0],
        [1, 1, INF],
        [1, 1, 1],
        [0, 0, 1],
        [0, 1, 0],
        [2],
        [True, True, True],
        [1, 0, 0],
        None,
    ),
    (
        # The tier's job fits only pool 0, where held class A (owner 0) has a job; A
        # also uses pool 1, full with held class B's job (owner 1), and B also uses pool
        # 2, which has room. Moving B's job to pool 2, then A's to pool 1, places the
        # tier's job; but B holds no pool the tier can use, so its options stay as they
        # are: a chain through a second held job is not searched.
        "a job on no pool the tier can use stays fixed",
        [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]],
        [-INF, -INF, -INF, 2.0, 2.0],
        [1, 2, 2, INF, INF],
        [2, 2, 2, 2, 1],
        [0, 0, 1, 1, 2],
        [0, 1, 1, 2, 0],
        [4],
        [True, True, True, True, True],
        [1, 1, 1, 1, 0],
        None,
    ),
    (
        # Two jobs of one class on two pools of room one each, the tier's third job fits
        # neither: no plan places more, and the shift hands the incumbent back.
        "nothing to gain, the incumbent back",
        [[1, 0], [0, 1]],
        [-INF, -INF],
        [1, 1],
        [3, 3],
        [0, 0],
        [0, 1],
        [0, 1],
        [True, True],
        [1, 1],
        None,
    ),
]


@pytest.mark.parametrize("case", SHIFT_CASES, ids=[c[0] for c in SHIFT_CASES])
def test_shift(case: tuple[object, ...]) -> None:
    from multicloud.planner.search import Search, Settings

    _, a, row_lb, row_ub, ub, owner, pool, counted, scope, incumbent, want = case
    p = tiny_problem(a, row_lb, row_ub, ub, owner, pool)  # type: ignore[arg-type]
    idx = np.array(counted, dtype=np.int64)
    inside = np.array(scope, dtype=np.bool_)
    objective = np.where(inside, PRICE, 0.0)  # -1 per counted job, plus a tie-break price
    objective[idx] -= 1.0
    x0 = np.array(incumbent, dtype=float)
    assert p.feasible(x0)
    goal = -(float(x0[idx].sum()) + 1) + TIE  # one job more, as the count stage asks
    search = Search(p, Settings(count_tie=TIE))
    x = search.shift(objective, x0, goal, inside, idx)
    if want is None:
        assert x is x0
    else:
        assert p.feasible(x)
        assert np.round(x).tolist() == want
