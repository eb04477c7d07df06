"""Property tests: hard constraints always hold, and small contended plans are optimal."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multicloud.models import Contracts, Job, Kind
from multicloud.planner import Plan, Policy, Snapshot, plan
from multicloud.provider import MarketKind, Offer
from multicloud.testing.builders import job, offer

PROVIDERS = ("aws", "gcp", "azure")
ACCELS = ("H100", "A100")


@st.composite
def offers_st(draw: st.DrawFn, max_offers: int = 4) -> list[Offer]:
    n = draw(st.integers(1, max_offers))
    out = []
    for i in range(n):
        price = draw(st.integers(1, 20))
        spot = draw(st.one_of(st.none(), st.integers(1, 20)))
        out.append(
            offer(
                draw(st.sampled_from(PROVIDERS)),
                region=draw(st.sampled_from(["us-east-1", "eu-west-1"])),
                instance_type=f"t{i}",
                accelerator=draw(st.sampled_from(ACCELS)),
                count=draw(st.sampled_from([4, 8])),
                price=float(price),
                spot_price=None if spot is None else float(spot),
                capacity=draw(st.one_of(st.none(), st.integers(0, 4))),
                jurisdiction="EU" if i % 2 else "US",
            )
        )
    return out


@st.composite
def jobs_st(draw: st.DrawFn, max_jobs: int = 4) -> list[Job]:
    n = draw(st.integers(1, max_jobs))
    out = []
    for i in range(n):
        fields: dict[str, Any] = {
            "accelerator": draw(st.sampled_from([["H100"], ["A100"], ["H100", "A100"]])),
            "count": draw(st.sampled_from([4, 8])),
            "nodes": draw(st.integers(1, 3)),
            "priority": draw(st.integers(0, 2)),
            "market": draw(st.sampled_from(["on-demand", "spot", "any"])),
            "duration_hours": float(draw(st.integers(1, 5))),
        }
        if draw(st.booleans()):
            fields["max_price_per_hour"] = float(draw(st.integers(5, 60)))
        if draw(st.integers(0, 4)) == 0:
            fields["residency"] = ["EU"]
        if draw(st.integers(0, 4)) == 0:
            fields["providers"] = [draw(st.sampled_from(PROVIDERS))]
        out.append(job(f"j{i}", **fields))
    return out


def feasible(j: Job, o: Offer) -> list[tuple[MarketKind, float]]:
    """An independent statement of the hard constraints, for brute force."""
    r = j.resources
    if o.accelerator not in r.accelerator or o.count < r.count:
        return []
    if j.placement.providers and o.provider not in j.placement.providers:
        return []
    if j.placement.residency and o.jurisdiction not in j.placement.residency:
        return []
    if o.capacity is not None and o.capacity < r.nodes:
        return []
    out = []
    if j.market.value in ("on-demand", "any") and o.price is not None:
        out.append((MarketKind.ON_DEMAND, o.price))
    if j.market.value in ("spot", "any") and o.spot_price is not None:
        out.append((MarketKind.SPOT, o.spot_price))
    cap = j.max_price_per_hour
    return [(m, p) for m, p in out if cap is None or p * r.nodes <= cap + 1e-9]


def brute_force(jobs: list[Job], offers: list[Offer]) -> tuple[tuple[int, ...], float]:
    tiers = sorted({j.priority for j in jobs}, reverse=True)
    choices = [
        [None] + [(oi, p) for oi, o in enumerate(offers) for _, p in feasible(j, o)] for j in jobs
    ]
    best: tuple[tuple[int, ...], float] | None = None
    for combo in itertools.product(*choices):
        used: Counter[int] = Counter()
        for j, c in zip(jobs, combo, strict=True):
            if c is not None:
                used[c[0]] += j.resources.nodes
        if any(
            offers[oi].capacity is not None and n > offers[oi].capacity  # type: ignore[operator]
            for oi, n in used.items()
        ):
            continue
        counts = tuple(
            sum(1 for j, c in zip(jobs, combo, strict=True) if c is not None and j.priority == t)
            for t in tiers
        )
        cost = sum(
            c[1] * j.resources.nodes * j.duration_hours
            for j, c in zip(jobs, combo, strict=True)
            if c is not None
        )
        if best is None or (counts, -cost) > (best[0], -best[1]):
            best = (counts, cost)
    assert best is not None
    return best


def check_hard_constraints(p: Plan, jobs: list[Job], offers: list[Offer]) -> None:
    by_name = {j.name: j for j in jobs}
    used: Counter[str] = Counter()
    for a in p.placements:
        j = by_name[a.job]
        o = a.offer
        used[o.key] += a.nodes
        assert o.accelerator in j.resources.accelerator
        assert o.count >= j.resources.count
        if j.placement.providers:
            assert o.provider in j.placement.providers
        if j.placement.residency:
            assert o.jurisdiction in j.placement.residency
        if a.market is MarketKind.SPOT:
            assert j.market.value in ("spot", "any")
        if a.market is MarketKind.ON_DEMAND:
            assert j.market.value in ("on-demand", "any")
        if j.kind is Kind.TRAINING:
            assert a.nodes == j.resources.nodes  # a gang stays on one offer
            if j.max_price_per_hour is not None:
                assert a.price_per_hour <= j.max_price_per_hour + 1e-6
    caps = {o.key: o.capacity for o in offers}
    for key, n in used.items():
        cap = caps.get(key)
        if cap is not None:
            assert n <= cap, f"{key} over-committed: {n} > {cap}"
    placed = {a.job for a in p.placements}
    assert placed.isdisjoint({u.job for u in p.unplaced})
    assert placed | {u.job for u in p.unplaced} == set(by_name)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Every path: the fast path where it applies, the optimiser solving the model whole, and
# its neighbourhood search (forced on these small models; told to search on to the
# optimum, since by default its rounds stop 1 % above the bound).
POLICIES = [
    Policy(),
    Policy(force_optimizer=True),
    Policy(force_optimizer=True, exact_below=0, mip_rel_gap=1e-9, cost_stop_gap=0.0),
]


@SETTINGS
@given(jobs=jobs_st(), offers=offers_st(), policy=st.sampled_from(POLICIES))
def test_small_plans_match_brute_force_optimum(
    jobs: list[Job], offers: list[Offer], policy: Policy
) -> None:
    p = plan(Snapshot(jobs=jobs, offers=offers), policy)
    check_hard_constraints(p, jobs, offers)
    tiers = sorted({j.priority for j in jobs}, reverse=True)
    placed = {a.job for a in p.placements}
    counts = tuple(sum(1 for j in jobs if j.priority == t and j.name in placed) for t in tiers)
    want_counts, want_cost = brute_force(jobs, offers)
    assert counts == want_counts
    assert p.total_cost == pytest.approx(want_cost, rel=1e-6, abs=1e-6)


@SETTINGS
@given(
    jobs=jobs_st(max_jobs=6),
    offers=offers_st(max_offers=5),
    holders=st.lists(st.sampled_from(PROVIDERS), min_size=1, max_size=2, unique=True),
    match=st.booleans(),
    tolerance=st.sampled_from([0.0, 0.1, 0.5]),
    policy=st.sampled_from(POLICIES),
)
def test_hard_constraints_hold_with_rofr(
    jobs: list[Job],
    offers: list[Offer],
    holders: list[str],
    match: bool,
    tolerance: float,
    policy: Policy,
) -> None:
    contracts = Contracts.model_validate(
        {"rofr": {"holders": holders, "match": match, "tolerance": tolerance}}
    )
    p = plan(Snapshot(jobs=jobs, offers=offers, contracts=contracts), policy)
    check_hard_constraints(p, jobs, offers)
    for a in p.placements:
        if a.rofr is not None and a.rofr.outcome == "declined":
            assert a.offer.provider not in holders  # declined jobs never land on a holder
    asked = [e.job for e in p.audit]
    queue = [j.name for j in sorted(jobs, key=lambda j: -j.priority)]
    assert asked == sorted(asked, key=queue.index)  # holders hear requests in queue order


@SETTINGS
@given(
    offers=offers_st(max_offers=5),
    replicas=st.integers(1, 4),
    spread=st.integers(1, 3),
    policy=st.sampled_from(POLICIES),
)
def test_inference_spread_and_replicas(
    offers: list[Offer], replicas: int, spread: int, policy: Policy
) -> None:
    spread = min(spread, replicas)
    svc = job(
        "svc",
        kind="inference",
        accelerator=["H100", "A100"],
        count=4,
        serving={"replicas": replicas, "spread": spread},
    )
    p = plan(Snapshot(jobs=[svc], offers=offers), policy)
    check_hard_constraints(p, [svc], offers)
    got = p.for_job("svc")
    if got:
        assert sum(a.replicas for a in got) == replicas
        assert len({a.offer.provider for a in got}) >= spread


@st.composite
def services_st(draw: st.DrawFn, max_services: int = 2) -> list[Job]:
    out = []
    for i in range(draw(st.integers(1, max_services))):
        replicas = draw(st.integers(1, 2))
        fields: dict[str, Any] = {
            "kind": "inference",
            "accelerator": draw(st.sampled_from([["H100"], ["A100"], ["H100", "A100"]])),
            "count": 4,
            "nodes": draw(st.integers(1, 2)),
            "priority": draw(st.integers(0, 2)),
            "market": draw(st.sampled_from(["on-demand", "any"])),
            "serving": {"replicas": replicas, "spread": draw(st.integers(1, replicas))},
        }
        if draw(st.booleans()):
            fields["max_price_per_hour"] = float(draw(st.integers(10, 60)))
        out.append(job(f"s{i}", **fields))
    return out


def brute_force_counts(jobs: list[Job], offers: list[Offer]) -> tuple[int, ...]:
    """The most jobs per tier (top tier first), services each placed whole or not at all.

    A service's replicas may go on any of its feasible options (several on one), on at
    least ``spread`` providers, within its price cap in total.
    """
    tiers = sorted({j.priority for j in jobs}, reverse=True)
    choices: list[list[tuple[int, ...] | None]] = []
    for j in jobs:
        opts = [(oi, p) for oi, o in enumerate(offers) for _, p in feasible(j, o)]
        if j.serving is None:
            choices.append([None, *((oi,) for oi, _ in opts)])
            continue
        ways: list[tuple[int, ...] | None] = [None]
        for pick in itertools.combinations_with_replacement(opts, j.serving.replicas):
            price = sum(p * j.resources.nodes for _, p in pick)
            cap = j.max_price_per_hour
            if len({offers[oi].provider for oi, _ in pick}) >= j.serving.spread and (
                cap is None or price <= cap + 1e-9
            ):
                ways.append(tuple(oi for oi, _ in pick))
        choices.append(ways)
    best: tuple[int, ...] = tuple(0 for _ in tiers)
    for combo in itertools.product(*choices):
        used: Counter[int] = Counter()
        for j, c in zip(jobs, combo, strict=True):
            for oi in c or ():
                used[oi] += j.resources.nodes
        if any(
            offers[oi].capacity is not None and n > offers[oi].capacity  # type: ignore[operator]
            for oi, n in used.items()
        ):
            continue
        best = max(
            best,
            tuple(
                sum(1 for j, c in zip(jobs, combo, strict=True) if c and j.priority == t)
                for t in tiers
            ),
        )
    return best


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gangs=jobs_st(max_jobs=2),
    services=services_st(),
    offers=offers_st(max_offers=3),
    # and neighbourhoods of a few variables, so the search's own moves place the services
    policy=st.sampled_from(
        [*POLICIES, Policy(force_optimizer=True, exact_below=0, neighbourhood_size=3)]
    ),
)
def test_tier_counts_with_services_match_brute_force(
    gangs: list[Job], services: list[Job], offers: list[Offer], policy: Policy
) -> None:
    # A service counts through its 0/1 "placed" variable, a gang through its class's
    # variables; the services' rows (replicas, spread, price cap) must not cost a tier a
    # job on any path. (The count cutoff itself is checked plan by plan in
    # test_planner_count.py.)
    jobs = gangs + services
    p = plan(Snapshot(jobs=jobs, offers=offers), policy)
    check_hard_constraints(p, jobs, offers)
    tiers = sorted({j.priority for j in jobs}, reverse=True)
    placed = {a.job for a in p.placements}
    counts = tuple(sum(1 for j in jobs if j.priority == t and j.name in placed) for t in tiers)
    assert counts == brute_force_counts(jobs, offers)
