"""The queue walk of one job: the right-of-first-refusal protocol (DESIGN.md §5).

The outside price P is the cheapest non-holder gang price given the capacity left at the
job's turn; the holders answer in rank order and the answer is final (an audit line).
Jobs placed on a holder or on a reservation are pinned; holder-declined jobs may only go
outside (docs/architecture.md, the planner).
"""

from __future__ import annotations

from typing import Literal

from multicloud.models import Kind, Rofr
from multicloud.planner.capacity import Capacity
from multicloud.planner.options import Opt
from multicloud.planner.slot import EPS, Slot
from multicloud.planner.types import AuditEntry, RofrOutcome, Snapshot
from multicloud.provider import MarketKind


class RofrWalk(Capacity):
    """Places one job at a time, offering it to the ROFR holders first."""

    snap: Snapshot
    rofr: Rofr | None
    holders: tuple[str, ...]
    audit: list[AuditEntry]
    _terms_cache: dict[tuple[object, ...], dict[str, object]]
    _outcomes: dict[tuple[object, ...], RofrOutcome]  # the holder's answers, shared
    _notes: dict[tuple[str, float | None], str]  # accepted: its reason by holder and P
    # (own, outside) gang prices -> the holder's answer (see _price_answer)
    _said: dict[
        tuple[float, float],
        tuple[Literal["accepted", "declined"], float | None, str, float | None],
    ]

    def _walk(self, s: Slot) -> None:
        rofr = self.rofr
        if rofr is None:
            self._place_plain(s, None)
            return
        best = self._greedy(s)
        if (
            rofr.scope == "new-capacity"
            and best is not None
            and all(opt.market is MarketKind.RESERVED for opt, _, _ in best)
        ):
            s.pinned = True
            self._commit(
                s, best, ["reserved capacity used without a ROFR offer (scope new-capacity)"]
            )
            return
        self._offer_to_holders(s)

    def _place_plain(self, s: Slot, opts: list[Opt] | None) -> None:
        choice = self._greedy(s, opts)
        if choice is None:
            s.unplaced = self._why_no_capacity(s)
            return
        self._commit(s, choice, [])

    def _commit(self, s: Slot, choice: list[tuple[Opt, int, float]], reasons: list[str]) -> None:
        if not self._budget_ok(s, choice):
            s.unplaced = f"team '{s.job.team}' budget left cannot pay for this job"
            s.pinned = False
            return
        self.take(s, choice)
        s.reasons = reasons
        s.unplaced = None

    def _why_no_capacity(self, s: Slot) -> str:
        n = len({opt.oi for opt in s.options.opts})
        return (
            f"no capacity left: all {n} feasible offers are full "
            "(taken by higher-priority or earlier jobs, or too small)"
        )

    def _terms(self, s: Slot) -> dict[str, object]:
        # Shared by every job of the same shape, duration and size: read-only.
        j = s.job
        key = (id(s.options), j.kind, j.duration_hours, s.replicas)
        hit = self._terms_cache.get(key)
        if hit is not None:
            return hit
        terms: dict[str, object] = {
            "accelerators": list(j.resources.accelerator),
            "count": j.resources.count,
            "nodes": j.resources.nodes,
            "market": j.market.value,
            "duration_hours": j.duration_hours,
        }
        if j.kind is Kind.INFERENCE:
            terms["replicas"] = s.replicas
        if j.placement.regions:
            terms["regions"] = list(j.placement.regions)
        if j.placement.residency:
            terms["residency"] = list(j.placement.residency)
        self._terms_cache[key] = terms
        return terms

    def _offer_to_holders(self, s: Slot) -> None:
        assert self.rofr is not None
        rofr = self.rofr
        opts = s.options
        p = self._outside_price(s)
        first: RofrOutcome | None = None
        ceiling: float | None = None  # below this gang price every price-decliner declines
        for holder in self.holders:
            mine = opts.by_provider.get(holder, [])
            hopt = self.first_fit(s, mine) if mine else None
            own = None if hopt is None else hopt.node_price * s.nodes
            answer: Literal["accepted", "declined"] = "declined"
            billed: float | None = None
            if holder in self.snap.unresponsive:
                reason = f"no answer within the {rofr.window:g} s window"
            elif hopt is None or own is None:
                if mine:
                    reason = "no capacity"
                else:
                    why = opts.provider_rejects.get(holder, "no offer of the accelerators")
                    reason = f"constraint: {why}"
            elif p is None:
                answer, billed, reason = "accepted", own, "accepted: no outside offer"
            else:
                # A function of the two prices alone, and few prices recur: the answers
                # are kept, not formatted again for every job.
                said = self._said.get((own, p))
                if said is None:
                    said = self._said[(own, p)] = self._price_answer(own, p)
                answer, billed, reason, limit = said
                if limit is not None:
                    ceiling = limit if ceiling is None else min(ceiling, limit)
            placed = False
            if answer == "accepted" and hopt is not None and billed is not None:
                placed = self._accept(s, holder, hopt, billed, p)
                if not placed:
                    answer, billed = "declined", None
                    reason = "accepted, but the rest of the replicas cannot be placed: declined"
            self.audit.append(
                AuditEntry(
                    job=s.id,
                    holder=holder,
                    terms=self._terms(s),
                    outside_price_per_hour=p,
                    holder_price_per_hour=own,
                    answer=answer,
                    reason=reason,
                    billed_price_per_hour=billed,
                    at=self.snap.now,
                    catalog_version=self.snap.catalog_version,
                )
            )
            # immutable, and the same for every job meeting the same prices: kept
            okey = (holder, answer, reason, p)
            outcome = self._outcomes.get(okey)
            if outcome is None:
                outcome = self._outcomes[okey] = RofrOutcome(holder, answer, reason, p)
            if placed:
                s.rofr = outcome
                return
            if first is None:
                first = outcome
        s.rofr = first
        s.restricted = True
        if s.job.kind is Kind.TRAINING:
            # A declined job may not end up outside at a price the holder would have
            # taken: that would route it around the holder (commitment preferences or
            # the optimiser could otherwise pick a pricier outside offer than P).
            s.ceiling = ceiling
        outside = self._greedy(s, opts.outside)
        if outside is None:
            s.unplaced = "declined by every ROFR holder and no outside offer has capacity"
            return
        self._commit(
            s, outside, [f"ROFR declined by {', '.join(sorted(set(self.holders)))}: placed outside"]
        )

    def _price_answer(
        self, own: float, p: float
    ) -> tuple[Literal["accepted", "declined"], float | None, str, float | None]:
        """A holder's answer to outside price ``p`` at its own gang price ``own``.

        Returns:
            The answer, the billed gang price (None when declined), the reason, and when
            declined on price the gang price below which the holder would decline too.
        """
        assert self.rofr is not None
        rofr = self.rofr
        if rofr.match:
            reason = (
                f"matched outside price ${p:,.2f}/h"
                if own > p + EPS
                else f"own price ${own:,.2f}/h ≤ outside ${p:,.2f}/h"
            )
            return "accepted", min(own, p), reason, None
        if own <= p * (1 + rofr.tolerance) + EPS:
            reason = f"own price ${own:,.2f}/h within {rofr.tolerance:.0%} of outside ${p:,.2f}/h"
            return "accepted", own, reason, None
        reason = f"price: own ${own:,.2f}/h > outside ${p:,.2f}/h" + (
            f" + {rofr.tolerance:.0%}" if rofr.tolerance else ""
        )
        return "declined", None, reason, own / (1 + rofr.tolerance)

    def _outside_price(self, s: Slot) -> float | None:
        """The outside price P: cheapest new capacity from non-holders, given capacity left.

        A training gang is quoted whole; an inference service per replica, as the average
        replica price of its cheapest spread-feasible outside placement.
        """
        new = s.options.outside_new
        if s.job.kind is Kind.TRAINING:
            opt = self.first_fit(s, new)
            return None if opt is None else opt.node_price * s.nodes
        plan = self._greedy_replicas(s, new, s.replicas, s.spread)
        if plan is None:
            return None
        return sum(price * s.nodes * n for _, n, price in plan) / s.replicas

    def _accept(self, s: Slot, holder: str, hopt: Opt, billed_gang: float, p: float | None) -> bool:
        node_price = billed_gang / s.nodes
        via = f"ROFR: {holder} accepted"
        if s.job.kind is Kind.TRAINING:
            choice = [(hopt, 1, node_price)]
        else:
            # The holder takes as many replicas as spread lets one provider have.
            c = self.cap[hopt.oi]
            k = s.replicas - s.spread + 1
            if c is not None:
                k = min(k, c // s.nodes)
            rest = self._greedy(
                s,
                s.options.outside,
                replicas=s.replicas - k,
                spread=max(s.spread - 1, 0) if s.replicas - k > 0 else 0,
            )
            if rest is None:
                return False
            choice = [(hopt, k, node_price), *rest]
        if not self._budget_ok(s, choice):
            return False
        s.pinned = True
        self.take(s, choice)
        nkey = (holder, p)
        note = self._notes.get(nkey)
        if note is None:
            note = self._notes[nkey] = via + (
                f" (outside price ${p:,.2f}/h)" if p is not None else ""
            )
        s.reasons = [note]
        return True
