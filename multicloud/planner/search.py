"""Deterministic search for the optimiser's integer programs, on HiGHS (highspy).

Once the tier counts are held exactly, the planner's models have an LP relaxation that is
almost integral: a handful of gangs and services are split, the rest sit on whole
options. So instead of a general branch-and-bound over the whole model, the search:

1. **Relaxes** (:mod:`.relax`). The LP is solved once per objective on one HiGHS
   instance that is kept (rows added, costs changed, the basis reused). Large models
   start from each job's cheapest options; columns the duals price in are added until
   none prices in, so the bound is the bound of the whole model.
2. **Repairs.** Columns the LP left fractional are re-solved as small integer programs:
   for cost, one cluster of split jobs (sharing a pool) at a time, the rest held at the
   LP's values (each such sub-problem solved once per search); for a count, the split
   jobs made whole with every other placement kept or dropped (first screened for having
   no whole plan at all), then, failing that, every job on their pools free.
3. **Improves.** Neighbourhoods around the plan at hand are re-solved exactly: the jobs
   where it and the LP disagree, then also every job on the pools those use, growing one
   ring of pools per round; last, the jobs that could move to a cheaper option with room,
   which the LP may never point at (in a count search, with a tenth of the node limit).
   A neighbourhood that found nothing better, met again from the same plan with no more
   nodes, is not re-solved.
4. **Proves** (only when asked): the whole model, warm-started from the best plan.

Every limit is deterministic work (branch-and-bound nodes per sub-problem, rounds,
variables per neighbourhood), so the same model gives the same plan on any machine load.
HiGHS's own clock is kept only as a safety ceiling; when it stops a solve, the search
says so (``timed_out``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from highspy import HighsModelStatus
from highspy._core import _Highs
from highspy._core.cb import HighsCallbackType
from scipy.sparse import csc_array, csr_array

from multicloud.planner.hood import Hood, by_cluster, disagreement
from multicloud.planner.problem import (
    FRAC,
    BoolArray,
    FloatArray,
    IntArray,
    Problem,
    cols_idx,
    dot,
    highs,
)
from multicloud.planner.relax import KeptLP
from multicloud.planner.settings import Settings

__all__ = ["Outcome", "Problem", "Search", "Settings"]

_INF = math.inf
_ROUND_VARIABLES = 20_000  # each this many variables of a model add Settings.rounds rounds
_REPAIR_NEIGHBOURHOODS = 2  # largest repair without a start, in neighbourhood sizes
# A stalled search's trade neighbourhood (``Search.substitute``): owners of each kind per
# held count, options each of its owners gets wherever they are, most variables (in
# neighbourhood sizes). On the 20,000-job file's cost model, from the plan the count stage
# handed over before it traded too (341,882; the LP 316,483), 20 per tier found 337,046,
# 50 found 319,547 (4,180 variables, 0.9 s), 100 the same in 1.3 s. A cap of 10
# neighbourhoods changed no 10,000-job plan; 30 places a tier-1 job more on synthetic seed 7
# (its counts then proven; 3 s on that neighbourhood). Past the cap nothing is tried:
# synthetic seeds 3 and 8's tier-0 neighbourhoods are larger.
_SUBSTITUTES = 50
_SUBSTITUTE_OPTIONS = 3
_SUBSTITUTE_NEIGHBOURHOODS = 30
# A count still short after its last neighbourhoods tries trades this many times in a row
# while each places a job more.
SUBSTITUTE_ROUNDS = 4
# HiGHS's interrupt checks a count repair's screen may pass (``Search._integer_infeasible``).
SCREEN_CHECKS = 6


def _digest(a: np.ndarray) -> bytes:
    """A digest of an array's kind, shape, and the places and bits of its nonzero entries.

    A cache key part. The searches' plans and masks are mostly zeros: hashing every entry
    of a 10,000-job model's (about 100,000 variables) took 1.2 ms a call, 1.4 s of one
    batch's plan. By bits, so -0.0 is not 0.0. For arrays of 1-, 2-, 4- or 8-byte items
    (bools, integers, floats). The places go in as a bitmap: listing them (``flatnonzero``)
    took twice as long (0.80 against 0.43 ms for such a plan, 0.40 against 0.13 for a mask).
    """
    words = np.ascontiguousarray(a).reshape(-1).view(f"u{a.itemsize}")
    nonzero = words != 0
    h = hashlib.blake2b(f"{a.dtype}{a.shape}".encode(), digest_size=16)
    h.update(np.packbits(nonzero).tobytes())
    h.update(words[nonzero].tobytes())
    return h.digest()


@dataclass
class Outcome:
    """What one sub-problem solve returned."""

    x: FloatArray | None
    proven: bool
    bound: float


@dataclass
class Search(KeptLP):
    """The search over one problem; keeps the LP and the work done between objectives.

    Args:
        problem: The integer program (rows may be added between objectives).
        settings: Work limits.
    """

    problem: Problem
    settings: Settings
    work: int = 0  # simplex iterations + branch-and-bound nodes: deterministic effort
    seconds: float = 0.0  # HiGHS's run time, for the safety ceiling only
    timed_out: bool = False
    bound: float = -_INF  # a proven bound the last improve found (a whole-model solve)
    _lp: _Highs | None = None
    _cols: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _active: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    _lp_rows: int = 0
    # A cost repair's sub-problems, by what decides their answer (``_repair``).
    _repaired: dict[tuple[object, ...], tuple[IntArray, FloatArray] | None] = field(
        default_factory=dict
    )
    # Neighbourhoods re-solved from their start, by what decides them: the most nodes
    # each was given (``neighbourhood``).
    _searched: dict[tuple[object, ...], int] = field(default_factory=dict)

    # ---- integer solutions --------------------------------------------------------------

    def solve_sub(
        self,
        objective: FloatArray,
        base: FloatArray,
        free: BoolArray,
        start: FloatArray | None,
        *,
        nodes: int | None = None,
        bounds: tuple[FloatArray, FloatArray] | None = None,
        target: float = -_INF,
        cutoff: float = _INF,
        proof: bool = False,
        exact: bool = False,
        short: int | None = None,
        gap: float | None = None,
        screen: bool = False,
        presolve: bool = True,
    ) -> Outcome:
        """Solve the integer program with every variable outside ``free`` fixed at ``base``.

        Args:
            objective: Cost per variable.
            base: Values of the fixed variables (rounded).
            free: Variables left to the solver.
            start: A plan feasible for this sub-problem, handed to HiGHS as a start.
            nodes: Branch-and-bound node limit (default: the settings').
            bounds: Tighter lower and upper bounds for all variables (default 0 and ub).
            target: Stop at the first plan whose whole objective is at most this (the
                search's goal: nothing better is needed).
            cutoff: Only plans whose whole objective is at most this are of use: HiGHS
                prunes every node whose bound is above it.
            proof: Optimality will be claimed (no neighbourhood): no presolve with a start.
            exact: Fix the variables outside ``free`` at ``base`` as it is, fractions
                included (a repair of part of an LP solution); else rounded.
            short: With ``exact``, each count row (a lower bound only) need only get from
                the freed variables the whole part of what they give it in ``base``, as
                far as the row needs it, less this many, and a count row they do not touch
                may be short (None: every row met).
            gap: Relative gap at which HiGHS stops (default: the settings').
            screen: First look for a proof, without presolve, that no whole plan meets
                the rows (``_integer_infeasible``); the answer is the same either way,
                found sooner where there is none.
            presolve: Let HiGHS presolve the sub-problem (``shift`` does not).

        Returns:
            The whole plan (None if none was found), whether the sub-problem was solved
            to optimality, and its proven bound (for the sub-problem).
        """
        p = self.problem
        held = exact & (np.abs(base - np.round(base)) > FRAC)  # fractions kept as they are
        fixed = np.where(free, 0.0, np.where(held, base, np.round(base)))
        cols = np.nonzero(free)[0]
        if not len(cols):
            ok = p.feasible(fixed)
            return Outcome(fixed if ok else None, ok, dot(objective, fixed) if ok else _INF)
        act = p.a @ fixed
        sub = csc_array(p.a[:, cols])
        rows = np.unique(sub.indices)
        row_lb = p.row_lb
        relaxed = exact and short is not None
        if relaxed:
            counted = p.counted  # a tier's count, held
            # A count row an earlier part of the repair left short is the repair's last
            # step to meet, not a reason to refuse a part that does not touch it.
            row_lb = np.where(counted, -_INF, row_lb)
        if np.any(np.delete(act, rows) < np.delete(row_lb, rows) - 1e-6) or np.any(
            np.delete(act, rows) > np.delete(p.row_ub, rows) + 1e-6
        ):
            return Outcome(None, False, _INF)
        sub = csc_array(csr_array(sub)[rows])
        lo, hi = bounds if bounds is not None else (np.zeros(p.n), p.ub)
        need = p.row_lb[rows] - act[rows]
        if relaxed:
            # Whole jobs on pools the held fractions fill in part may fall short of a count
            # row: the freed variables need only give it the whole part of what they gave
            # it in ``base`` (as far as the row needed it), less ``short`` (the repair meets
            # the rest once no fraction is held).
            as_held = np.where(held, base, np.round(base))
            behind = np.maximum(p.row_lb[rows] - (p.a @ as_held)[rows], 0.0)  # short already
            low = np.maximum(np.floor(need - behind + 1e-6) - short, 0.0)
            need = np.where(counted[rows], low, need)
        model = (
            sub,
            objective[cols],
            hi[cols],
            need,
            p.row_ub[rows] - act[rows],
            p.integral[cols],
            lo[cols],
        )
        base_value = dot(objective, fixed)
        if screen and self._integer_infeasible(model):
            return Outcome(None, False, _INF)
        h = highs(*model)
        h.setOptionValue("mip_max_nodes", self.settings.nodes if nodes is None else nodes)
        h.setOptionValue("mip_rel_gap", self.settings.gap if gap is None else gap)
        if self.settings.abs_gap > 0:
            h.setOptionValue("mip_abs_gap", self.settings.abs_gap)
        if math.isfinite(target):
            h.setOptionValue("objective_target", target - base_value)
        if math.isfinite(cutoff):
            h.setOptionValue("objective_bound", cutoff - base_value)
        if start is not None:
            # HiGHS 1.16's presolve, handed a start, can call it optimal with a better plan
            # in the model (127 against a start at 128; recorded 1,000-job optima 6.8 %
            # too high). A neighbourhood's miss costs a chance, a proof's is a false claim.
            if proof:
                h.setOptionValue("presolve", "off")
            h.setSolution(len(cols), cols_idx(len(cols)), np.round(start[cols]))
        if not presolve:
            h.setOptionValue("presolve", "off")
        self._run(h, self._left())
        info = h.getInfo()
        status = h.getModelStatus()
        if info.primal_solution_status != 2:  # no feasible solution
            return Outcome(None, False, _INF)
        x = fixed.copy()
        sol = np.asarray(h.getSolution().col_value)
        x[cols] = np.where(p.integral[cols], np.round(sol), sol)
        proven = status == HighsModelStatus.kOptimal
        value = dot(objective, x)
        # "Optimal" is within the gap HiGHS was given, not at the optimum: its dual bound
        # is the bound (the plan's own value claimed a gap of 0 where it was up to 0.04 %).
        dual = float(info.mip_dual_bound) + base_value
        bound = min(dual, value) if math.isfinite(dual) else (value if proven else -_INF)
        return Outcome(x, proven, bound)

    def _integer_infeasible(self, model: tuple[Any, ...]) -> bool:
        """Whether HiGHS's root, without presolve, proves ``model`` has no whole plan.

        A count's first repair (the LP's split owners made whole, every other placement
        kept or dropped) may have a feasible LP and no whole plan: in the 20,000-job
        file's budget-tied group, the top tier's held count cannot then be met (the
        repairs of tiers 1 and 0: 4,070 and 7,714 variables). HiGHS's presolve took 0.79
        and 0.64 s to say so, its root without presolve 0.33 and 0.05 s. Without presolve
        a feasible repair's search is another one (the six 10,000-job batches' repairs
        solved so: synthetic seeds 3 and 8 placed 5 and 3 tier-0 jobs fewer), so this
        only screens: the root stops at its first plan, and a repair that may have one
        is solved as before. Measured in-process: the file planned in 15.3 s instead of
        17.6, the same plan; the six 10,000-job batches, the same plans, their times
        within noise.

        A feasible repair's root may spend seconds in cut rounds before its first plan
        (10,000-job trace seed 7: 5,867 variables, 1.2-1.4 s), so the screen stops after
        ``SCREEN_CHECKS`` of HiGHS's interrupt checks (in 1.15.1 with one thread, at
        fixed points of its root, cuts and heuristics: its own progress, not the
        clock). Each of the 77 screens of the six 10,000-job batches and the file that
        proved infeasibility (35) did so within 4 checks but one (11); replayed, the 77
        took 12.7 s in all, 4.7 s within 6 checks (34 still proved). Stopping early
        changes no plan: the repair then runs, and finds what it alone finds.

        Args:
            model: The sub-problem's arguments to :func:`highs`.

        Returns:
            Whether the root proved the sub-problem infeasible within its checks.
        """
        h = highs(*model)
        h.setOptionValue("presolve", "off")
        h.setOptionValue("mip_max_nodes", 1)
        # No cutoff: without presolve HiGHS may return a plan past its objective bound,
        # and with one an "infeasible" might not be the repair's own answer.
        h.setOptionValue("mip_max_improving_sols", 1)
        checks = 0

        def interrupt(kind: object, message: str, out: Any, into: Any, user: object) -> None:
            nonlocal checks
            checks += 1
            into.user_interrupt = checks > SCREEN_CHECKS

        h.setCallback(interrupt, None)
        h.startCallback(HighsCallbackType.kCallbackMipInterrupt)
        self._run(h, self._left())
        return bool(h.getModelStatus() == HighsModelStatus.kInfeasible)

    def improve(
        self,
        objective: FloatArray,
        lp: FloatArray,
        incumbent: FloatArray,
        good_enough: float,
        scope: BoolArray | None = None,
        *,
        feasible: bool = True,
        whole: bool = True,
    ) -> FloatArray:
        """Repair the LP solution, then re-solve neighbourhoods of the best plan.

        Args:
            objective: Cost per variable.
            lp: The LP solution.
            incumbent: The best feasible plan so far.
            good_enough: Stop once a plan costs at most this.
            scope: Variables the search may use; the others are set to 0 (the capacity
                they hold is released). None: all.
            feasible: False if the incumbent breaks a row (any plan found replaces it).
            whole: Try a count's first repair (the split owners made whole, nothing else
                moved). False when an earlier call already tried it on this LP: it does
                not depend on the neighbourhood size, so it would find the same plan.
                (A cost search repairs cluster by cluster instead, and ignores it.)

        Returns:
            The best feasible plan found (the incumbent, out of scope set to 0, if nothing
            better was).
        """
        p = self.problem
        self.bound = -_INF
        if scope is not None:
            incumbent = np.where(scope, incumbent, 0.0)
            lp = np.where(scope, lp, 0.0)
        best = incumbent
        best_value = dot(objective, best) if feasible else _INF

        def offer(x: FloatArray | None) -> None:
            nonlocal best, best_value
            value = _INF if x is None else dot(objective, x)
            if x is not None and value < best_value - 1e-9:
                best, best_value = x, value

        if best_value <= good_enough:
            return best
        if p.n <= self.settings.exact_below:
            # Small enough to solve whole (and exactly, in practice).
            every = np.ones(p.n, dtype=np.bool_) if scope is None else scope.copy()
            start = best if math.isfinite(best_value) else None
            nodes = 10 * self.settings.nodes
            out = self.solve_sub(
                objective,
                best,
                every,
                start,
                nodes=nodes,
                target=good_enough,
                cutoff=self._cutoff(best_value),
                proof=True,
            )
            offer(out.x)
            if scope is None and out.x is not None:
                self.bound = out.bound
            return best
        tag = _digest(objective)
        frac = np.abs(lp - np.round(lp)) > FRAC
        rounded = np.round(lp)
        split = np.unique(p.owner[frac & (p.owner >= 0)])
        if not len(split):
            offer(rounded if p.feasible(rounded) else None)
        else:
            # A count: the split owners whole (on their pools or with room), every other
            # placement kept or dropped but not moved; failing that, every owner on those
            # pools free. Cost: cluster by cluster (``by_cluster``; the first found nothing
            # in 28 of 30 10,000-job components). Else the neighbourhoods start as they are.
            hood = Hood(p, [lp], rounded, scope)
            owners = set(split.tolist())
            got = None
            if whole and scope is not None:
                made_whole = hood.free(owners, owners)
                keep = lp > FRAC
                bounds = (np.zeros(p.n), np.where(made_whole, p.ub, np.ceil(lp - FRAC)))
                got = self.solve_sub(
                    objective,
                    rounded,
                    made_whole | keep,
                    None,
                    bounds=bounds,
                    target=good_enough,
                    cutoff=self._cutoff(best_value),
                    gap=self._repair_gap(),
                    screen=True,
                ).x
            if got is None and scope is None:

                def exact(
                    base: FloatArray, free: BoolArray, short: int | None
                ) -> FloatArray | None:
                    return self._repair(objective, tag, base, free, short)

                got = by_cluster(hood, lp, split, objective, exact, self.settings.max_free)
            elif got is None:
                free = hood.free(hood.ring(split), owners)
                # Without a start, past twice a neighbourhood HiGHS's root costs more.
                if int(free.sum()) <= _REPAIR_NEIGHBOURHOODS * self.settings.max_free:
                    cutoff = self._cutoff(best_value)
                    got = self.solve_sub(
                        objective,
                        rounded,
                        free,
                        None,
                        target=good_enough,
                        cutoff=cutoff,
                        gap=self._repair_gap(),
                    ).x
            offer(got)
        tried: set[int] = set()
        # A neighbourhood is a fixed size, so a larger model needs more of them to be
        # covered as well: the rounds grow with the model (still a fixed number for it).
        rounds = self.settings.rounds * max(1, p.n // _ROUND_VARIABLES)
        if scope is not None:
            rounds *= self.settings.count_rounds
        stall = self.settings.stall
        if self.settings.count_tie > 0:
            # A count neighbourhood either places one job more or is cut off at its root
            # (``_cutoff``): a miss costs little, and the next one often succeeds.
            stall *= self.settings.count_rounds
        idle = 0
        pass_value = best_value
        # A round that finds nothing leaves ``best`` the same object: the next round's
        # Hood and disagreements are then the same, and are kept (on the 10,000-job trace
        # seed 8's largest group, Hoods were the most Python time of its cost stage).
        seen: FloatArray | None = None
        for _ in range(rounds):
            if best_value <= good_enough or self.timed_out or idle >= stall:
                break
            if best is not seen:
                seen = best
                hood = Hood(p, [best, lp], best, scope)
                differ = disagreement(p, objective, best, lp)
            seeds = [o for o in differ if o not in tried]
            if not seeds and best_value < pass_value:
                # Every disagreement was tried, but the plan moved since: try them again.
                tried.clear()
                pass_value = best_value
                seeds = list(differ)
            if not seeds:
                break
            owners, taken = hood.chunk(seeds, self.settings.max_free)
            tried.update(taken)
            before = best_value
            free = hood.free(owners, set(taken))
            cutoff = self._cutoff(best_value)
            offer(self.neighbourhood(objective, tag, best, free, target=good_enough, cutoff=cutoff))
            idle = idle + 1 if best_value >= before else 0
        if math.isfinite(best_value) and best_value > good_enough and not self.timed_out:
            # Last, the owners the LP never pointed at that could move somewhere cheaper
            # with room: a move the rounds made may have left them that room. In a count
            # search those are mostly the unplaced jobs with room, given a tenth of the
            # node limit: at the whole limit, four such hunts for a job more took the
            # 20,000-job file's count stage from 5.9 to 13.9 s; at a tenth, synthetic
            # 10,000 seed 8 places a tier-0 job more and skips the wider search (22.3 ->
            # 13.2 s).
            hood = Hood(p, [best], best, scope)
            owners = hood.cheaper_with_room(objective, self.settings.max_free)
            if owners:
                free = hood.free(owners, owners)
                few = max(1, self.settings.nodes // 10) if self.settings.count_tie > 0 else None
                cutoff = self._cutoff(best_value)
                offer(
                    self.neighbourhood(
                        objective, tag, best, free, nodes=few, target=good_enough, cutoff=cutoff
                    )
                )
        return best

    def neighbourhood(
        self,
        objective: FloatArray,
        tag: bytes,
        base: FloatArray,
        free: BoolArray,
        *,
        nodes: int | None = None,
        target: float = -_INF,
        cutoff: float = _INF,
    ) -> FloatArray | None:
        """Re-solve the ``free`` variables around ``base``, ``base`` as the start.

        A search's wider passes meet neighbourhoods they already solved, from the same
        plan, with no more nodes than then: a neighbourhood smaller than the narrower
        size is the same at the wider one (which a count search gives fewer nodes). On
        the 20,000-job file, 9 of its 81 large sub-solves, 1.9 s of its 15.3 s in them
        (the same 1,031- and 1,136-variable neighbourhoods at 66 nodes, then 33; the last
        neighbourhood of jobs with room at 6, then 3). HiGHS (1.15.1, one thread, a
        fixed seed) is deterministic, and its node limit only stops its search (it is
        read nowhere else; its own sub-MIPs get limits of their own): the solve with
        fewer nodes is the start of the one with more, and finds nothing better than it
        did. So a neighbourhood that found nothing better than ``base`` is recorded with
        its node limit, and not run again from ``base`` with no more nodes (one that
        found a better plan is not recorded: a caller moves to it). Keyed by what decides
        the answer: the objective, ``base``, ``free``, the target and cutoff, the gaps,
        and the rows by their number (``Problem.add_rows`` only appends).

        Args:
            objective: Cost per variable.
            tag: ``_digest(objective)``, computed once by the caller.
            base: The plan at hand: the values of the fixed variables, and the start.
            free: Variables left to the solver.
            nodes: Branch-and-bound node limit (default: the settings').
            target: As for :meth:`solve_sub`.
            cutoff: As for :meth:`solve_sub`.

        Returns:
            The plan the solver found (None if it found none, or the neighbourhood was
            solved before from ``base`` with at least as many nodes and found nothing
            better).
        """
        limit = self.settings.nodes if nodes is None else nodes
        key = (tag, _digest(base), _digest(free), target, cutoff, *self._decided_by())
        if self._searched.get(key, -1) >= limit:
            return None
        x = self.solve_sub(objective, base, free, base, nodes=nodes, target=target, cutoff=cutoff).x
        better = x is not None and dot(objective, x) < dot(objective, base) - 1e-9
        if not self.timed_out and not better:
            self._searched[key] = max(limit, self._searched.get(key, -1))
        return x

    def _decided_by(self) -> tuple[float, float, int]:
        """What else decides a sub-problem's answer: the gaps, and the rows by their number.

        ``Problem.add_rows`` only appends, and no row's bounds change in place.
        """
        s = self.settings
        return s.gap, s.abs_gap, len(self.problem.row_lb)

    def _repair(
        self,
        objective: FloatArray,
        tag: bytes,
        base: FloatArray,
        free: BoolArray,
        short: int | None,
    ) -> FloatArray | None:
        """One sub-problem of a cost repair (``by_cluster``), solved once per search.

        A cost search that stalls repairs the LP again in its wider pass, from the same
        LP: every cluster small enough at both sizes is the same sub-problem, and HiGHS,
        deterministic, gives the same answer (unless the safety ceiling stopped it; then
        no wider pass runs). On 10,000-job trace seed 7 one of 3,200 variables took 4.5 s,
        then 4.0 s again for the same plan. Its answer is kept, as the entries whose bits
        differ from ``base``, under what decides it: the objective (``tag``), ``base``,
        ``free``, ``short``, the node limit and gaps, and the rows, by their number
        (``Problem.add_rows`` only appends; no row's bounds change in place). Measured on
        the six 10,000-job batches (a long safety ceiling, 2026-12-07 10:53-10:59 UTC):
        the same plans; trace seeds 7 and 8 and synthetic seed 8 did 6 %, 3 % and 0.4 %
        less work, the six 9 % less CPU in all (392 -> 355 s).

        Args:
            objective: Cost per variable.
            tag: ``_digest(objective)``, computed once by the caller.
            base: Values of the fixed variables (fractions kept).
            free: Variables left to the solver.
            short: Jobs a count row may fall short by (``solve_sub``).

        Returns:
            The plan, or None if the solver found none.
        """
        key = (tag, _digest(base), _digest(free), short, self.settings.nodes, *self._decided_by())
        if key not in self._repaired:
            x = self.solve_sub(objective, base, free, None, exact=True, short=short).x
            if x is None:
                self._repaired[key] = None
            else:
                # By bits, so the plan rebuilt is the solver's to the sign of a zero.
                moved = np.nonzero(x.view(np.uint64) != base.view(np.uint64))[0]
                self._repaired[key] = (moved, x[moved])
        kept = self._repaired[key]
        if kept is None:
            return None
        out: FloatArray = base.copy()
        out[kept[0]] = kept[1]
        return out

    def place_left_out(
        self, objective: FloatArray, incumbent: FloatArray, good_enough: float, scope: BoolArray
    ) -> FloatArray:
        """Neighbourhoods seeded by the jobs no plan places, for a count still short.

        The rounds of :meth:`improve` free the owners where the plan and the LP disagree
        and every owner on the pools they use; a job that neither the plan nor the LP
        places uses no pool (the count LP is degenerate, and its tie-break may leave a job
        at 0 for a cheaper twin), so no ring ever frees it, and a job that fits stays out
        (found by review: 202 of 400 jobs placed where 301 fit). Here each such job whose
        placing counts (``Hood.gainers``) seeds a neighbourhood with every owner on the
        pools of its cheapest options (as many seeds as fit one neighbourhood), until one
        finds nothing (on the 20,000-job file four misses in a row took 4 s). A seed whose
        ring alone is past a neighbourhood is passed over (on the 20,000-job file's pools,
        each listed by up to 1,969 jobs, such rings were seconds each). Run last, when the
        other rounds leave the count short: run first, it changed the 10,000-job batches'
        and the file's searches for up to 6 and 18 s more.

        Args:
            objective: A count objective (``Settings.count_tie`` set).
            incumbent: The best plan so far (feasible).
            good_enough: Stop once a plan is worth at most this.
            scope: Variables the search may use.

        Returns:
            The best plan found (the incumbent if none better).
        """
        tag = _digest(objective)
        best = incumbent
        best_value = dot(objective, best)
        tried: set[int] = set()
        idle = False
        while best_value > good_enough and not self.timed_out and not idle:
            hood = Hood(self.problem, [best], best, scope)
            seeds = [o for o in hood.gainers(objective) if o not in tried]
            owners, taken = hood.chunk(seeds, self.settings.max_free, strict=True)
            if not taken:
                break
            tried.update(taken)
            free = hood.free(owners, set(taken))
            cutoff = self._cutoff(best_value)
            x = self.neighbourhood(objective, tag, best, free, target=good_enough, cutoff=cutoff)
            value = _INF if x is None else dot(objective, x)
            if x is not None and value < best_value - 1e-9:
                best, best_value = x, value
            else:
                idle = True
        return best

    def shift(
        self,
        objective: FloatArray,
        incumbent: FloatArray,
        good_enough: float,
        scope: BoolArray,
        counted: IntArray,
    ) -> FloatArray:
        """One HiGHS root over the short tier's every option and the plan's jobs in its way.

        A count's last step, after its trades (``count._widen``). Free: every variable of
        the tier being counted; of every owner in ``scope`` whose plan uses a pool the tier
        can use, the variables the plan uses (on any pool), so a held tier's job may make
        way (drop out, where its held count allows, or move to another option its class
        already uses); and the used variables no owner has. Every other variable keeps its
        value in the plan (the options it leaves unused stay 0), but lower tiers' are 0 (a
        count search's lower tiers only hold capacity; the count stage puts back what still
        fits). The neighbourhoods link owners through the pools they use, and the moves that
        place a tier's last jobs may span more pools than any neighbourhood holds: on
        synthetic seeds 3 and 7 (10,000 jobs) the count stage ended three and one tier-0
        jobs short of what HiGHS finds on the whole count model (``bench/countgap.py``,
        whose plan for them changed owners in 57 and 83 limited pools). This step places
        them (on an AMD EPYC: 1.1-1.5 and 1.7-2.1 s, with 10,488 of 74,318 and 10,505 of
        82,088 variables free), and no other plan of the planner benchmark changed (the
        fifteen 1,000-job batches never get here: they are solved whole).

        HiGHS runs its root only (one node), without presolve. With a tenth of the node
        limit, both found their jobs within one node too. On the 20,000-job file's
        budget-tied group, where it finds nothing, with every variable the plan uses free
        (12,909 of 33,870), that tenth took 5.7 s, and HiGHS's presolve alone was 5.5 s
        of it (its own timing); the root without presolve took 2.7-3.0 s, and 1.35 s with
        only the owners on the tier's pools (7,133 free, 6,878 of them the tier's).
        Without presolve the two successes found other plans with the same counts. The
        10,000-job batches' plans and work are the same with or without that restriction.

        Only a plan that places more of the tier's jobs is taken: HiGHS without presolve
        may return a plan past its cutoff, and a plan with the same count and a cheaper
        tie-break would only move the start of the tiers below.

        Args:
            objective: A count objective (``Settings.count_tie`` set).
            incumbent: The best plan so far (feasible).
            good_enough: Stop once a plan is worth at most this.
            scope: Variables the search may use (the counted tier and those above).
            counted: The counted tier's variables.

        Returns:
            The plan found, or the incumbent (the same object) if it places no job more.
        """
        p = self.problem
        base = np.where(scope, incumbent, 0.0)
        used = base > FRAC
        # Only the owners holding a pool the tier can use keep their used options free:
        # the others make way only through chains of held jobs (rare: no benchmark plan
        # changed without them), and on the file they were most of the sub-problem.
        pools = p.pool[counted]
        held = used & np.isin(p.pool, pools[pools >= 0]) & (p.owner >= 0)
        free = used & (np.isin(p.owner, p.owner[held]) | (p.owner < 0))
        free[counted] = True
        value = dot(objective, base)
        out = self.solve_sub(
            objective,
            base,
            free,
            base,
            nodes=1,
            target=good_enough,
            cutoff=self._cutoff(value),
            presolve=False,
        )
        if out.x is not None and out.x[counted].sum() > incumbent[counted].sum() + 0.5:
            return out.x
        return incumbent

    def _repair_gap(self) -> float:
        """The relative gap at which a count's repair stops (``Settings.repair_gap``)."""
        return max(self.settings.gap, self.settings.repair_gap)

    def substitute(
        self,
        objective: FloatArray,
        lp: FloatArray,
        incumbent: FloatArray,
        good_enough: float,
        scope: BoolArray | None = None,
    ) -> FloatArray:
        """One neighbourhood of trades within tiers, for a search stalled short of its goal.

        Its owners: where the plan and the LP disagree, and per held count the jobs the
        plan pays most for and the cheapest it leaves out (``Hood.substitutes``; in a count
        search also those of the tier it counts), with their rings and their cheapest
        options. Measured on the 20,000-job file's budget-tied group:

        - its count search placed 3,583 tier-0 jobs after every wider pass; this places
          the 3,584th in about 1 s (HiGHS's whole-model root, from that plan: 3,584 in
          20-24 s);
        - at the counts before that, its cost search stalled 6.6 % above the LP bound
          after its wider pass (337,248; 43,415 variables), and this took it to 1.0 %
          above (319,604) in 0.5 s, below what HiGHS's root found from the count stage's
          plan in 22 s (319,979); at the new counts it stalls 4.6 % above, and this takes
          it to 4.1 % (0.5 s), where HiGHS's root finds 0.02 % less in 25 s and proves a
          bound 3.5 % below.

        Args:
            objective: Cost per variable.
            lp: The LP solution.
            incumbent: The best feasible plan so far.
            good_enough: Stop once a plan costs at most this.
            scope: Variables the search may use (a count search's tiers); None: all.

        Returns:
            The better plan: what the neighbourhood found, or the incumbent (the same
            object) if it found nothing better.
        """
        p = self.problem
        base = incumbent if scope is None else np.where(scope, incumbent, 0.0)
        near = lp if scope is None else np.where(scope, lp, 0.0)
        hood = Hood(p, [base, near], base, scope)
        seeds = set(hood.substitutes(objective, base, _SUBSTITUTES))
        if scope is not None:
            seeds.update(hood.gainers(objective)[:_SUBSTITUTES])
        seeds.update(disagreement(p, objective, base, near))
        owners = hood.ring(np.array(sorted(seeds), dtype=np.int64))
        cheap = np.isin(p.owner, sorted(seeds)) & (p.rank < _SUBSTITUTE_OPTIONS) & hood.ok
        free = hood.free(owners, seeds) | cheap
        if not seeds or int(free.sum()) > _SUBSTITUTE_NEIGHBOURHOODS * self.settings.max_free:
            return incumbent
        value = dot(objective, base)
        cutoff = self._cutoff(value)
        x = self.neighbourhood(
            objective, _digest(objective), base, free, target=good_enough, cutoff=cutoff
        )
        if x is not None and dot(objective, x) < value - 1e-9:
            return x
        return incumbent

    @contextmanager
    def widened(self, factor: int) -> Iterator[None]:
        """Neighbourhoods ``factor`` times wider inside the block (the settings restored after).

        A search that stalls on neighbourhoods too small for the moves left is given one
        more pass with wider ones (a count short of its bound, a cost far above its stop).
        A count's wider passes get ``factor`` times fewer branch-and-bound nodes (about
        the same work per neighbourhood, which is ``factor`` times larger): every solve
        inside the block, so the rounds, the ring repair without a start, the last
        neighbourhood of jobs with room (a tenth of that again: 6 and 3 nodes at the
        default 200) and ``place_left_out``. Where a budget row ties the jobs, their trees
        ran to the node limit: on the 20,000-job file, 1.1-2.3 s each at 200 nodes, 4.5 s
        of its count stage. Measured in-process, one run each, default threads, on
        2026-12-07 08:50-09:00 UTC: the file 15.7 -> 12.2 s (at 50, 20 and 10 nodes for
        both passes 11.9, 11.1 and 10.8 s), the same plan; the six 10,000-job batches' and
        the fifteen 1,000-job batches' plans the same to the cent. Cost searches and the
        trades (``substitute``, run outside the block) keep the whole limit.
        """
        kept = self.settings
        nodes = max(1, kept.nodes // factor) if kept.count_tie > 0 else kept.nodes
        self.settings = replace(kept, max_free=kept.max_free * factor, nodes=nodes)
        try:
            yield
        finally:
            self.settings = kept

    def _cutoff(self, value: float) -> float:
        """The most a plan may be worth to improve on one worth ``value`` (count searches).

        A count objective is minus the jobs placed plus a tie-break in [0, count_tie), so
        a plan worth ``value`` places ``ceil(-value)`` jobs, and only a plan placing one
        more improves on it; every such plan is worth less than ``-(jobs + 1) + count_tie``.
        """
        tie = self.settings.count_tie
        if tie <= 0 or not math.isfinite(value):
            return _INF
        jobs = math.ceil(-value - 1e-9)
        return -(jobs + 1) + tie

    def prove(
        self, objective: FloatArray, incumbent: FloatArray | None, nodes: int = 2**31 - 1
    ) -> Outcome:
        """Solve the whole model (to optimality unless ``nodes`` stops it), warm-started."""
        every = np.ones(self.problem.n, dtype=np.bool_)
        base = np.zeros(self.problem.n) if incumbent is None else incumbent
        return self.solve_sub(objective, base, every, incumbent, nodes=nodes, proof=True)
