"""Which owners the search's neighbourhoods free (``Hood.cheaper_with_room``,
``Hood.gainers``).

Table cases on small problems, in the count search's terms (each placed job of the tier
scores -1, an unplaced one 0) and in the cost search's (price per variable).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from scipy.sparse import csc_array

from multicloud.planner.hood import Hood
from multicloud.planner.problem import Problem


class Var(NamedTuple):
    owner: int
    pool: int  # -1: none
    objective: float
    base: float  # value in the plan the neighbourhood is cut from
    ub: float = 1.0
    option: bool = True  # False: a service's "placed" or spread flag
    scoped: bool = True  # in the count search's scope (a tier it counts or holds)


def hood_of(
    variables: list[Var], capacity: list[float], count: bool = False
) -> tuple[Hood, np.ndarray]:
    """The Hood of the plan ``base`` on a problem with one row per pool.

    ``count``: a count search's Hood (its scope: the variables ``scoped``); else a cost
    search's (no scope).
    """
    n = len(variables)
    a = np.zeros((len(capacity), n))
    for j, v in enumerate(variables):
        if v.pool >= 0:
            a[v.pool, j] = 1.0
    p = Problem(
        a=csc_array(a),
        row_lb=np.full(len(capacity), -np.inf),
        row_ub=np.array(capacity, dtype=np.float64),
        ub=np.array([v.ub for v in variables]),
        integral=np.ones(n, dtype=np.bool_),
        owner=np.array([v.owner for v in variables]),
        pool=np.array([v.pool for v in variables]),
        use=np.ones(n),
        rank=np.zeros(n, dtype=np.int64),
        option=np.array([v.option for v in variables]),
    )
    base = np.array([v.base for v in variables])
    scope = np.array([v.scoped for v in variables]) if count else None
    return Hood(p, [base], base, scope), np.array([v.objective for v in variables])


@pytest.mark.parametrize(
    ("variables", "capacity", "limit", "want"),
    [
        pytest.param(
            [Var(0, 0, -1.0, 0.0, ub=2.0), Var(1, 0, -1.0, 1.0, ub=2.0)],
            [3.0],
            100,
            {0},
            id="count: an unplaced class with room; not one with a job placed",
        ),
        pytest.param(
            [Var(0, 1, -1.0, 0.0), Var(1, 1, -1.0, 1.0)],
            [3.0, 1.0],
            100,
            set(),
            id="count: an unplaced class whose pool is full",
        ),
        pytest.param(
            [Var(0, -1, -1.0, 0.0, option=False), Var(0, 0, 0.0, 0.0)],
            [1.0],
            100,
            set(),
            id="count: a service's unset flag scores but is no option",
        ),
        pytest.param(
            [Var(0, 0, -1.0, 0.0), Var(1, 0, -1.0, 0.0), Var(2, 0, -1.0, 0.0)],
            [5.0],
            2,
            {0, 1},
            id="count: equal savings in owner order, within the limit",
        ),
        pytest.param(
            [Var(0, 0, 2.0, 1.0), Var(0, 1, 1.0, 0.0), Var(1, 1, 1.0, 1.0), Var(1, 0, 2.0, 0.0)],
            [3.0, 3.0],
            100,
            {0},
            id="cost: a cheaper option with room; not a dearer one",
        ),
        pytest.param(
            [
                Var(0, 0, 2.0, 1.0),
                Var(0, 2, 1.5, 0.0),
                Var(1, 1, 9.0, 1.0),
                Var(1, 2, 1.0, 0.0),
                Var(1, 0, 8.0, 0.0),
            ],
            [2.0, 2.0, 2.0],
            1,
            {1},
            id="cost: the largest saving first, always the first past the limit",
        ),
    ],
)
def test_cheaper_with_room(
    variables: list[Var], capacity: list[float], limit: int, want: set[int]
) -> None:
    hood, objective = hood_of(variables, capacity)
    assert hood.cheaper_with_room(objective, limit) == want


@pytest.mark.parametrize(
    ("variables", "count", "want", "pools"),
    [
        pytest.param(
            [Var(0, 0, -1.0, 0.0), Var(0, 1, -1.0, 0.0), Var(1, 0, -1.0, 1.0)],
            True,
            [0],
            {0: {0, 1}},
            id="a job no plan places, with every pool its options use",
        ),
        pytest.param(
            [Var(0, 0, -1.0, 1.0), Var(0, 1, -1.0, 0.0)],
            True,
            [],
            {},
            id="a job placed somewhere is reached by its ring, not seeded",
        ),
        pytest.param(
            [Var(0, -1, -1.0, 0.0, option=False), Var(0, 0, 0.0, 0.0), Var(1, 0, -1.0, 1.0)],
            True,
            [0],
            {0: {0}},
            id="a service: its unset placed flag scores, its options give the pools",
        ),
        pytest.param(
            [Var(0, 0, 0.001, 0.0), Var(1, 0, -1.0, 1.0)],
            True,
            [],
            {0: {0}},
            id="a job of a held tier: idle, but placing it counts nothing",
        ),
        pytest.param(
            [Var(0, 0, -1.0, 0.0, scoped=False), Var(1, 0, -1.0, 1.0)],
            True,
            [],
            {},
            id="a lower tier's job, out of scope",
        ),
        pytest.param(
            [Var(0, 0, 1.0, 0.0), Var(1, 0, 1.0, 1.0)],
            False,
            [],
            {},
            id="a cost search seeds none",
        ),
    ],
)
def test_gainers(
    variables: list[Var], count: bool, want: list[int], pools: dict[int, set[int]]
) -> None:
    hood, objective = hood_of(variables, [1.0, 1.0], count=count)
    assert hood.gainers(objective) == want
    idle = {o: hood.pools_of[o] for o in hood.idle}
    assert idle == pools
    # Seeds only: an idle job is nobody's pool user, or it would swamp every ring.
    assert not any(o in users for o in hood.idle for users in hood.users_of.values())


@pytest.mark.parametrize(
    ("limit", "strict", "want"),
    [
        pytest.param(10, True, ({0, 1}, [0]), id="a left-out job's ring within the limit"),
        pytest.param(1, True, (set(), []), id="strict: a ring past the limit is passed over"),
        pytest.param(1, False, ({0, 1}, [0]), id="else the first seed is always taken"),
    ],
)
def test_chunk_of_left_out_jobs(limit: int, strict: bool, want: tuple[set[int], list[int]]) -> None:
    # Job 0 is left out: its options are on pool 0 (job 1 uses it) and pool 1 (nobody
    # does, so the pool has no users to look up).
    variables = [Var(0, 0, -1.0, 0.0), Var(0, 1, -1.0, 0.0), Var(1, 0, -1.0, 1.0)]
    hood, objective = hood_of(variables, [1.0, 1.0], count=True)
    seeds = hood.gainers(objective)
    assert seeds == [0]
    assert hood.chunk(seeds, limit, strict=strict) == want


@pytest.mark.parametrize(
    ("owners", "want"),
    [
        ([0, 0, 1, 1], [[0, 1], [2, 3]]),
        ([1, 0, 1, 0], [[1, 3], [0, 2]]),  # interleaved: each owner's in variable order
        ([2, -1, 0, 2], [[2], [], [0, 3]]),  # an owner with no variable; -1 is no job's
    ],
)
def test_each_owners_variables(owners: list[int], want: list[list[int]]) -> None:
    # ``Problem.by_owner`` is kept on the problem (its owners never change), and every
    # Hood of it reads each owner's variables from it.
    variables = [Var(o, 0, 1.0, 0.0) for o in owners]
    hood, _ = hood_of(variables, [10.0])
    for plan in (np.zeros(len(owners)), np.ones(len(owners))):  # another Hood, the same
        again = Hood(hood.p, [plan], plan, None)
        assert [again.cols(o).tolist() for o in range(len(want))] == want
    assert hood.p.by_owner is hood.p.by_owner  # kept, not sorted again


def _chunk_by_definition(
    hood: Hood, seeds: list[int], limit: int, strict: bool
) -> tuple[set[int], list[int]]:
    """``Hood.chunk`` as its docstring defines it: each seed's whole ring, in order."""
    owners: set[int] = set()
    taken: list[int] = []
    size = 0
    for s in seeds:
        new = hood.ring(np.array([s])) - owners
        grow = sum(int(hood.sizes[o]) for o in new)
        if (taken or strict) and size + grow > limit:
            continue
        owners |= new
        taken.append(s)
        size += grow
    return owners, taken


