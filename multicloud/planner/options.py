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
from operator import itemgetter

from multicloud.models import Commitment, Job, Market
from multicloud.planner.shapes import (
    CAPACITY_STAGE,
    Prepared,
    ShapeCache,
    Survivor,
    context,
    group,
)
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
        # Ties by name, not by which filter happened to run first: the line is the same
        # whether the options were just computed or prepared in an earlier plan.
        ranked = sorted(self.rejects.items(), key=lambda kv: (-kv[1], kv[0]))
        parts = [f"{n} by {why}" for why, n in ranked]
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


def shape_key(job: Job) -> tuple[object, ...]:
    """Return what a job's options depend on: jobs with equal keys have equal options.

    Args:
        job: The job.

    Returns:
        A hashable key.
    """
    serving = job.serving
    res = job.resources
    place = job.placement
    # Plain tuples: hashing and comparing the pydantic models themselves was a third of
    # the fast path's time.
    return (
        res.accelerator,
        res.count,
        res.nodes,
        job.market,
        # The cap filters offers for inference too (a replica dearer than the whole
        # service's cap can never be part of it), so it is part of every shape.
        job.max_price_per_hour,
        place.providers,
        place.regions,
        place.residency,
        serving.regions_near if serving else (),
        serving.max_latency_ms if serving else None,
    )


# Finished options kept per prepared shape: one per set of capacity-short offers; a steady
# scheduler sees one or two.
FINISHED_KEPT = 4


