"""Neighbourhoods of a plan for the search: owners linked through the pools they use."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
from scipy.sparse import csc_array, csr_array

from multicloud.planner.graph import component_labels
from multicloud.planner.problem import FRAC, BoolArray, FloatArray, IntArray, Problem

_ROOM_OPTIONS = 3  # options with spare room a neighbourhood gives each freed job
_REACH = 6  # cheapest options of a failed repair's owners whose pools are freed
_CLUSTER_NEIGHBOURHOODS = 5  # largest cluster repaired at once, in neighbourhood sizes
_RETRY_NEIGHBOURHOODS = 3  # largest retried repair, in neighbourhood sizes
_FILLERS = 200  # cheapest options with room a retried repair may meet counts with
_COUNT_NEIGHBOURHOODS = 20  # largest final repair of the counts, in neighbourhood sizes


def disagreement(p: Problem, objective: FloatArray, plan: FloatArray, lp: FloatArray) -> list[int]:
    """Owners where the plan and the LP differ, those the plan pays most for first."""
    diff = np.abs(plan - lp) > FRAC
    owners = p.owner[diff & (p.owner >= 0)]
    if not len(owners):
        return []
    loss = np.bincount(
        p.owner[p.owner >= 0],
        weights=(objective * (plan - lp))[p.owner >= 0],
        minlength=int(p.owner.max()) + 1,
    )
    uniq = np.unique(owners)
    order = np.lexsort((uniq, -loss[uniq]))  # most loss first, then by owner
    return [int(o) for o in uniq[order]]


class Hood:
    """Neighbourhoods of one plan: owners linked through the limited pools they use.

    Args:
        p: The problem.
        plans: Plans whose used pools link owners (the incumbent, the LP).
        base: The plan the neighbourhood is cut from (its spare capacity counts as room).
        scope: Variables that may be freed (None: all).
    """

    def __init__(
        self, p: Problem, plans: list[FloatArray], base: FloatArray, scope: BoolArray | None
    ) -> None:
        self.p = p
        used = np.zeros(p.n, dtype=np.bool_)
        for x in plans:
            used |= x > FRAC
        placed = used.copy()
        used &= p.pool >= 0
        if scope is not None:
            used &= scope
        self.pools_of: dict[int, set[int]] = {}
        self.users_of: dict[int, set[int]] = {}
        # Over Python ints of the distinct (owner, pool) pairs: numpy scalars one variable
        # at a time were a third of a cost round's own time on a 250,000-variable model.
        at = np.nonzero(used & (p.owner >= 0))[0]
        width = int(p.row_lb.shape[0]) + 1
        pairs = np.unique(p.owner[at] * width + p.pool[at])
        for o, r in zip((pairs // width).tolist(), (pairs % width).tolist(), strict=True):
            self.pools_of.setdefault(o, set()).add(r)
            self.users_of.setdefault(r, set()).add(o)
        self._scope = scope
        self._placed = placed
        slack = p.row_ub - p.a @ np.round(base)
        room = (p.pool < 0) | (base > FRAC)
        limited = p.pool >= 0
        room[limited] |= p.use[limited] <= slack[p.pool[limited]] + 1e-9
        ok = p.owner >= 0
        if scope is not None:
            ok &= scope
        self.ok = ok
        self.room = room & ok
        self.base_cols = (base > FRAC) & ok
        self.by_owner, self.starts = p.by_owner
        self.sizes = np.bincount(p.owner[ok], minlength=int(p.owner.max()) + 1)
        self._size_of: list[int] = self.sizes.tolist()

    def cols(self, o: int) -> IntArray:
        """Variables of owner ``o``."""
        return self.by_owner[self.starts[o] : self.starts[o + 1]]

    def ring(self, seeds: IntArray) -> set[int]:
        """The seeds and every owner using a pool they use."""
        owners = {int(o) for o in seeds}
        for o in list(owners):
            for r in self.pools_of.get(o, ()):
                owners |= self.users_of.get(r, set())
        return owners

    def chunk(
        self, seeds: list[int], limit: int, strict: bool = False
    ) -> tuple[set[int], list[int]]:
        """Seeds (in order) and their rings, while the freed variables stay under ``limit``.

        The first seed is always taken, whatever its ring's size, unless ``strict``: then a
        seed whose ring alone is past the limit is left out (and none may be taken).
        """
        owners: set[int] = set()
        taken: list[int] = []
        size = 0
        size_of = self._size_of
        for s in seeds:
            # ``ring`` of one seed, on Python ints: a chunk scans every disagreement (600
            # on average on the 10,000-job trace batch), each once per round.
            if (taken or strict) and size + size_of[s] > limit and s not in owners:
                continue  # its ring adds at least the seed itself: past the limit
            new = {s}
            for r in self.pools_of.get(s, ()):
                new |= self.users_of.get(r, set())
            new -= owners
            grow = sum(map(size_of.__getitem__, new))
            if (taken or strict) and size + grow > limit:
                continue
            owners |= new
            taken.append(s)
            size += grow
        return owners, taken

    def clusters(self, split: IntArray) -> list[list[int]]:
        """Owners of ``split`` linked by the pools they use, each and all in owner order."""
        owners = sorted({int(o) for o in split})
        heads: list[int] = []
        tails: list[int] = []
        for k, o in enumerate(owners):
            for r in self.pools_of.get(o, ()):
                heads.append(k)
                tails.append(len(owners) + r)
        size = len(owners) + self.p.row_lb.shape[0]
        labels = component_labels(
            size, np.array(heads, dtype=np.int64), np.array(tails, dtype=np.int64)
        )
        groups: dict[int, list[int]] = {}
        for o, label in zip(owners, labels[: len(owners)].tolist(), strict=True):
            groups.setdefault(label, []).append(o)
        return list(groups.values())  # in order of their least owner

    @cached_property
    def idle(self) -> list[int]:
        """A count search's owners that no plan places, in owner order (none for cost).

        Each gets the pools of its cheapest options in ``pools_of``: no ring reaches it
        (it uses no pool), so only a neighbourhood seeded by it can place it
        (``Search.place_left_out``). It is no user of those pools: in every ring it would
        swamp it. Worked out on first use: the rounds' many Hoods never need it.
        """
        p, scope = self.p, self._scope
        if scope is None:
            return []
        mine = p.owner >= 0
        held = np.zeros(int(p.owner.max(initial=-1)) + 1, dtype=np.bool_)
        held[p.owner[mine & self._placed]] = True
        opts = mine & scope & (p.pool >= 0) & ~held[np.where(mine, p.owner, 0)]
        opts &= p.rank < _REACH  # its cheapest options: the ring stays a neighbourhood
        if p.option is not None:
            opts &= p.option
        width = int(p.row_lb.shape[0]) + 1
        pairs = np.unique(p.owner[opts] * width + p.pool[opts])
        for o, r in zip((pairs // width).tolist(), (pairs % width).tolist(), strict=True):
            self.pools_of.setdefault(o, set()).add(r)
        return list(np.unique(p.owner[opts]).tolist())

    def gainers(self, objective: FloatArray) -> list[int]:
        """Owners no plan places (``idle``) whose placing would lower ``objective``.

        In a count search those are the counted tier's left-out jobs, in owner order.
        """
        if not self.idle:
            return []
        p = self.p
        least = np.full(len(self.sizes), np.inf)
        np.minimum.at(least, p.owner[self.ok], objective[self.ok])
        return [o for o in self.idle if least[o] < 0]

    def cheaper_with_room(self, objective: FloatArray, limit: int) -> set[int]:
        """Owners with an option cheaper than the dearest they use, with room for it.

        The search's neighbourhoods free the owners where the plan and the LP disagree, and
        the users of their pools; an owner the LP leaves where it is stays put, even once
        a move has left room on a pool cheaper for it (found by the brute-force property
        test: a 1-node job kept on a $2 pool beside 2 spare nodes at $1). Only options
        count, not a service's "placed" or spread flags, which cost nothing and draw on no
        pool. An unplaced owner pays nothing: in a count search, a gang class none of
        whose jobs is placed is such an owner where one of its options has room (a class
        with some placed, or a service, is not: their next job is left to the rounds).

        Args:
            objective: Cost per variable.
            limit: Most variables their neighbourhood frees.

        Returns:
            Those owners, the largest saving first while their variables stay under
            ``limit`` (and always the first).
        """
        p = self.p
        option = self.ok if p.option is None else p.option & self.ok
        used = self.base_cols & option
        dearest = np.full(len(self.sizes), -np.inf)
        np.maximum.at(dearest, p.owner[used], objective[used])
        dearest[np.isinf(dearest)] = 0.0  # unplaced: pays nothing
        cand = self.room & option & ~self.base_cols
        cand[cand] = objective[cand] < dearest[p.owner[cand]] - 1e-9
        if not cand.any():
            return set()
        best = np.full(len(self.sizes), np.inf)
        np.minimum.at(best, p.owner[cand], objective[cand])
        owners = np.unique(p.owner[cand])
        saving = dearest[owners] - best[owners]
        out: set[int] = set()
        size = 0
        for o in owners[np.lexsort((owners, -saving))].tolist():
            if out and size + int(self.sizes[o]) > limit:
                continue
            out.add(o)
            size += int(self.sizes[o])
        return out

    def reach(self, owners: list[int]) -> BoolArray:
        """Every option of ``owners``, with the users of every pool those may use freed.

        A split service is made whole on pools the LP did not give it, or left out.
        """
        p = self.p
        mine = np.isin(p.owner, owners) & self.ok
        near = mine & ((p.rank < _REACH) | self.base_cols)
        users = set(owners)
        for r in np.unique(p.pool[near & (p.pool >= 0)]).tolist():
            users |= self.users_of.get(r, set())
        return self.free(users, set(owners)) | mine

    def fillers(self, objective: FloatArray, owners: list[int]) -> BoolArray:
        """The cheapest unused options with room on the rows that count ``owners``.

        A split owner whose pools are full is made whole by leaving it out, its count then
        met by another job of its tier wherever there is room, rarely one of its rings
        (10,000-job synthetic seed 7: half an 8-node gang on a full 9-node pool, its ring
        three owners).
        """
        p = self.p
        mine = np.isin(p.owner, owners)
        counted = p.counted
        rows = np.unique(csc_array(p.a[:, np.nonzero(mine)[0]]).indices)
        rows = rows[counted[rows]]
        out = np.zeros(p.n, dtype=np.bool_)
        if len(rows):
            on = np.unique(csr_array(p.a[rows]).indices)
            on = on[self.room[on] & ~self.base_cols[on] & ~mine[on]]
            out[on[np.lexsort((on, objective[on]))][:_FILLERS]] = True
        return out

    def substitutes(self, objective: FloatArray, plan: FloatArray, per_tier: int) -> list[int]:
        """Per tier, the owners ``plan`` pays most for and the cheapest it leaves out.

        The tiers: each held count's, and of a count search's own (its jobs score below 0)
        only the jobs left out.

        A tier's count is held, so a cost search can only trade a placed job for one of the
        same tier; where a budget binds, what pays for that trade is often another tier's
        (a job swapped for one off the budget): the trades are linked by the budget row,
        not by any pool, so no ring of pools holds them, and the LP, degenerate there,
        points at none of them (on the 20,000-job file, a placed job ranked 17,408 in a
        tier where left-out jobs rank 27).

        Args:
            objective: Cost per variable.
            plan: The plan at hand.
            per_tier: Owners of each kind taken per count row.

        Returns:
            The owners, in owner order.
        """
        p = self.p
        mine = p.owner >= 0
        size = len(self.sizes)
        spent = np.bincount(p.owner[mine], weights=(objective * plan)[mine], minlength=size)
        placed = np.bincount(p.owner[mine], weights=plan[mine], minlength=size) > FRAC
        options = mine & self.ok & (p.rank < _ROOM_OPTIONS)
        if p.option is not None:
            options &= p.option
        cheapest = np.full(size, np.inf)
        np.minimum.at(cheapest, p.owner[options], objective[options])
        counted = np.nonzero(p.counted)[0]
        rows = csr_array(p.a)
        tiers = [
            np.unique(p.owner[cols[mine[cols]]])
            for cols in (rows.indices[rows.indptr[r] : rows.indptr[r + 1]] for r in counted)
        ]
        out: set[int] = set()
        for tier in tiers:
            used = tier[placed[tier]]
            idle = tier[~placed[tier] & np.isfinite(cheapest[tier])]
            out.update(used[np.lexsort((used, -spent[used]))][:per_tier].tolist())
            out.update(idle[np.lexsort((idle, cheapest[idle]))][:per_tier].tolist())
        # A count search's own tier has no row yet: its cheapest jobs left out, which a
        # trade would place (its placed ones only give way where a held tier needs room).
        own = np.unique(p.owner[mine & self.ok & (objective < 0)])
        idle = own[~placed[own] & np.isfinite(cheapest[own])]
        out.update(idle[np.lexsort((idle, cheapest[idle]))][:per_tier].tolist())
        return sorted(out)

    def free(self, owners: set[int], seeds: set[int]) -> BoolArray:
        """Variables freed for ``owners``: on the pools the seeds' rings share, or with room."""
        p = self.p
        pools = np.zeros(p.row_lb.shape[0], dtype=np.bool_)
        for o in seeds:
            for r in self.pools_of.get(o, ()):
                pools[r] = True
        for o in owners:
            for r in self.pools_of.get(o, ()):
                pools[r] = True
        on_pool = np.zeros(p.n, dtype=np.bool_)
        limited = p.pool >= 0
        on_pool[limited] = pools[p.pool[limited]]
        mask = np.zeros(p.n, dtype=np.bool_)
        if owners:
            cols = np.concatenate([self.cols(o) for o in sorted(owners)])
            mask[cols] = True
        keep = mask & ((on_pool & self.ok) | (self.room & ~limited) | self.base_cols)
        # Elsewhere only the few cheapest options with room: where a job may move
        # without moving anybody. Every option would make the neighbourhood the model.
        spare = np.nonzero(mask & self.room & ~keep)[0]
        if len(spare):
            spare = spare[np.lexsort((p.rank[spare], p.owner[spare]))]
            first = np.r_[True, p.owner[spare][1:] != p.owner[spare][:-1]]
            start = np.maximum.accumulate(np.where(first, np.arange(len(spare)), 0))
            keep[spare[np.arange(len(spare)) - start < _ROOM_OPTIONS]] = True
        return keep