@pytest.mark.parametrize("seed", range(12))
def test_chunk_is_its_definition(seed: int) -> None:
    # ``chunk`` passes over a seed whose own variables alone are past the limit without
    # working out its ring: random owners on shared pools, every limit from one owner's
    # variables to all of them, both modes.
    rng = np.random.default_rng(seed)
    pools = int(rng.integers(2, 6))
    variables = [
        Var(o, int(rng.integers(-1, pools)), 1.0, float(rng.random() < 0.5))
        for o in range(int(rng.integers(3, 12)))
        for _ in range(int(rng.integers(1, 5)))
    ]
    hood, _ = hood_of(variables, [1.0] * pools)
    seeds = [int(o) for o in rng.permutation(max(v.owner for v in variables) + 1)]
    for limit in range(1, len(variables) + 1):
        for strict in (False, True):
            assert hood.chunk(seeds, limit, strict) == _chunk_by_definition(
                hood, seeds, limit, strict
            )


def test_chunk_takes_a_seed_already_freed_past_the_limit() -> None:
    # Owner 1 (three variables) is in owner 0's ring: taken with it, it adds nothing, so
    # a limit its own variables would pass still takes it as a seed.
    variables = [Var(0, 0, 1.0, 1.0), *[Var(1, 0, 1.0, 1.0)] * 3, Var(2, 1, 1.0, 1.0)]
    hood, _ = hood_of(variables, [1.0, 1.0])
    assert hood.chunk([0, 1, 2], 4) == ({0, 1}, [0, 1])
    assert hood.chunk([0, 2, 1], 5) == ({0, 1, 2}, [0, 2, 1])