class OptionIndex:
    """Computes and caches the options of job shapes against one offer table.

    Args:
        offers: The offer table (reservation offers included).
        holders: ROFR holders (empty without ROFR).
        blocked: Blocked scopes: provider, provider/region or provider/region/zone (also
            provider/zone).
        latency: Region latency function.
        preferred: Providers behind a commitment → ranking discount.
        shared: Prepared shapes kept across plans (:mod:`.shapes`); None computes every
            shape afresh. Either way the options are the same.
    """

    def __init__(
        self,
        offers: Sequence[Offer],
        *,
        holders: Sequence[str] = (),
        blocked: frozenset[str] = frozenset(),
        latency: LatencyFn | None = None,
        preferred: Mapping[str, float] | None = None,
        shared: ShapeCache | None = None,
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
        self.shared = shared
        # What a shape's options depend on besides the shape: its accelerators' offers
        # (every field but capacity, in table order) and the context; interned once per
        # plan, so a lookup hashes small ids (docs/architecture.md, "The planner").
        self._context = -1
        self._groups: dict[str, int] = {}
        if shared is not None:
            self._context = shared.intern(context(self.holders, blocked, latency, self.preferred))
            self._groups = {
                acc: shared.intern(group(acc, [offers[i] for i in ois]))
                for acc, ois in self._by_accel.items()
            }

    def for_job(self, job: Job) -> Options:
        """Return the options of a job (shared by every job of the same shape).

        Args:
            job: The job.

        Returns:
            Its options.
        """
        key = shape_key(job)
        hit = self._cache.get(key)
        if hit is None:
            cands: list[int] = []
            for acc in job.resources.accelerator:
                cands.extend(self._by_accel.get(acc, ()))
            shared = self.shared
            if shared is None:
                prep = self._prepare(job, cands, local=False)
            else:
                groups = tuple(self._groups.get(a, -1) for a in job.resources.accelerator)
                full = (key, self._context, groups)
                prep = shared.get(full) or shared.put(full, self._prepare(job, cands, local=True))
            hit = self._cache[key] = self._finish(prep, cands)
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

    def _prepare(self, job: Job, cands: list[int], *, local: bool) -> Prepared:
        """Run every filter but capacity on the job's candidate offers.

        Args:
            job: The job.
            cands: The offers of its accelerators (places in the table).
            local: Number offers by their place in ``cands``, not in the table, so the
                result holds for any table whose offers of these accelerators are the
                same, wherever they sit in it (what a cache keeps).

        Returns:
            The prepared shape.
        """
        res = job.resources
        place = job.placement
        serving = job.serving
        nodes = res.nodes
        allow_od = job.market in (Market.ON_DEMAND, Market.ANY)
        allow_spot = job.market in (Market.SPOT, Market.ANY)
        cap = job.max_price_per_hour
        rejects: Counter[str] = Counter()
        # Each filter's reason is the same for every offer of one shape, so a provider's
        # reason follows from the highest stage any of its offers reached.
        reasons = {
            1: f"fewer than {res.count} accelerators per node",
            2: "placement.providers",
            3: "placement.regions",
            4: "placement.residency",
            5: "blocked after recent capacity/quota errors",
            6: "serving.max_latency_ms",
            CAPACITY_STAGE: f"capacity below {nodes} nodes",
            8: f"market {job.market.value}",
            9: "max_price_per_hour",
        }
        stage_of: dict[str, int] = {}
        survivors: list[Survivor] = []  # (number, provider, stage after capacity or 0)

        def reject(o: Offer, stage: int) -> None:
            rejects[reasons[stage]] += 1
            if stage > stage_of.get(o.provider, -1):
                stage_of[o.provider] = stage

        offers = self.offers
        keyed: list[tuple[tuple[float, float, str, str], Opt]] = []
        for li, oi in enumerate(cands):
            o = offers[oi]
            n = li if local else oi
            if o.count < res.count:
                reject(o, 1)
            elif place.providers and o.provider not in place.providers:
                reject(o, 2)
            elif place.regions and not self._region_ok(o.region, place.regions):
                reject(o, 3)
            elif place.residency and o.jurisdiction not in place.residency:
                reject(o, 4)
            elif self._is_blocked(o):
                reject(o, 5)
            elif (
                serving is not None
                and serving.max_latency_ms is not None
                and not self._near(o.region, serving.regions_near, serving.max_latency_ms)
            ):
                reject(o, 6)
            else:
                markets: list[tuple[MarketKind, float]] = []
                if o.reservation is not None:
                    markets.append((MarketKind.RESERVED, 0.0))
                else:
                    if allow_od and o.price is not None:
                        markets.append((MarketKind.ON_DEMAND, o.price))
                    if allow_spot and o.spot_price is not None:
                        markets.append((MarketKind.SPOT, o.spot_price))
                if not markets:
                    survivors.append((n, o.provider, 8))
                    continue
                discount = self.preferred.get(o.provider, 0.0)
                holder = o.provider in self.holders
                kept = False
                for market, price in markets:
                    if cap is not None and price * nodes > cap + 1e-9:
                        continue
                    rank = price * (1.0 - discount)
                    opt = Opt(n, market, price, rank, holder, o.provider)
                    keyed.append(((rank, price, o.key, market.value), opt))
                    kept = True
                survivors.append((n, o.provider, 0 if kept else 9))
        keyed.sort(key=itemgetter(0))
        opts = [opt for _, opt in keyed]
        return Prepared(nodes, rejects, stage_of, reasons, survivors, opts, local)

    def _finish(self, prep: Prepared, cands: list[int]) -> Options:
        """Apply the table's capacities to a prepared shape, in the table's numbering."""
        short = prep.short(self.offers, cands)
        if not prep.local:
            out = Options(opts=[o for o in prep.opts if o.oi not in short])
            return self._reasons(out, prep, cands, short)
        fkey = (short, tuple(cands))
        hit = prep.finished.get(fkey)
        if hit is not None:
            prep.finished.move_to_end(fkey)
            return hit
        out = Options(
            opts=[
                Opt(cands[o.oi], o.market, o.node_price, o.rank, o.holder, o.provider)
                for o in prep.opts
                if o.oi not in short
            ]
        )
        prep.finished[fkey] = self._reasons(out, prep, cands, short)
        if len(prep.finished) > FINISHED_KEPT:
            prep.finished.popitem(last=False)
        return out

    def _reasons(
        self, out: Options, prep: Prepared, cands: list[int], short: tuple[int, ...]
    ) -> Options:
        """Fill in why offers were left out, and the sub-lists, of finished options."""
        other = len(self.offers) - len(cands)
        if other:
            out.rejects["accelerator"] += other
        rejects = out.rejects
        rejects.update(prep.rejects)
        stage_of = dict(prep.stage_of)
        seen: set[str] = set()
        for n, provider, stage in prep.survivors:
            if short and n in short:
                stage = CAPACITY_STAGE
            if stage == 0:
                seen.add(provider)
                continue
            rejects[prep.reasons[stage]] += 1
            if stage > stage_of.get(provider, -1):
                stage_of[provider] = stage
        out.provider_rejects = {
            p: prep.reasons[stage] for p, stage in stage_of.items() if p not in seen
        }
        out.index()
        return out

    def _near(self, region: str, near: tuple[str, ...], limit: float) -> bool:
        lat = self._nearest(region, near)
        return lat is not None and lat <= limit

    def _nearest(self, region: str, near: tuple[str, ...]) -> float | None:
        if self.latency is None:
            return None
        best: float | None = None
        for r in near:
            lat = self.latency(region, r)
            if lat is not None and (best is None or lat < best):
                best = lat
        return best
