"""Probing the cost stage's LP: gangs every good plan places, or leaves out.

With the tier counts held, the cost LP often meets a count with part of one very long gang
(three quarters of a 720-hour one, say) because no whole set of other jobs fits. No plan
can place a quarter of it less, so the LP bound sits far below every plan: on the
10,000-job trace batch two such gangs were 48,000 of the 61,000 between plan and bound.

Probing settles it. The LP re-solved with the gang held at zero is a lower bound on every
plan without it (and with no LP plan at all, no plan leaves it out). When that
bound is above the plan at hand, no better plan leaves the gang out, so the row "the gang
is placed" loses no plan worth having, and the LP with it is still a lower bound on the
best plan (the lesser of the two branches' bounds). The other way round (the gang given a
large reward) shows when no better plan places it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from multicloud.planner.problem import FRAC, FloatArray, IntArray, dot
from multicloud.planner.search import Search

PROBES = 6  # most probes per component
WORTH = 1e-3  # a probe must be able to move the bound by this share of it
PENALTY = 100.0  # the probe's price (or reward) of the gang, in multiples of the plan's cost
TOL = 1e-7  # a branch is ruled out only this far (times the price) above the plan: LP noise


@dataclass(frozen=True)
class Group:
    """One gang class or service, as probing sees it.

    Attributes:
        row: Variables whose sum is how often it is placed (a class's options, a
            service's "placed").
        cost: Variables carrying its cost (its options).
    """

    row: IntArray
    cost: IntArray


def candidates(
    groups: list[Group], objective: FloatArray, lp: FloatArray, low: float
) -> list[tuple[int, bool]]:
    """Groups the LP places in part, by how far settling them could move the bound.

    Args:
        groups: The gang classes and services.
        objective: Cost per variable.
        lp: The LP solution.
        low: The LP's value.

    Returns:
        (index into ``groups``, True to probe "placed" / False to probe "left out"), the
        largest possible gain first, each worth at least ``WORTH`` of ``low``: placing
        whole a group the LP places ``s`` times (0 < s < 1) adds up to (1 - s) times its
        cost per placement, leaving it out takes s times that from the LP but makes the
        others make up its count.
    """
    scored: list[tuple[float, int, bool]] = []
    for k, g in enumerate(groups):
        s = float(lp[g.row].sum())
        if s <= FRAC or s >= 1 - FRAC:
            continue
        price = dot(objective[g.cost], lp[g.cost]) / s
        for gain, placed in (((1.0 - s) * price, True), (s * price, False)):
            if gain >= WORTH * abs(low):
                scored.append((-gain, k, placed))
    return [(k, placed) for _, k, placed in sorted(scored)]


def probe(
    search: Search,
    objective: FloatArray,
    groups: list[Group],
    lp: FloatArray,
    low: float,
    plan: FloatArray,
    plan_value: float,
) -> tuple[FloatArray, float]:
    """Settle the groups no plan better than ``plan`` can have otherwise; re-solve the LP.

    Args:
        search: The cost search (its LP solved with ``objective``).
        objective: Cost per variable.
        groups: The gang classes and services.
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
    tried: set[tuple[int, bool]] = set()
    big = PENALTY * max(abs(plan_value), 1.0)
    for _ in range(PROBES):
        # Candidates afresh after each row: the LP moves, and another group may split.
        todo = [c for c in candidates(groups, objective, lp, low) if c not in tried]
        if not todo:
            break
        k, placed = todo[0]
        tried.add((k, placed))
        rows = groups[k].row
        if _plan_in_other_branch(plan, rows, placed):
            # The plan itself is a point of the probe's LP at its own cost, so that LP
            # cannot rise above it: the probe would add no row. Skipped without a solve
            # (the demo fleet's 20,000-job file: both probes of this kind, 1.2 s), still
            # counted as one of the PROBES, so the probes tried are the same.
            continue
        if placed:
            # Every plan without the group costs at least the LP without it. (Held at 0
            # by its bounds: priced up by ``big`` instead, the demo fleet's LP ended
            # HiGHS's simplex in an unknown status after 0.5 s; by bounds it was shown
            # infeasible in 0.05 s.)
            other = search.relax_without(objective, groups[k].cost, plan)
        else:
            # Every plan with it costs at least the LP with it rewarded, plus the
            # reward back (its row sums to at least 1 in such a plan).
            priced = objective.copy()
            priced[rows] -= big
            _, other = search.relax(priced, plan)
            other += big
        if other <= plan_value + TOL * big:
            # The other branch may hold a better plan: no row. The LP's rows are as they
            # were, so its solution and value are too (the next solve sets its own costs).
            continue
        search.problem.add_rows([(rows, 1.0, math.inf) if placed else (rows, 0.0, 0.0)])
        lp, low = search.relax(objective, plan)
        if not math.isfinite(low):
            break
    return lp, low


def _plan_in_other_branch(plan: FloatArray, rows: IntArray, placed: bool) -> bool:
    """True if ``plan`` lies in the branch a probe prices away, so it cannot settle it.

    Probing "placed" holds every placement of the group at zero: a plan that leaves the
    group out is a point of that LP at its own cost. Probing "left out" rewards every
    placement: a plan that places it costs at most its cost less the reward. Either way the
    probe's LP value (plus the reward back) is at most the plan's cost, and the probe adds
    no row.

    Args:
        plan: The feasible plan the probe compares with.
        rows: The group's "placed" variables.
        placed: The probe's direction (True: "the group is placed").

    Returns:
        Whether the probe is known to add no row.
    """
    count = float(plan[rows].sum())
    return count <= FRAC if placed else count >= 1.0 - FRAC
