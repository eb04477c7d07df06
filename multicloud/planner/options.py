"""Which offers can take which job, at what price: the feasibility filter of the planner.

Jobs with the same shape (accelerators, size, market, constraints) have the same options,
so options are computed once per shape and shared; this is what makes the fast path fast.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from multicloud.models import Commitment, Job, Kind, Market
from multicloud.planner.types import LatencyFn
from multicloud.provider import MarketKind, Offer


@dataclass(frozen=True, slots=True)
class Opt:
    """One way to run one gang (a training job, or one inference replica).

    Attributes:
        oi: Index of the offer in the planner's offer table.
        market: Market billed.
        node_price: Price per node-hour as billed.
        rank: Price per node-hour used for ranking (lower when a commitment is behind).
        holder: True if the offer's provider holds a ROFR.
        provider: The offer's provider.
    """

    oi: int
    market: MarketKind
    node_price: float
    rank: float
    holder: bool
    provider: str


@dataclass
class Options:
    """The options of one job shape and why other offers were left out.

    Attributes:
        opts: Feasible options, cheapest (by rank) first.
        rejects: How many offers each constraint removed.
        provider_rejects: For each provider with no option, the constraint that removed its
            offer that came closest to fitting.
        by_provider: Options by provider.
        outside: Options of providers that hold no ROFR.
        outside_new: Outside options for new capacity (no reservations), cheapest first.
    """

    opts: list[Opt]
    rejects: Counter[str] = field(default_factory=Counter)
    provider_rejects: dict[str, str] = field(default_factory=dict)
    by_provider: dict[str, list[Opt]] = field(default_factory=dict)
    outside: list[Opt] = field(default_factory=list)
    outside_new: list[Opt] = field(default_factory=list)

    def index(self) -> None:
        """Precompute the sub-lists the queue walk and ROFR read (kept in rank order)."""
        self.by_provider = {}
        for o in self.opts:
            self.by_provider.setdefault(o.provider, []).append(o)
        self.outside = [o for o in self.opts if not o.holder]
        # P, the outside price, is for new capacity: reservations are not on the market.
        self.outside_new = sorted(
            (o for o in self.outside if o.market is not MarketKind.RESERVED),
            key=lambda o: o.node_price,
        )

    def summary(self) -> str:
        """Return the rejection counts as one readable line."""
        parts = [f"{n} by {why}" for why, n in self.rejects.most_common()]
        return "offers removed: " + (", ".join(parts) if parts else "none")


def behind_schedule(commitments: Sequence[Commitment], now: datetime | None) -> dict[str, float]:
    """Find the providers whose committed spend is behind its linear schedule.

    Args:
        commitments: Committed-spend contracts.
        now: Current time (None: nothing is behind, since the schedule cannot be read).

    Returns:
        Provider name → price tolerance within which it is preferred.
    """
    out: dict[str, float] = {}
    if now is None:
        return out
    for com in commitments:
        span = (com.end - com.start).total_seconds()
        elapsed = min(max((now - com.start).total_seconds(), 0.0), span)
        due = com.total_usd * elapsed / span
        if com.spent_usd < due:
            out[com.provider] = max(out.get(com.provider, 0.0), com.tolerance)
    return out


class OptionIndex:
    """Computes and caches the options of job shapes against one offer table.

    Args:
        offers: The offer table (reservation offers included).
        holders: ROFR holders (empty without ROFR).
        blocked: Blocked scopes: provider, provider/region or provider/region/zone (also
            provider/zone).
        latency: Region latency function.
        preferred: Providers behind a commitment → ranking discount.
    """

    def __init__(
        self,
        offers: Sequence[Offer],
        *,
        holders: Sequence[str] = (),
        blocked: frozenset[str] = frozenset(),
        latency: LatencyFn | None = None,
        preferred: Mapping[str, float] | None = None,
    ) -> None:
        self.offers = offers
        self.holders = frozenset(holders)
        self.blocked = blocked
        self.latency = latency
        self.preferred = dict(preferred or {})
        self._by_accel: dict[str, list[int]] = {}
        for i, o in enumerate(offers):
            self._by_accel.setdefault(o.accelerator, []).append(i)
        self._cache: dict[tuple[object, ...], Options] = {}
        self._glob_cache: dict[tuple[str, tuple[str, ...]], bool] = {}

    def for_job(self, job: Job) -> Options:
        """Return the options of a job (shared by every job of the same shape).

        Args:
            job: The job.

        Returns:
            Its options.
        """
        serving = job.serving
        res = job.resources
        place = job.placement
        # Plain tuples: hashing and comparing the pydantic models themselves was a third
        # of the fast path's time.
        key = (
            res.accelerator,
            res.count,
            res.nodes,
            job.market,
            job.max_price_per_hour if job.kind is Kind.TRAINING else None,
            place.providers,
            place.regions,
            place.residency,
            serving.regions_near if serving else (),
            serving.max_latency_ms if serving else None,
        )
        hit = self._cache.get(key)
        if hit is None:
            hit = self._compute(job)
            self._cache[key] = hit
        return hit

    def _region_ok(self, region: str, globs: tuple[str, ...]) -> bool:
        k = (region, globs)
        hit = self._glob_cache.get(k)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(region, g) for g in globs)
            self._glob_cache[k] = hit
        return hit

    def _is_blocked(self, o: Offer) -> bool:
        b = self.blocked
        if not b:
            return False
        region = f"{o.provider}/{o.region}"
        if o.provider in b or region in b:
            return True
        # Zonal scopes come as provider/region/zone (errors.error_scope); provider/zone is
        # the older short form, still honoured.
        return o.zone is not None and (f"{region}/{o.zone}" in b or f"{o.provider}/{o.zone}" in b)

    def _compute(self, job: Job) -> Options:
        res = job.resources
        place = job.placement
        serving = job.serving
        nodes = res.nodes
        allow_od = job.market in (Market.ON_DEMAND, Market.ANY)
        allow_spot = job.market in (Market.SPOT, Market.ANY)
        cap = job.max_price_per_hour
        out = Options(opts=[])
        rejects = out.rejects
        seen_providers: set[str] = set()

        # The reason shown for a provider is the one of its offer that passed the most
        # filters: "no EU region" says more than "this VM size has one GPU".
        stage_of: dict[str, int] = {}

        def reject(o: Offer, why: str, stage: int) -> None:
            rejects[why] += 1
            if stage >= stage_of.get(o.provider, -1):
                stage_of[o.provider] = stage
                out.provider_rejects[o.provider] = why

        candidates: list[int] = []
        for acc in res.accelerator:
            candidates.extend(self._by_accel.get(acc, ()))
        other = len(self.offers) - len(candidates)
        if other:
            rejects["accelerator"] += other
        for oi in candidates:
            o = self.offers[oi]
            if o.count < res.count:
                reject(o, f"fewer than {res.count} accelerators per node", 1)
                continue
            if place.providers and o.provider not in place.providers:
                reject(o, "placement.providers", 2)
                continue
            if place.regions and not self._region_ok(o.region, place.regions):
                reject(o, "placement.regions", 3)
                continue
            if place.residency and o.jurisdiction not in place.residency:
                reject(o, "placement.residency", 4)
                continue
            if self._is_blocked(o):
                reject(o, "blocked after recent capacity/quota errors", 5)
                continue
            if serving is not None and serving.max_latency_ms is not None:
                lat = self._nearest(o.region, serving.regions_near)
                if lat is None or lat > serving.max_latency_ms:
                    reject(o, "serving.max_latency_ms", 6)
                    continue
            if o.capacity is not None and o.capacity < nodes:
                reject(o, f"capacity below {nodes} nodes", 7)
                continue
            markets: list[tuple[MarketKind, float]] = []
            if o.reservation is not None:
                markets.append((MarketKind.RESERVED, 0.0))
            else:
                if allow_od and o.price is not None:
                    markets.append((MarketKind.ON_DEMAND, o.price))
                if allow_spot and o.spot_price is not None:
                    markets.append((MarketKind.SPOT, o.spot_price))
            if not markets:
                reject(o, f"market {job.market.value}", 8)
                continue
            discount = self.preferred.get(o.provider, 0.0)
            holder = o.provider in self.holders
            kept = False
            for market, price in markets:
                if cap is not None and price * nodes > cap + 1e-9:
                    continue
                rank = price * (1.0 - discount)
                out.opts.append(Opt(oi, market, price, rank, holder, o.provider))
                kept = True
            if not kept:
                reject(o, "max_price_per_hour", 9)
                continue
            seen_providers.add(o.provider)
        for p in seen_providers:
            out.provider_rejects.pop(p, None)
        offers = self.offers
        out.opts.sort(key=lambda x: (x.rank, x.node_price, offers[x.oi].key, x.market.value))
        out.index()
        return out

    def _nearest(self, region: str, near: tuple[str, ...]) -> float | None:
        if self.latency is None:
            return None
        best: float | None = None
        for r in near:
            lat = self.latency(region, r)
            if lat is not None and (best is None or lat < best):
                best = lat
        return best
