"""A plan from the planner's slots, with the reasons behind every placement."""

from __future__ import annotations

from multicloud.planner.options import Opt, OptionIndex
from multicloud.planner.slot import Slot
from multicloud.planner.types import (
    Assignment,
    AuditEntry,
    Plan,
    PlanStats,
    Unplaced,
)
from multicloud.provider import MarketKind, Offer


class Explained:
    """Turns slots into a :class:`Plan`; reasons are shared by jobs of a shape."""

    offers: list[Offer]
    index: OptionIndex
    audit: list[AuditEntry]

    def _result(self, slots: list[Slot], stats: PlanStats) -> Plan:
        placements: list[Assignment] = []
        unplaced: list[Unplaced] = []
        reasons_cache: dict[tuple[object, ...], tuple[str, ...]] = {}
        for s in slots:
            if not s.chosen:
                unplaced.append(Unplaced(s.id, s.unplaced or "not placed", tuple(s.details)))
                continue
            cheapest = s.options.opts[0]
            for opt, reps, price in s.chosen:
                o = self.offers[opt.oi]
                placements.append(
                    Assignment(
                        job=s.id,
                        offer=o,
                        market=opt.market,
                        nodes=reps * s.nodes,
                        replicas=reps,
                        node_price=price,
                        duration_hours=s.job.duration_hours,
                        rofr=s.rofr,
                        reasons=self._why(s, opt, cheapest, reasons_cache),
                    )
                )
        return Plan(tuple(placements), tuple(unplaced), tuple(self.audit), stats)

    def _why(
        self,
        s: Slot,
        opt: Opt,
        cheapest: Opt,
        cache: dict[tuple[object, ...], tuple[str, ...]],
    ) -> tuple[str, ...]:
        """Reasons for one placement (the same for every job of a shape on an option)."""
        key = (id(s.options), opt.oi, opt.market, s.pinned, *s.reasons)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = self._explain(s, opt, cheapest)
        return hit

    def _explain(self, s: Slot, opt: Opt, cheapest: Opt) -> tuple[str, ...]:
        o = self.offers[opt.oi]
        why = list(s.reasons)
        if opt.market is MarketKind.RESERVED:
            why.append(f"reservation '{o.reservation}': zero marginal cost")
        elif opt.provider in self.index.preferred and opt.rank < opt.node_price:
            why.append(
                f"{opt.provider} is behind its committed-spend schedule: preferred within "
                f"{self.index.preferred[opt.provider]:.0%}"
            )
        if opt is cheapest:
            why.append(f"cheapest of {len(s.options.opts)} feasible options")
        elif not s.pinned:
            c = self.offers[cheapest.oi]
            what = (
                f"reservation '{c.reservation}'"
                if c.reservation
                else f"{c.provider}/{c.zone or c.region}/{c.instance_type} "
                f"(${cheapest.node_price * s.nodes:,.2f}/h)"
            )
            why.append(f"cheaper option {what} was full or left to other jobs")
        return tuple(why)