def by_cluster(
    hood: Hood,
    lp: FloatArray,
    split: IntArray,
    objective: FloatArray,
    solve: Callable[[FloatArray, BoolArray, int | None], FloatArray | None],
    most: int,
) -> FloatArray | None:
    """Make the LP whole one cluster of split owners at a time.

    Split owners sharing a pool are one cluster; each is re-solved with its ring of owners
    free and every other variable held at its value so far, the fractions of the clusters
    not yet done included (so every capacity row stays met). Each sub-problem is a few
    hundred to a few thousand variables, where the ring of every split owner at once is
    tens of thousands, whose root alone took seconds (10,000-job synthetic seed 3: 28,759
    variables, 8 s; by clusters 17 sub-problems, 1.8 s, the plan 0.02 % above the LP).
    Clusters that fail are retried together, on wider neighbourhoods. A sub-problem that
    cannot meet a count row (whole jobs rarely fit in pools the held fractions fill in
    part: 10,000-job trace seed 7, 25 of the 46 owners of its largest cluster, and the
    repair with them) need only give the row the whole part of what its owners gave it,
    failing that one less; the rows are met last, on the room left then.

    Args:
        hood: Neighbourhoods of the LP solution.
        lp: The LP solution.
        split: Owners the LP splits.
        objective: Cost per variable.
        solve: The sub-problem with the variables outside a mask held at a base, exactly
            (fractions kept), and the jobs a count row may fall short by (see
            ``Search.solve_sub``; None: every row met); returns the plan or None.
        most: Variables of a neighbourhood (the retry may free a few times that).

    Returns:
        The plan (all whole), or None if a cluster could not be made whole, or the last
        step could not meet the count rows (or was past its size).
    """
    x = lp
    failed: list[int] = []
    for cluster in hood.clusters(split):
        free = hood.free(hood.ring(np.array(cluster)), set(cluster))
        # A cluster past a few neighbourhoods goes owner by owner (the others' fractions
        # held keep its rows met): one of 27,904 variables was 8 s at HiGHS's root.
        parts = [(cluster, free)]
        if int(free.sum()) > _CLUSTER_NEIGHBOURHOODS * most:
            parts = [([o], hood.free(hood.ring(np.array([o])), {o})) for o in cluster]
        for owners, mask in parts:
            got = None
            if int(mask.sum()) <= _CLUSTER_NEIGHBOURHOODS * most:
                for short in (None, 0, 1):
                    got = solve(x, mask, short) if got is None else got
            if got is None:
                failed.extend(owners)
            else:
                x = got
    out: FloatArray | None = x
    if failed:
        # Together, with two rings (a gang gives way two pools off), then with the users
        # of every pool their cheapest options use (a split service is made whole on
        # pools the LP did not give it), each with options elsewhere to meet the counts.
        fill = hood.fillers(objective, failed)
        wider = hood.ring(np.array(sorted(hood.ring(np.array(failed)))))
        # Without a start HiGHS's root is most of a repair: one of 3,963 variables was 5 s
        # for nothing the neighbourhoods did not find (one of 2,813, 0.1 s, gained 2 %).
        out = None
        for free in (hood.free(wider, set(failed)) | fill, hood.reach(failed) | fill):
            if out is None and int(free.sum()) <= _RETRY_NEIGHBOURHOODS * most:
                out = solve(x, free, 0)
    if out is not None and not hood.p.feasible(out):
        # The repairs kept the whole jobs each count row had, some a job less (whole jobs
        # do not fit in pools the held fractions fill in part); the rows are met last with
        # the split and dropped owners and their rings free, on the room left now (10,000-
        # job trace seed 7: 16,720 variables, 6 s, 602,583 where the rounds from the count
        # stage's plan reached 604,539 in 9 s; the LP 602,538).
        p = hood.p
        mine = p.owner >= 0
        # Every owner the repairs gave less than the LP did (a class a job short too, not
        # only one left out): its count rows are the ones to meet.
        size = len(hood.sizes)
        gave = np.bincount(p.owner[mine], weights=out[mine], minlength=size)
        had = np.bincount(p.owner[mine], weights=lp[mine], minlength=size)
        fell = np.nonzero(gave < had - FRAC)[0].tolist()
        owners = sorted({int(o) for o in split} | set(fell))
        now = Hood(p, [out], out, None)
        m = now.fillers(objective, owners) | now.free(now.ring(np.array(owners)), set(owners))
        out = solve(out, m, None) if int(m.sum()) <= _COUNT_NEIGHBOURHOODS * most else None
    return out if out is not None and hood.p.feasible(out) else None
