"""Probing the cost stage's LP: gangs every good plan must place (docs/architecture.md).

With the tier counts held, the cost LP often meets a count with part of one very long gang
(three quarters of a 720-hour one, say) because no whole set of other jobs fits. No plan
can place a quarter of it less, so the LP bound sits far below every plan: on the
10,000-job trace batch two such gangs were 48,000 of the 61,000 between plan and bound.

Probing settles it: the LP re-solved with that gang made prohibitively expensive is a
lower bound on every plan without it (a plan that leaves it out pays nothing extra). When
that bound is above the plan at hand, no better plan leaves the gang out, so the row "the
gang is placed" loses no plan worth having, and the LP with it is still a lower bound on
the best plan (the minimum of the two branches' bounds).
"""

from __future__ import annotations

import math

from multicloud.planner.problem import FRAC, FloatArray, IntArray
from multicloud.planner.search import Search

PROBES = 6  # most gangs probed per component
WORTH = 1e-3  # a probe must be able to raise the bound by this share of it
PENALTY = 100.0  # the probe's price of the gang, in multiples of the plan's cost


def candidates(
    groups: list[IntArray], objective: FloatArray, lp: FloatArray, low: float
) -> list[int]:
    """Groups the LP places in part, by how much placing them whole could raise the bound.

    Args:
        groups: Each gang class's variables (its options).
        objective: Cost per variable.
        lp: The LP solution.
        low: The LP's value.

    Returns:
        Indices into ``groups`` of classes placed between 0 and 1 times, the largest
        possible gain first, each worth at least ``WORTH`` of ``low``.
    """
    scored: list[tuple[float, int]] = []
    for k, cols in enumerate(groups):
        s = float(lp[cols].sum())
        if s <= FRAC or s >= 1 - FRAC:
            continue
        used = cols[lp[cols] > FRAC]
        gain = (1.0 - s) * float(objective[used].min())
        if gain >= WORTH * abs(low):
            scored.append((-gain, k))
    return [k for _, k in sorted(scored)]


def probe(
    search: Search,
    objective: FloatArray,
    groups: list[IntArray],
    lp: FloatArray,
    low: float,
    plan: FloatArray,
    plan_value: float,
) -> tuple[FloatArray, float]:
    """Hold the gangs no plan better than ``plan`` can leave out; re-solve the LP.

    Args:
        search: The cost search (its LP solved with ``objective``).
        objective: Cost per variable.
        groups: Each gang class's variables.
        lp: The LP solution.
        low: Its value.
        plan: A feasible plan (its columns are kept in the LP).
        plan_value: Its cost.

    Returns:
        The LP solution and its value after the rows (the same when none was added): a
        lower bound of the best plan.
    """
    if not math.isfinite(low) or not math.isfinite(plan_value):
        return lp, low
    tried: set[int] = set()
    for _ in range(PROBES):
        # Candidates afresh after each row: the LP moves, and another gang may split.
        todo = [k for k in candidates(groups, objective, lp, low) if k not in tried]
        if not todo:
            break
        k = todo[0]
        tried.add(k)
        cols = groups[k]
        priced = objective.copy()
        priced[cols] += PENALTY * max(abs(plan_value), 1.0)
        _, without = search.relax(priced, plan)
        if without <= plan_value:
            # Leaving it out may pay: no row (the LP's costs are put back below).
            lp, low = search.relax(objective, plan)
            continue
        search.problem.add_rows([(cols, 1.0, math.inf)])
        lp, low = search.relax(objective, plan)
        if not math.isfinite(low):
            break
    return lp, low
