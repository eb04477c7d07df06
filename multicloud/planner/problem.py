"""An integer program as arrays, and HiGHS instances over it (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from highspy import HighsVarType, ObjSense
from highspy._core import _Highs
from scipy.sparse import csc_array, csr_array, vstack

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FRAC = 1e-6  # farther than this from an integer counts as fractional


@dataclass
class Problem:
    """An integer program ``min c·x`` over ``row_lb ≤ A x ≤ row_ub``, ``lb ≤ x ≤ ub``.

    Attributes:
        a: Constraint matrix (rows × variables).
        row_lb: Row lower bounds.
        row_ub: Row upper bounds.
        ub: Variable upper bounds (every lower bound is 0).
        integral: Which variables are integer.
        owner: The job (or class of identical jobs) each variable belongs to; a
            neighbourhood frees whole owners.
        pool: The capacity row of the pool a variable draws on (-1: none that can fill).
        use: Nodes one unit of a variable takes from its pool.
        rank: Order of a variable among its owner's options (0: cheapest), for the first
            LP of a large model.
        option: Which variables are a job's options (not a service's "placed" or spread
            flags); None: every variable.
    """

    a: Any
    row_lb: FloatArray
    row_ub: FloatArray
    ub: FloatArray
    integral: BoolArray
    owner: IntArray
    pool: IntArray
    use: FloatArray
    rank: IntArray
    option: BoolArray | None = None

    @property
    def n(self) -> int:
        """Number of variables."""
        return int(self.ub.shape[0])

    @cached_property
    def by_owner(self) -> tuple[IntArray, IntArray]:
        """The variables in owner order (stable), and where each owner starts in it.

        Owner ``o``'s variables are ``order[starts[o] : starts[o + 1]]``. Kept: the owners
        never change (rows are added, never variables), and sorting 100,000 of them for
        every neighbourhood was a tenth of its set-up.
        """
        order = np.argsort(self.owner, kind="stable")
        starts = np.searchsorted(self.owner[order], np.arange(int(self.owner.max()) + 2))
        for shared in (order, starts):  # every Hood of the problem reads them
            shared.setflags(write=False)
        return order, starts

    @property
    def counted(self) -> BoolArray:
        """The rows that hold a tier's count (a lower bound only; no other row has one)."""
        return (self.row_lb > 0) & np.isinf(self.row_ub)

    def add_rows(self, rows: Sequence[tuple[IntArray, float, float]]) -> None:
        """Append rows with coefficient 1 on the given variables, as ``lo ≤ sum ≤ hi``."""
        if not rows:
            return
        data: list[float] = []
        index: list[int] = []
        ptr = [0]
        for idx, _, _ in rows:
            index.extend(int(i) for i in idx)
            data.extend(1.0 for _ in idx)
            ptr.append(len(index))
        extra = csr_array((data, index, ptr), shape=(len(rows), self.n))
        self.a = csc_array(vstack([self.a, extra], format="csc"))
        self.row_lb = np.concatenate([self.row_lb, [lo for _, lo, _ in rows]])
        self.row_ub = np.concatenate([self.row_ub, [hi for _, _, hi in rows]])

    def feasible(self, x: FloatArray, tol: float = 1e-6) -> bool:
        """True if ``x`` satisfies every bound and row (and integrality)."""
        if np.any(x < -tol) or np.any(x > self.ub + tol):
            return False
        if np.any(np.abs(x[self.integral] - np.round(x[self.integral])) > tol):
            return False
        ax = self.a @ x
        return bool(np.all(ax >= self.row_lb - tol) and np.all(ax <= self.row_ub + tol))

    def refill(self, x: FloatArray, extra: FloatArray, where: BoolArray) -> FloatArray:
        """Add ``extra``'s values on ``where`` to ``x``, owner by owner, where rows allow.

        Args:
            x: A feasible plan.
            extra: Another plan (e.g. the walk's).
            where: Variables whose values may be added.

        Returns:
            ``x`` with the owners of ``extra`` that still fit added back.
        """
        add = np.where(where & (x < FRAC), extra, 0.0)
        cols = np.nonzero(add > FRAC)[0]
        if not len(cols):
            return x
        x = x.copy()
        # Owner by owner in plain Python over the owners' nonzeros, gathered once: a sparse
        # column slice per owner was a third of a second of the demo fleet's count stage.
        # The sums are the same, term by term, as the slice's product.
        cols = cols[np.argsort(self.owner[cols], kind="stable")]
        a = csc_array(self.a)
        starts = a.indptr[cols]
        lengths = a.indptr[cols + 1] - starts
        firsts = np.cumsum(lengths) - lengths  # each column's first nonzero in the gathering
        at = np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()))
        rows_of = a.indices[at].tolist()
        terms = (a.data[at] * np.repeat(add[cols], lengths)).tolist()
        # each owner's columns, and their nonzeros, from one cut to the next
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(self.owner[cols])) + 1, [len(cols)]])
        col_cut = cuts.tolist()
        nz_cut = np.concatenate([firsts, [len(at)]])[cuts].tolist()
        act = (self.a @ x).tolist()
        lo, hi = self.row_lb.tolist(), self.row_ub.tolist()
        tol = 1e-6
        taken: list[int] = []
        for k in range(len(col_cut) - 1):
            delta: dict[int, float] = {}
            span = slice(nz_cut[k], nz_cut[k + 1])
            for r, v in zip(rows_of[span], terms[span], strict=True):
                delta[r] = delta.get(r, 0.0) + v
            if all(lo[r] - tol <= act[r] + d <= hi[r] + tol for r, d in delta.items() if d):
                for r, d in delta.items():
                    act[r] += d
                taken.extend(range(col_cut[k], col_cut[k + 1]))
        mine = cols[taken]
        x[mine] = add[mine]
        return x


