"""Work limits of the optimiser's search (:mod:`.search`), from the planner's policy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Work limits of one search (see ``Policy`` for their meaning).

    Attributes:
        nodes: Branch-and-bound nodes per sub-problem (``Search.widened`` divides a
            count's by its factor).
        rounds: Neighbourhood rounds per objective after the repair (per 20,000
            variables of the model).
        max_free: Most variables one neighbourhood may free.
        gap: Relative gap at which a sub-problem stops (a count's: 0, it stops on
            ``abs_gap``), and a model solved whole. The cost search's rounds stop at the
            stop the optimiser hands ``improve`` (``Policy.cost_stop_gap``).
        seconds: Safety ceiling on HiGHS's run time, for the whole search.
        prove: Run the whole model to proven optimality after the neighbourhoods.
        first_options: Options per job in the first LP of a large model.
        large: Models with more variables than this start the LP from ``first_options``.
        exact_below: Models with at most this many variables are solved whole (with ten
            times the node limit) instead of by neighbourhoods.
        count_rounds: Count objectives (a search with a scope) get this many times the
            rounds: their neighbourhoods are small, and each round places more jobs,
            the first objective.
        stall: Neighbourhoods in a row that may find nothing better before the search
            of an objective stops (the worst-looking disagreements come first, so the
            later ones rarely pay off on a large model). A count search allows
            ``count_rounds`` times as many: its misses end at their root (``count_tie``).
        abs_gap: Absolute gap at which a sub-problem stops (0: HiGHS's default). A count
            objective sets it just under one job less its tie-break: a sub-problem
            whose bound is that close cannot place another job.
        count_tie: A count search (objective: minus one per job of the tier, plus a
            price tie-break worth less than this): a plan is only better if it places
            one more job, so each sub-problem cuts off every plan that does not
            (HiGHS's objective bound) and ends as soon as its bound rules that job out.
            0: not a count search.
        repair_gap: Relative gap at which a count's repairs (its sub-problems without a
            start, on the LP's split jobs) stop, if above ``gap``: a repair only hands the
            neighbourhoods a plan to start from, and they place the jobs it leaves out.
        lp_presolve: Let HiGHS presolve the kept LP's first solve. The cost stage turns it
            off: on the demo fleet's 20,000-job file its LP took 0.42 s without, 0.65 s with.
    """

    nodes: int = 200
    rounds: int = 6
    max_free: int = 1_000
    gap: float = 1e-3
    seconds: float = 300.0
    prove: bool = False
    first_options: int = 6
    large: int = 40_000
    exact_below: int = 1_000
    count_rounds: int = 4
    stall: int = 4
    abs_gap: float = 0.0
    count_tie: float = 0.0
    repair_gap: float = 0.0
    lp_presolve: bool = True
