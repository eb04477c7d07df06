"""Capacity bookkeeping and greedy placement for the queue walk (docs/architecture.md).

The walk takes jobs in queue order; each gets its cheapest option with capacity left.
Whenever a cheaper option was full (or a budget bit), the job is marked contended, which
sends the snapshot to the optimiser instead of the fast path.
"""

from __future__ import annotations

from multicloud.models import Kind
from multicloud.planner.options import Opt
from multicloud.planner.slot import EPS, Slot


class Capacity:
    """What is left of each offer and each team budget, and greedy choices against it.

    Attributes:
        cap: Nodes left per offer (None: unlimited).
        team_left: Budget left per team that has one.
    """

    cap: list[int | None]
    team_left: dict[str, float]
    _cur: Slot | None

    def _note_contention(self) -> None:
        if self._cur is not None:
            self._cur.contended = True

    def fits(self, opt: Opt, nodes: int) -> bool:
        c = self.cap[opt.oi]
        return c is None or c >= nodes

    def first_fit(self, s: Slot, opts: list[Opt] | None = None) -> Opt | None:
        """First option (of ``opts``, default all of ``s``'s) with capacity left.

        Notes contention when a better option was full.
        """
        cap = self.cap
        nodes = s.nodes
        ceiling = s.ceiling
        full = False  # noted once, not per full option: the walk's hottest loop
        for opt in s.options.opts if opts is None else opts:
            if ceiling is not None and opt.node_price * nodes >= ceiling - EPS:
                continue
            c = cap[opt.oi]
            if c is None or c >= nodes:
                if full:
                    self._note_contention()
                return opt
            full = True
        if full:
            self._note_contention()
        return None

    def take(self, s: Slot, choice: list[tuple[Opt, int, float]]) -> None:
        for opt, reps, _ in choice:
            c = self.cap[opt.oi]
            if c is not None:
                self.cap[opt.oi] = c - reps * s.nodes
        s.chosen = choice
        team = s.job.team
        if team is not None and team in self.team_left:
            self.team_left[team] -= s.cost_of(choice)

    def release(self, s: Slot) -> None:
        for opt, reps, _ in s.chosen:
            c = self.cap[opt.oi]
            if c is not None:
                self.cap[opt.oi] = c + reps * s.nodes
        team = s.job.team
        if team is not None and team in self.team_left:
            self.team_left[team] += s.cost_of(s.chosen)
        s.chosen = []

    def _budget_ok(self, s: Slot, choice: list[tuple[Opt, int, float]]) -> bool:
        team = s.job.team
        if team is None or team not in self.team_left:
            return True
        if s.cost_of(choice) <= self.team_left[team] + EPS:
            return True
        self._note_contention()
        return False

    def _greedy(
        self,
        s: Slot,
        opts: list[Opt] | None = None,
        replicas: int | None = None,
        spread: int | None = None,
    ) -> list[tuple[Opt, int, float]] | None:
        """Cheapest placement of ``s`` (or of some of its replicas) with the capacity left."""
        if s.job.kind is Kind.TRAINING:
            opt = self.first_fit(s, opts)
            return None if opt is None else [(opt, 1, opt.node_price)]
        return self._greedy_replicas(
            s,
            s.options.opts if opts is None else opts,
            s.replicas if replicas is None else replicas,
            s.spread if spread is None else spread,
        )

    def _greedy_replicas(
        self, s: Slot, opts: list[Opt], replicas: int, spread: int
    ) -> list[tuple[Opt, int, float]] | None:
        """Inference: ``spread`` cheapest providers get one replica, the rest go cheapest-first.

        Without capacity limits this is optimal: the cheapest option overall belongs to
        the cheapest provider, which is among the chosen ones. With limits it is a
        heuristic, so any limit it meets marks the snapshot as contended.
        """
        if replicas == 0:
            return []
        left: dict[int, int | None] = {}
        chosen: dict[int, tuple[Opt, int]] = {}
        firsts: dict[str, Opt] = {}
        caps = self.cap
        nodes = s.nodes
        full = False
        for opt in opts:
            if opt.provider in firsts:
                continue
            c = caps[opt.oi]
            if c is None or c >= nodes:
                firsts[opt.provider] = opt
            else:
                full = True
        if full:
            self._note_contention()
        if len(firsts) < spread:
            return None
        picked = sorted(firsts.values(), key=lambda o: (o.rank, o.node_price))[:spread]
        total = 0
        for opt in picked:
            c = self.cap[opt.oi]
            left[opt.oi] = None if c is None else c - s.nodes
            chosen[opt.oi] = (opt, 1)
            total += 1
        for opt in opts:
            if total >= replicas:
                break
            c = left[opt.oi] if opt.oi in left else caps[opt.oi]
            room = replicas - total if c is None else min(replicas - total, c // nodes)
            if room <= 0:
                full = True
                continue
            prev = chosen.get(opt.oi, (opt, 0))[1]
            chosen[opt.oi] = (opt, prev + room)
            left[opt.oi] = None if c is None else c - room * s.nodes
            total += room
        if full:
            self._note_contention()
        if total < replicas:
            return None
        out = [(opt, n, opt.node_price) for opt, n in chosen.values()]
        cap = s.job.max_price_per_hour
        if cap is not None and sum(p * s.nodes * n for _, n, p in out) > cap + EPS:
            self._note_contention()
            return None
        return out