def dot(a: FloatArray, b: FloatArray) -> float:
    """``a · b`` summed in numpy's own pairwise order, the same on every CPU.

    ``a @ b`` on two vectors calls the BLAS's ``ddot``, whose kernel OpenBLAS picks by CPU,
    each summing in its own order; the search compares plans by these sums and follows
    their ties, so the same snapshot gave other plans under other kernels (measured on one
    machine by forcing OpenBLAS's kernel: the 20,000-job file and 10,000-job batches).
    An elementwise product is exactly rounded, and numpy's pairwise sum has one order in
    its source, whatever SIMD the CPU has (for a given numpy version).

    Args:
        a: A vector.
        b: A vector of the same length.

    Returns:
        Their dot product.

    Raises:
        ValueError: If the lengths differ (``@`` would refuse them; a product broadcasts).
    """
    if a.shape != b.shape:
        raise ValueError(f"dot of shapes {a.shape} and {b.shape}")
    return float(np.add.reduce(np.multiply(a, b)))


def cols_idx(n: int) -> npt.NDArray[np.int32]:
    """Indices 0..n-1 as HiGHS wants them."""
    return np.arange(n, dtype=np.int32)


def highs(
    a: Any,
    cost: FloatArray,
    ub: FloatArray,
    row_lb: FloatArray,
    row_ub: FloatArray,
    integral: BoolArray | None,
    lb: FloatArray | None = None,
) -> _Highs:
    """A silent HiGHS instance: ``min cost·x, row_lb ≤ a x ≤ row_ub, lb (or 0) ≤ x ≤ ub``."""
    h = _Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("random_seed", 0)
    # One thread: the machine is shared with the service's other work, and a single
    # thread's search path cannot depend on how threads were scheduled.
    h.setOptionValue("threads", 1)
    if integral is not None:
        # Feasibility jump and restarts cost the neighbourhoods' small models more time
        # than they save (measured on the planner benchmark's contended batches).
        h.setOptionValue("mip_heuristic_run_feasibility_jump", False)
        h.setOptionValue("mip_allow_restart", False)
        # The root reduced-cost heuristic and symmetry detection cost the repairs and the
        # neighbourhoods seconds at the root and found nothing the rest did not (measured:
        # the contended batches' plans as good or better, fewer seconds).
        h.setOptionValue("mip_heuristic_run_root_reduced_cost", False)
        h.setOptionValue("mip_detect_symmetry", False)
    n = a.shape[1]
    kinds = (
        np.zeros(n, dtype=np.int32)
        if integral is None
        else np.where(integral, int(HighsVarType.kInteger.value), 0).astype(np.int32)
    )
    h.passModel(
        n,
        a.shape[0],
        int(a.nnz),
        1,  # column-wise
        int(ObjSense.kMinimize.value),
        0.0,
        np.ascontiguousarray(cost, dtype=np.float64),
        np.zeros(n) if lb is None else np.ascontiguousarray(lb, dtype=np.float64),
        np.ascontiguousarray(ub, dtype=np.float64),
        np.ascontiguousarray(row_lb, dtype=np.float64),
        np.ascontiguousarray(row_ub, dtype=np.float64),
        a.indptr.astype(np.int32),
        a.indices.astype(np.int32),
        np.ascontiguousarray(a.data, dtype=np.float64),
        kinds,
    )
    return h
