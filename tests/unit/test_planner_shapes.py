"""Job shapes' options kept across plans: a plan with the cache equals the plan without."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multicloud.models import Contracts, Job
from multicloud.planner import Plan, Snapshot, plan
from multicloud.planner.shapes import Prepared, ShapeCache
from multicloud.provider import Offer
from multicloud.testing.builders import job, offer

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _latency(a: str, b: str) -> float | None:
    return 5.0 if a == b else 80.0


def _other_latency(a: str, b: str) -> float | None:
    return 5.0


def base_offers() -> list[Offer]:
    return [
        offer("aws", price=10.0, spot_price=4.0, capacity=8, zone="use1-az1"),
        offer("aws", region="eu-north-1", price=12.0, jurisdiction="EU", capacity=None),
        offer("gcp", region="us-central1", price=9.0, capacity=3),
        offer("gcp", region="europe-west4", price=11.0, jurisdiction="EU", spot_price=3.0),
        offer("azure", region="eastus", price=9.5, capacity=6),
        offer("azure", region="eastus", instance_type="nd-a100", accelerator="A100", price=6.0),
        offer("coreweave", region="US-EAST-04", count=4, price=7.0, capacity=2),
    ]


def base_jobs() -> list[Job]:
    return [
        job("train-a", nodes=2),
        job("train-b", nodes=3, priority=1, market="any"),
        job("eu", residency=["EU"], market="any"),
        job("cheap", max_price_per_hour=10.0),
        job("multi", accelerator=["H100", "A100"], count=8),
        job("small", count=4, providers=["coreweave", "gcp"]),
        job(
            "serve",
            kind="inference",
            serving={"replicas": 2, "regions_near": ["eastus"], "max_latency_ms": 50},
        ),
        job(
            "serve-capped",
            kind="inference",
            max_price_per_hour=9.6,
            serving={"replicas": 1, "regions_near": ["eastus"], "max_latency_ms": 50},
        ),
    ]


CONTRACTS: dict[str, Any] = {
    "rofr": {"holders": ["azure"], "tolerance": 0.10},
    "reservations": [
        {
            "name": "block",
            "provider": "aws",
            "region": "us-east-1",
            "zone": "use1-az1",
            "instance_type": "aws-h100",
            "nodes": 4,
            "start": "2026-06-02T00:00:00Z",
        }
    ],
    "commitments": [
        {
            "name": "commit",
            "provider": "gcp",
            "total_usd": 1000.0,
            "spent_usd": 500.0,
            "start": "2026-05-01T00:00:00Z",
            "end": "2026-07-01T00:00:00Z",
            "tolerance": 0.2,
        }
    ],
}


def snap(**changes: Any) -> Snapshot:
    base: dict[str, Any] = {
        "jobs": base_jobs(),
        "offers": base_offers(),
        "contracts": Contracts.model_validate(CONTRACTS),
        "now": T0,
        "latency": _latency,
        "catalog_version": "test",
    }
    base.update(changes)
    return Snapshot(**base)


def seen(p: Plan) -> tuple[object, ...]:
    """What a plan decided (its timings left out)."""
    return (p.placements, p.unplaced, p.audit, p.stats.path)


def with_offer(i: int, **fields: Any) -> Callable[[list[Offer]], list[Offer]]:
    def edit(offers: list[Offer]) -> list[Offer]:
        return [replace(o, **fields) if k == i else o for k, o in enumerate(offers)]

    return edit


@dataclass
class Step:
    name: str
    offers: Callable[[list[Offer]], list[Offer]] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    same_table: bool = False


# Each step changes one thing from the base snapshot; planned in this order through one
# cache, so every step also follows the entries the previous ones left.
STEPS = [
    Step("base", same_table=True),
    Step("capacity shrinks", with_offer(0, capacity=7), same_table=True),
    Step("capacity below a gang", with_offer(2, capacity=1), same_table=True),
    Step(
        "capacity gone everywhere", lambda os: [replace(o, capacity=0) for o in os], same_table=True
    ),
    Step("on-demand price", with_offer(2, price=8.0)),
    Step("spot price appears", with_offer(4, spot_price=2.0)),
    Step("offer added", lambda os: [*os, offer("gcp", region="us-east4", price=8.5)]),
    Step("offer removed", lambda os: os[1:]),
    Step("offers reordered", lambda os: os[::-1]),
    Step("region of an offer", with_offer(1, region="eu-west-1")),
    Step("jurisdiction", with_offer(3, jurisdiction="US")),
    Step("accelerators per node", with_offer(6, count=8)),
    Step("catalog version", with_offer(0, catalog_version="v2")),
    Step("provider blocked", state={"blocked": frozenset({"gcp"})}),
    Step("region blocked", state={"blocked": frozenset({"azure/eastus"})}),
    Step("zone blocked", state={"blocked": frozenset({"aws/us-east-1/use1-az1"})}),
    Step("short zone blocked", state={"blocked": frozenset({"aws/use1-az1"})}),
    Step("no ROFR", state={"contracts": Contracts.model_validate({})}),
    Step(
        "other holder",
        state={"contracts": Contracts.model_validate({**CONTRACTS, "rofr": {"holders": ["gcp"]}})},
    ),
    Step("reservation window opens", state={"now": T0 + timedelta(days=2)}),
    Step(
        "reservation in use",
        state={"now": T0 + timedelta(days=2), "reservation_used": {"block": 3}},
    ),
    Step("commitment ahead of schedule", state={"now": T0 - timedelta(days=30)}),
    Step("latency function", state={"latency": _other_latency}),
    Step("no latency known", state={"latency": None}),
]


def _snap_of(step: Step) -> Snapshot:
    offers = base_offers()
    if step.offers is not None:
        offers = step.offers(offers)
    return snap(offers=offers, **step.state)


def test_cached_plans_equal_fresh_plans_over_changing_snapshots() -> None:
    cache = ShapeCache()
    for _ in range(2):  # the second pass meets every table already cached
        for step in STEPS:
            s = _snap_of(step)
            assert seen(plan(s, shapes=cache)) == seen(plan(s)), step.name
    assert cache.hits > 0


@pytest.mark.parametrize("step", STEPS[1:], ids=lambda s: s.name)
def test_a_change_misses_unless_only_capacity_changed(step: Step) -> None:
    cache = ShapeCache()
    plan(snap(), shapes=cache)
    misses = cache.misses
    plan(_snap_of(step), shapes=cache)
    assert (cache.misses == misses) is step.same_table


def test_other_accelerators_offers_do_not_matter() -> None:
    cache = ShapeCache()
    plan(snap(), shapes=cache)
    misses = cache.misses
    extra = offer("gcp", region="us-central1", instance_type="a2", accelerator="A100", price=4.0)
    moved = snap(offers=[extra, *base_offers()])  # every H100 offer has a new place
    assert seen(plan(moved, shapes=cache)) == seen(plan(moved))
    assert cache.misses == misses + 1  # only the job that also takes A100s


def _poison(cache: ShapeCache) -> None:
    """Make every kept entry wrong: no options at all."""
    for prep in cache._shapes.values():
        prep.opts = []
        prep.survivors = []
        prep.finished.clear()


@pytest.mark.parametrize("step", [s for s in STEPS if not s.same_table], ids=lambda s: s.name)
def test_a_stale_entry_is_never_used(step: Step) -> None:
    # Every step changes the H100 offers or the context, and every job takes H100s, so
    # every entry of the base snapshot is stale for the step's.
    cache = ShapeCache()
    old = snap()
    plan(old, shapes=cache)
    _poison(cache)
    # The poison shows where the cache is read: the old snapshot now gets the wrong
    # answer...
    assert not plan(old, shapes=cache).placements
    # ...and a changed one never reads it.
    new = _snap_of(step)
    assert seen(plan(new, shapes=cache)) == seen(plan(new))


def _prep() -> Prepared:
    return Prepared(1, Counter(), {}, {}, [], [])


@pytest.mark.parametrize(
    ("room", "puts", "kept"),
    [
        (1, ["a", "b"], {"b"}),
        (2, ["a", "b", "c"], {"b", "c"}),
        (2, ["a", "b", "a", "c"], {"a", "c"}),
    ],
)
def test_the_cache_is_bounded_least_recently_used_first_out(
    room: int, puts: list[str], kept: set[str]
) -> None:
    cache = ShapeCache(max_shapes=room)
    for key in puts:
        if cache.get(key) is None:
            cache.put(key, _prep())
    assert set(cache._shapes) == kept
    assert len(cache) == len(kept)


def test_an_interned_id_is_never_reused() -> None:
    cache = ShapeCache(max_values=2)
    ids = [cache.intern(v) for v in ("x", "y", "x", "z", "y")]
    # "y" was forgotten when "z" came (x was used more recently): it comes back anew.
    assert ids == [0, 1, 0, 2, 3]


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError):
        ShapeCache(max_shapes=0)


@st.composite
def rounds_st(draw: st.DrawFn) -> list[Snapshot]:
    """A few scheduler rounds: capacities, prices and blocked scopes drift."""
    out = []
    for _ in range(draw(st.integers(2, 5))):
        offers = []
        for o in base_offers():
            if draw(st.integers(0, 5)) == 0:
                continue
            offers.append(
                replace(
                    o,
                    capacity=draw(st.one_of(st.none(), st.integers(0, 4))),
                    price=draw(st.sampled_from([o.price, 8.0])),
                )
            )
        blocked = draw(st.sets(st.sampled_from(["gcp", "azure/eastus", "aws/us-east-1/use1-az1"])))
        out.append(snap(offers=offers, blocked=frozenset(blocked)))
    return out


@given(rounds_st())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_a_shared_cache_never_changes_a_plan(rounds: list[Snapshot]) -> None:
    cache = ShapeCache(max_shapes=4, max_values=3)
    for s in rounds:
        assert seen(plan(s, shapes=cache)) == seen(plan(s))
