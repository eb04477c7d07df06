"""The count stage: the most jobs each priority tier can place (docs/architecture.md).

Tiers are counted from the top down, each count then held; counts do not see run times,
so this runs on the (often much smaller) model where gangs differing only in duration are
one class.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from multicloud.planner.model import build, choices, encode, problem_of
from multicloud.planner.options import Opt
from multicloud.planner.problem import dot
from multicloud.planner.search import SUBSTITUTE_ROUNDS, Search, Settings
from multicloud.planner.slot import Slot

if TYPE_CHECKING:
    from multicloud.planner.core import Planner


log = logging.getLogger("multicloud.planner")
# Groups of at least this many jobs log each step (a tier's count begun, the cost stage
# begun); a smaller one takes well under a second, and its lines would only flood a log.
STEPS_FROM = 1_000

TIE = 0.25  # the most a count objective's price tie-break may weigh, in jobs
# A sub-problem whose bound is within this of its plan cannot place one more job (that
# would gain at least 1 - TIE), so it stops there instead of polishing the tie-break:
# node-limited sub-problems of the count stage spent most of their time on that. No
# relative gap: 1e-3 of a 2,000-job tier is two jobs, and HiGHS stops at either gap. (Its
# repairs, which only hand the neighbourhoods a start, do stop at REPAIR_GAP below, up to
# 9 jobs on an 894-job repair: the neighbourhoods must then place those.)
COUNT_GAP = 1.0 - TIE - 0.05
# When a tier's search ends short of its LP bound, it runs again with neighbourhoods
# this many times larger (the moves that place the last jobs of a tier span more pools).
# Measured on the 10,000-job batches (with primal re-solves and COUNT_GAP): without it
# tier 1 placed 2,263 (trace) and 2,099 (synthetic) jobs, with it 2,264 and 2,103.
WIDER = 3
# Still short after that, once more with neighbourhoods this many times larger. On the
# six 10,000-job batches it placed 27 jobs more (tier 0: synthetic seed 3 +16, seed 8 +7,
# seed 7 +1, trace seed 3 +3, whose counts it proves), for 2-6 s more on those four (the
# planner benchmark: 11.2-13.9 -> 15.6-17.6 s); at 9 it placed 36 more, for up to 12 s
# more (both measured with the whole node limit in these passes; ``Search.widened`` now
# divides it by the factor, which left those plans the same). Placed jobs come first: a
# plan never trades one for time.
WIDEST = 6
# A tier whose plan at hand leaves more than this many of its jobs out solves its LP from
# scratch (dual simplex, lower tiers held at 0) instead of primal simplex from the upper
# tier's basis, whose work grows with the jobs it has to bring in: on the 20,000-job file's
# last tier (5,097 jobs, 3,884 left out) 17,300 primal iterations (2.5 s) against 14,165
# (0.54-0.58 s, unpresolved). Set above the 10,000-job batches' largest (2,271 left out,
# trace seed 3's tier 0): there, fresh LPs for
# every tier gave other vertices, from which the searches placed fewer jobs in a tier on
# three of the six batches (synthetic seed 8: 13 in tier 1), and their warm primal LPs take
# at most 8,200 iterations. With it those plans are unchanged.
FRESH = 3_000
# A count's repairs (sub-problems without a start, around the LP's split jobs) stop once
# within this relative gap of their bound: the neighbourhoods then place the jobs left.
# Synthetic 10,000 seed 7's tier-1 repair (3,970 variables) found its 894 jobs at the root
# (0.5 s, 0.7 % gap) and spent 200 nodes (4.0 s) on the tie-break. Measured on the six
# 10,000-job batches (one thread, count stage): synthetic seed 7 14.3 -> 9.8 s and 7 more
# tier-0 jobs, synthetic seed 3 one more tier-1 and tier-0 job, trace seed 8 the same
# tiers for 1.2 % less cost, the other three plans unchanged.
REPAIR_GAP = 0.01
# Relative slack on a count LP's value before it is rounded down to a bound: HiGHS meets
# its tolerances to about 1e-7 per column, so 355 may come back as 354.99999.
_LP_SLACK = 1e-5


def _widen(
    search: Search,
    objective: np.ndarray,
    lp: np.ndarray,
    x: np.ndarray,
    idx: np.ndarray,
    target: int,
    scope: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Search again, with wider neighbourhoods, while the tier is short of ``target``.

    Then, still short, neighbourhoods seeded by the jobs no plan places
    (``Search.place_left_out``), at the widest size; then trades within tiers
    (``Search.substitute``) while each places a job more.
    """
    got = round(float(x[idx].sum()))
    base = search.settings
    if got >= target or search.problem.n <= base.exact_below:
        return x, got  # at its target, or solved whole already: nothing to widen
    for factor in (WIDER, WIDEST):
        with search.widened(factor):
            x = search.improve(objective, lp, x, -target + TIE, scope=scope, whole=False)
        got = round(float(x[idx].sum()))
        if got >= target:
            return x, got
    # Still short: the jobs no plan places, which no ring reaches, seed the last rounds.
    with search.widened(WIDER):
        x = search.place_left_out(objective, x, -target + TIE, scope)
    got = round(float(x[idx].sum()))
    # Still short: trades linked by a budget rather than a pool (``Search.substitute``).
    for _ in range(SUBSTITUTE_ROUNDS):
        if got >= target or search.timed_out:
            break
        traded = search.substitute(objective, lp, x, -target + TIE, scope)
        if traded is x:
            break
        x = traded
        got = round(float(x[idx].sum()))
    if got < target and not search.timed_out:
        x = search.shift(objective, x, -target + TIE, scope, idx)
        got = round(float(x[idx].sum()))
    return x, got


