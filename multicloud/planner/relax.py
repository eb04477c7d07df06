"""The LP relaxation of a search, kept on one HiGHS instance (docs/architecture.md).

Rows are added, costs changed and the basis reused between objectives. Large models start
from each job's cheapest options; columns the duals price in are added until none prices
in, so the bound is the bound of the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from highspy import HighsModelStatus
from highspy._core import _Highs
from scipy.sparse import csc_array, csr_array

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
from multicloud.planner.settings import Settings

_PRICE_TOL = 1e-7  # reduced cost below -this prices a column into the LP
_INF = math.inf
_PRIMAL_SIMPLEX = 4  # HiGHS's simplex_strategy for primal simplex
_DUAL_SIMPLEX = 1  # and for (serial) dual simplex, HiGHS's default


class KeptLP:
    """The LP part of :class:`~multicloud.planner.search.Search`, and its HiGHS runs.

    The search (a dataclass) holds the state named here; this class only reads and
    updates it.
    """

    problem: Problem
    settings: Settings
    work: int
    seconds: float
    timed_out: bool
    _lp: _Highs | None
    _cols: IntArray
    _active: BoolArray
    _lp_rows: int

    def relax(
        self,
        objective: FloatArray,
        keep: FloatArray | None = None,
        out: IntArray | None = None,
    ) -> tuple[FloatArray, float]:
        """Solve the LP relaxation, pricing in columns until none improves it.

        Args:
            objective: Cost per variable (minimised).
            keep: A plan whose columns must be in the LP (so that rows it satisfies stay
                feasible in the restricted LP).
            out: Variables held at 0 for this solve only (their bounds are restored
                after it, the basis kept).

        Returns:
            The LP solution over all variables and its value (a lower bound of the
            integer program, with ``out`` at 0).
        """
        if out is None:
            return self._relax(objective, keep)
        with self._held_at_zero(out):
            return self._relax(objective, keep)

    def _relax(self, objective: FloatArray, keep: FloatArray | None) -> tuple[FloatArray, float]:
        p = self.problem
        if self._lp is None:
            first = p.rank < self.settings.first_options if p.n > self.settings.large else None
            self._open(first)
        lp = self._lp
        assert lp is not None
        self._sync_rows()
        want = np.zeros(p.n, dtype=np.bool_)
        if keep is not None:
            want |= keep > FRAC
        if np.any(want & ~self._active):
            self._add_cols(np.nonzero(want & ~self._active)[0], objective)
        cols = self._cols
        lp.changeColsCost(len(cols), cols_idx(len(cols)), objective[cols])
        at = p.a.T.tocsr()
        strategy = lp.getOptionValue("simplex_strategy")[1]
        try:
            while True:
                self._run(lp, self._left())
                status = lp.getModelStatus()
                if status != HighsModelStatus.kOptimal:
                    break
                duals = np.asarray(lp.getSolution().row_dual)
                reduced = objective - at @ duals
                scale = _PRICE_TOL * max(1.0, float(np.abs(objective).max(initial=0.0)))
                new = np.nonzero(~self._active & (reduced < -scale))[0]
                if not len(new):
                    break
                self._add_cols(new, objective)
                if self.settings.count_tie > 0:
                    # New columns enter at zero: the basis stays primal feasible, and on a
                    # count LP (massively degenerate) primal simplex goes on from it far
                    # faster than dual simplex repairs its dual feasibility (10,000-job
                    # trace seed 7: 3.1 -> 0.5 s). Cost LPs, whose new columns mostly
                    # enter the basis, re-solve faster with dual simplex (1.4 s against 2.0).
                    lp.setOptionValue("simplex_strategy", _PRIMAL_SIMPLEX)
        finally:
            lp.setOptionValue("simplex_strategy", strategy)
        x = np.zeros(p.n)
        if lp.getModelStatus() == HighsModelStatus.kInfeasible and not self._active.all():
            # The first options alone cannot meet the rows: bring in every column.
            self._add_cols(np.nonzero(~self._active)[0], objective)
            return self._relax(objective, keep)
        if lp.getModelStatus() != HighsModelStatus.kOptimal:
            return x, -_INF
        x[self._cols] = np.asarray(lp.getSolution().col_value)
        return x, dot(objective, x)

    def primal_resolves(self) -> None:
        """Re-solve the kept LP with primal simplex from now on.

        After a row its plan already meets, or a new objective, the kept basis is still
        primal feasible, so primal simplex continues from it; dual simplex first has to
        repair the basis's dual feasibility (thousands of iterations on a count model).
        """
        if self._lp is not None:
            self._lp.setOptionValue("simplex_strategy", _PRIMAL_SIMPLEX)

    def restart(self) -> None:
        """Solve the kept LP's next objective from scratch, with dual simplex.

        A count objective of a lower tier moves the LP's plan far from the upper tier's:
        primal simplex from that basis took 17,300 iterations (2.5 s) on the 20,000-job
        file's last tier, dual simplex from HiGHS's crash basis 14,165 (0.54-0.58 s).
        """
        if self._lp is not None:
            self._lp.clearSolver()
            self._lp.setOptionValue("simplex_strategy", _DUAL_SIMPLEX)
            # Unpresolved: on that tier's LP, read back from a file, 0.47 s against 2.1 s.
            self._lp.setOptionValue("presolve", "off")

    def relax_without(
        self, objective: FloatArray, out: IntArray, keep: FloatArray | None = None
    ) -> float:
        """The LP's value with the variables ``out`` held at 0 (inf: no LP plan then)."""
        with self._held_at_zero(out):
            _, value = self._relax(objective, keep)
            assert self._lp is not None
            # read before the bounds are restored, which resets HiGHS's model status
            if self._lp.getModelStatus() == HighsModelStatus.kInfeasible:
                value = _INF
        return value

    @contextmanager
    def _held_at_zero(self, out: IntArray) -> Iterator[None]:
        """Hold the variables ``out`` at 0, in the problem and the kept LP, then restore."""
        p = self.problem
        ub = p.ub[out].copy()
        p.ub[out] = 0.0
        try:
            self._bound(out)
            yield
        finally:
            p.ub[out] = ub
            self._bound(out)

    def _bound(self, cols: IntArray) -> None:
        """Give the kept LP's copies of ``cols`` the problem's upper bounds."""
        if self._lp is None:
            return
        at = np.nonzero(np.isin(self._cols, cols))[0]
        ub = self.problem.ub[self._cols[at]]
        self._lp.changeColsBounds(len(at), at.astype(np.int32), np.zeros(len(at)), ub)

    def _open(self, first: BoolArray | None) -> None:
        p = self.problem
        active = np.ones(p.n, dtype=np.bool_) if first is None else first.copy()
        self._active = active
        self._cols = np.nonzero(active)[0]
        sub = csc_array(p.a[:, self._cols])
        self._lp = highs(sub, np.zeros(len(self._cols)), p.ub[self._cols], p.row_lb, p.row_ub, None)
        if not self.settings.lp_presolve:
            self._lp.setOptionValue("presolve", "off")
        self._lp_rows = p.a.shape[0]

    def _sync_rows(self) -> None:
        lp = self._lp
        p = self.problem
        assert lp is not None
        while self._lp_rows < p.a.shape[0]:
            r = self._lp_rows
            row = csr_array(p.a[[r], :][:, self._cols])
            idx = row.indices.astype(np.int32)
            lp.addRow(float(p.row_lb[r]), float(p.row_ub[r]), len(idx), idx, row.data)
            self._lp_rows += 1

    def _add_cols(self, new: IntArray, objective: FloatArray) -> None:
        lp = self._lp
        p = self.problem
        assert lp is not None
        sub = csc_array(p.a[:, new])
        lp.addCols(
            len(new),
            np.ascontiguousarray(objective[new], dtype=np.float64),
            np.zeros(len(new)),
            p.ub[new],
            int(sub.nnz),
            sub.indptr.astype(np.int32),
            sub.indices.astype(np.int32),
            sub.data,
        )
        self._active[new] = True
        self._cols = np.concatenate([self._cols, new])

    def _left(self) -> float:
        return max(self.settings.seconds - self.seconds, 0.01)

    def _run(self, h: _Highs, seconds: float) -> None:
        h.setOptionValue("time_limit", seconds)
        before = h.getRunTime()
        h.run()
        self.seconds += h.getRunTime() - before
        info = h.getInfo()
        self.work += max(int(info.simplex_iteration_count), 0) + max(int(info.mip_node_count), 0)
        if h.getModelStatus() == HighsModelStatus.kTimeLimit:
            self.timed_out = True