@dataclass
class Counted:
    best: dict[int, int]  # placed jobs per tier
    choices: dict[int, list[tuple[Opt, int, float]]]  # a plan placing them
    proven: bool
    work: int
    seconds: float
    timed_out: bool


def count_tiers(
    planner: Planner,
    comp: list[Slot],
    usable: dict[int, list[Opt]],
    greedy: dict[int, list[tuple[Opt, int, float]]],
    settings: Settings,
    label: str | None = None,
) -> Counted:
    """The most jobs each tier can place, from the top tier down, each count then held.

    Args:
        planner: The planner after its queue walk.
        comp: The component's slots.
        usable: Each slot's options.
        greedy: The walk's choices.
        settings: Work limits.
        label: The group's name in the progress log (None: no lines).

    Returns:
        The counts, a plan placing them, and the search's work.

    Raises:
        ValueError: If the model has a negative ranked cost (the search's cutoff relies
            on a price tie-break that is never negative).
    """
    model, classes, services, tier_vars = build(planner, comp, usable, by_shape=True)
    n = len(model.lb)
    prob = problem_of(model, classes, services)
    counting = replace(settings, abs_gap=COUNT_GAP, gap=0.0, count_tie=TIE, repair_gap=REPAIR_GAP)
    search = Search(prob, counting)
    walk = encode(model, classes, services, greedy)
    x = walk if walk is not None and prob.feasible(walk) else np.zeros(n)
    owner_tier = np.array(
        [c.slots[0].job.priority for c in classes] + [v.slot.job.priority for v in services],
        dtype=np.int64,
    )
    tier_of = owner_tier[prob.owner]
    proven = True
    best: dict[int, int] = {}
    # Each count objective carries the price per hour, scaled to at most TIE in all:
    # it never outweighs one job, and it breaks the LP's ties (a count LP is massively
    # degenerate otherwise) towards cheap plans, which the cost stage starts from.
    price = np.array(model.cost)
    if (price < 0).any():  # the search's cutoff counts on a tie-break in [0, TIE)
        raise ValueError("a negative ranked cost in the count model")
    tie = TIE / max(dot(price, prob.ub), 1.0)
    order = sorted(tier_vars, reverse=True)
    for k, t in enumerate(order, start=1):
        idx = np.array(tier_vars[t], dtype=np.int64)
        modelled = sum(1 for s in comp if s.job.priority == t and usable[s.idx])
        got = round(float(x[idx].sum()))
        if got < modelled:
            if label is not None:
                log.info("%s: placing priority %d (tier %d/%d)", label, t, k, len(order))
            scope = tier_of >= t
            objective = np.where(scope, price * tie, 0.0)
            objective[idx] -= 1.0
            below = None
            if modelled - got > FRESH:
                # Lower tiers only hold capacity in this LP (no cost, no count): at 0 they
                # leave its value as it is, and a fresh dual simplex less to solve.
                below = np.nonzero(~scope)[0]
                search.restart()
            lp, value = search.relax(objective, x, below)
            # The next tier's LP starts from this basis, still primal feasible (its count
            # row is met by this LP's plan): dual simplex re-solves took 14,000-19,000
            # iterations (1.2-2.2 s) on the trace batch's largest component, primal 500-7,000.
            search.primal_resolves()
            # The LP's count is at most -value + TIE, and a count is whole.
            bound = math.floor(-value + TIE + 1e-6) if math.isfinite(value) else modelled
            target = min(modelled, bound)
            if got < target:
                # That bound allows the tie-break its whole TIE; the count's own LP is
                # tighter, and often rules out the last job the search would otherwise
                # hunt for in vain (10,000-job trace seed 7: 11 s for a 355th job the
                # count LP, at 354.8, says is not there).
                count_only = np.zeros(len(objective))
                count_only[idx] = -1.0
                _, most = search.relax(count_only, x, below)
                if math.isfinite(most):
                    # A whole LP optimum may come back a solver tolerance short of itself.
                    slack = 1e-6 + _LP_SLACK * abs(most)
                    target = min(target, math.floor(-most + slack))
            if got < target:
                # Lower tiers only hold capacity here: the search releases it, then the
                # walk's placements of theirs that still fit are put back.
                x = search.improve(objective, lp, x, -target + TIE, scope=scope)
                got = round(float(x[idx].sum()))
                x, got = _widen(search, objective, lp, x, idx, target, scope)
                if walk is not None:
                    x = prob.refill(x, walk, ~scope)
            if got < target and settings.prove:
                out = search.prove(objective, x)
                if out.x is not None and round(float(out.x[idx].sum())) > got:
                    x = out.x
                    got = round(float(x[idx].sum()))
                proven &= out.proven or got >= target
            else:
                proven &= got >= target
        best[t] = got
        prob.add_rows([(idx, float(got), math.inf)])
    return Counted(
        best, choices(x, classes, services), proven, search.work, search.seconds, search.timed_out
    )
