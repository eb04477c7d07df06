"""Table-driven tests of the planner's semantics (DESIGN.md §5, issue #2 item 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from multicloud.errors import error_scope
from multicloud.models import Contracts
from multicloud.planner import Plan, Policy, Snapshot, plan, queue_order
from multicloud.provider import Offer
from multicloud.testing.builders import commitment, job, offer

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
LAT = {
    ("us-east-1", "us-east-1"): 2.0,
    ("us-west-2", "us-east-1"): 60.0,
    ("eu-west-1", "us-east-1"): 80.0,
}


def latency(a: str, b: str) -> float | None:
    return LAT.get((a, b)) or LAT.get((b, a))


@dataclass
class Case:
    name: str
    jobs: list[Any]
    offers: list[Offer]
    want: dict[str, str]  # job -> "provider[:market]" or "-" for unplaced
    contracts: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    reason: dict[str, str] = field(default_factory=dict)  # job -> substring of reason


def where(p: Plan, job_id: str) -> str:
    got = p.for_job(job_id)
    if not got:
        return "-"
    parts = sorted({f"{a.offer.provider}:{a.market.value}" for a in got})
    return "+".join(parts)


def case(name: str) -> Case:
    """Look a case up by name (indices shift as cases are added)."""
    return next(c for c in CASES if c.name == name)


# The planner's paths: the fast path where it applies ("auto"), the optimiser solving
# small models whole, and the optimiser's neighbourhood search (forced on any size).
PATHS = {
    "auto": Policy(),
    "optimizer": Policy(force_optimizer=True),
    "neighbourhoods": Policy(
        force_optimizer=True, exact_below=0, mip_rel_gap=1e-9, cost_stop_gap=0.0
    ),
}


def run(case: Case, force: bool | str = False) -> Plan:
    from multicloud.models import Budget

    snap = Snapshot(
        jobs=case.jobs,
        offers=case.offers,
        contracts=Contracts.model_validate(case.contracts),
        budgets={k: Budget.model_validate(v) for k, v in case.budgets.items()},
        now=NOW,
        latency=latency,
        **case.state,
    )
    if isinstance(force, str):
        return plan(snap, PATHS[force])
    return plan(snap, Policy(force_optimizer=force))


CASES = [
    Case(
        "cheapest offer wins",
        [job("a")],
        [offer("aws", price=12), offer("gcp", price=10), offer("azure", price=11)],
        {"a": "gcp:on-demand"},
        cost=10,
    ),
    Case(
        "gang needs one offer with room for all nodes",
        [job("a", nodes=4)],
        [offer("aws", price=1, capacity=3), offer("gcp", price=2, capacity=4)],
        {"a": "gcp:on-demand"},
        cost=8,
    ),
    Case(
        "capacity is never over-committed",
        [job("a", nodes=2), job("b", nodes=2)],
        [offer("aws", price=1, capacity=3), offer("gcp", price=5, capacity=2)],
        {"a": "aws:on-demand", "b": "gcp:on-demand"},
    ),
    Case(
        "higher priority gets scarce capacity",
        [job("low", priority=0), job("high", priority=5)],
        [offer("aws", price=1, capacity=1)],
        {"high": "aws:on-demand", "low": "-"},
        reason={"low": "capacity"},
    ),
    Case(
        "optimiser moves a job to a pricier offer so a lower tier fits too",
        [job("high", priority=1), job("low", accelerator="A100")],
        [
            offer("aws", price=1, capacity=1, accelerator="H100", instance_type="x"),
            offer("aws", price=1, capacity=1, accelerator="A100", instance_type="x2"),
            offer("gcp", price=2, capacity=1),
        ],
        {"high": "aws:on-demand", "low": "aws:on-demand"},
    ),
    Case(
        "lexicographic: count of every tier before cost",
        [
            job("high", priority=1, accelerator=["H100", "A100"]),
            job("low", accelerator="H100"),
        ],
        [
            offer("aws", price=1, capacity=1, accelerator="H100"),
            offer("gcp", price=3, capacity=1, accelerator="A100"),
        ],
        {"high": "gcp:on-demand", "low": "aws:on-demand"},
        cost=4,
    ),
    Case(
        "on-demand job never gets spot",
        [job("a")],
        [offer("aws", price=10, spot_price=3)],
        {"a": "aws:on-demand"},
    ),
    Case(
        "spot job gets spot, not on-demand",
        [job("a", market="spot")],
        [offer("aws", price=2), offer("gcp", price=10, spot_price=3)],
        {"a": "gcp:spot"},
    ),
    Case(
        "market any takes the cheaper of the two",
        [job("a", market="any")],
        [offer("aws", price=2), offer("gcp", price=10, spot_price=3)],
        {"a": "aws:on-demand"},
    ),
    Case(
        "max_price_per_hour caps the whole gang",
        [job("a", nodes=2, max_price_per_hour=15)],
        [offer("aws", price=10), offer("gcp", price=7)],
        {"a": "gcp:on-demand"},
        cost=14,
    ),
    Case(
        "max_price_per_hour with nothing under it leaves the job unplaced",
        [job("a", nodes=2, max_price_per_hour=5)],
        [offer("aws", price=10)],
        {"a": "-"},
        reason={"a": "no feasible offer"},
    ),
    Case(
        "placement.providers restricts",
        [job("a", providers=["aws"])],
        [offer("aws", price=10), offer("gcp", price=1)],
        {"a": "aws:on-demand"},
    ),
    Case(
        "region globs restrict",
        [job("a", regions=["eu-*"])],
        [offer("aws", region="us-east-1", price=1), offer("gcp", region="eu-west-1", price=9)],
        {"a": "gcp:on-demand"},
    ),
    Case(
        "residency excludes other jurisdictions and unknown regions",
        [job("a", residency=["EU"]), job("b", residency=["EU"])],
        [
            offer("aws", price=1, jurisdiction="US"),
            offer("gcp", region="mars-1", price=1, jurisdiction=None),
            offer("azure", region="westeurope", price=5, jurisdiction="EU", capacity=1),
        ],
        {"a": "azure:on-demand", "b": "-"},
    ),
    Case(
        "one of several accelerators, count per node is a minimum",
        [job("a", accelerator=["A100", "H100"], count=4)],
        [
            offer("aws", price=1, accelerator="A100", count=2),
            offer("gcp", price=5, accelerator="H100", count=8),
        ],
        {"a": "gcp:on-demand"},
    ),
    Case(
        "unknown accelerators on offers do not match",
        [job("a", accelerator="B200")],
        [offer("aws", price=1)],
        {"a": "-"},
        reason={"a": "no feasible offer"},
    ),
    Case(
        "deadline too close",
        [job("a", duration_hours=10, deadline="2026-11-23T05:00:00Z")],
        [offer("aws")],
        {"a": "-"},
        reason={"a": "deadline"},
    ),
    Case(
        "blocked scope is skipped",
        [job("a")],
        [offer("aws", price=1, zone="use1-az1"), offer("gcp", price=2)],
        {"a": "gcp:on-demand"},
        state={"blocked": frozenset({"aws/use1-az1"})},
    ),
    Case(
        "blocked zone scope as adapters send it (provider/region/zone)",
        [job("a")],
        [offer("aws", price=1, zone="use1-az1"), offer("gcp", price=2)],
        {"a": "gcp:on-demand"},
        state={"blocked": frozenset({error_scope("aws", "us-east-1", "use1-az1")})},
    ),
    Case(
        "a blocked zone leaves the region's other zones open",
        [job("a")],
        [offer("aws", price=1, zone="use1-az2"), offer("gcp", price=2)],
        {"a": "aws:on-demand"},
        state={"blocked": frozenset({error_scope("aws", "us-east-1", "use1-az1")})},
    ),
    Case(
        "a blocked region covers its zones",
        [job("a")],
        [offer("aws", price=1, zone="use1-az2"), offer("gcp", price=2)],
        {"a": "gcp:on-demand"},
        state={"blocked": frozenset({error_scope("aws", "us-east-1")})},
    ),
    Case(
        "team budget caps spend: cheaper job placed, the other waits",
        [job("a", team="r", duration_hours=10), job("b", team="r", duration_hours=1)],
        [offer("aws", price=10)],
        {"a": "-", "b": "aws:on-demand"},
        budgets={"r": {"max_cost_usd": 50}},
        reason={"a": "budget"},
    ),
    # --- right of first refusal -----------------------------------------------------
    Case(
        "ROFR: holder within tolerance accepts",
        [job("a")],
        [offer("aws", price=10), offer("azure", price=10.4)],
        {"a": "azure:on-demand"},
        contracts={"rofr": {"holders": ["azure"], "tolerance": 0.05}},
        cost=10.4,
    ),
    Case(
        "ROFR: holder above tolerance declines, outside offer wins",
        [job("a")],
        [offer("aws", price=10), offer("azure", price=11)],
        {"a": "aws:on-demand"},
        contracts={"rofr": {"holders": ["azure"], "tolerance": 0.05}},
        reason={"a": "price"},
    ),
    Case(
        "ROFR: match bills the outside price",
        [job("a", nodes=2)],
        [offer("aws", price=10), offer("azure", price=14)],
        {"a": "azure:on-demand"},
        contracts={"rofr": {"holders": ["azure"], "match": True}},
        cost=20,
    ),
    Case(
        "ROFR: no outside offer, holder with capacity accepts",
        [job("a", accelerator="A100")],
        [offer("aws", price=1), offer("azure", price=30, accelerator="A100")],
        {"a": "azure:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
    ),
    Case(
        "ROFR: holder without capacity declines",
        [job("a", nodes=2)],
        [offer("aws", price=10), offer("azure", price=5, capacity=1)],
        {"a": "aws:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
        reason={"a": "capacity"},
    ),
    Case(
        "ROFR: job constraints exclude the holder: declined as constraint",
        [job("a", residency=["EU"])],
        [offer("aws", region="eu-west-1", price=10, jurisdiction="EU"), offer("azure", price=5)],
        {"a": "aws:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
        reason={"a": "constraint"},
    ),
    Case(
        "ROFR: unresponsive holder counts as declined",
        [job("a")],
        [offer("aws", price=10), offer("azure", price=5)],
        {"a": "aws:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
        state={"unresponsive": frozenset({"azure"})},
        reason={"a": "window"},
    ),
    Case(
        "ROFR: holders asked in rank order",
        [job("a")],
        [offer("aws", price=10), offer("azure", price=12), offer("oracle", price=9)],
        {"a": "oracle:on-demand"},
        contracts={"rofr": {"holders": ["azure", "oracle"]}},
    ),
    Case(
        "ROFR: holder declines everything, none outside: queued",
        [job("a")],
        [offer("azure", price=12)],
        {"a": "-"},
        contracts={"rofr": {"holders": ["azure"]}},
        state={"unresponsive": frozenset({"azure"})},
        reason={"a": "declined"},
    ),
    Case(
        "ROFR: queue order, not cost, decides who the holder gets",
        [job("first", nodes=1), job("second", nodes=1)],
        [offer("aws", price=10), offer("azure", price=10, capacity=1)],
        {"first": "azure:on-demand", "second": "aws:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
    ),
    # --- reservations and commitments -------------------------------------------------
    Case(
        "reservation: zero marginal cost, used first, no ROFR offer",
        [job("a", nodes=2)],
        [offer("aws", price=10, instance_type="p5"), offer("azure", price=1)],
        {"a": "aws:reserved"},
        contracts={
            "rofr": {"holders": ["azure"]},
            "reservations": [
                {
                    "name": "blk",
                    "provider": "aws",
                    "region": "us-east-1",
                    "instance_type": "p5",
                    "nodes": 2,
                }
            ],
        },
        cost=0,
    ),
    Case(
        "reservation used up: the rest is new capacity",
        [job("a", nodes=2, priority=1), job("b", nodes=2)],
        [offer("aws", price=10, instance_type="p5")],
        {"a": "aws:reserved", "b": "aws:on-demand"},
        contracts={
            "reservations": [
                {
                    "name": "blk",
                    "provider": "aws",
                    "region": "us-east-1",
                    "instance_type": "p5",
                    "nodes": 3,
                }
            ],
        },
    ),
    Case(
        "reservation outside its window is ignored",
        [job("a")],
        [offer("aws", price=10, instance_type="p5")],
        {"a": "aws:on-demand"},
        contracts={
            "reservations": [
                {
                    "name": "blk",
                    "provider": "aws",
                    "region": "us-east-1",
                    "instance_type": "p5",
                    "nodes": 3,
                    "start": "2027-01-01T00:00:00Z",
                }
            ],
        },
    ),
    Case(
        "commitment behind schedule is preferred within tolerance",
        [job("a")],
        [offer("aws", price=10.3), offer("gcp", price=10)],
        {"a": "aws:on-demand"},
        contracts=commitment("aws"),
    ),
    Case(
        "commitment on schedule gets no preference",
        [job("a")],
        [offer("aws", price=10.3), offer("gcp", price=10)],
        {"a": "gcp:on-demand"},
        contracts=commitment("aws", spent_usd=999999),
    ),
    Case(
        "commitment preference stops at its tolerance",
        [job("a")],
        [offer("aws", price=11), offer("gcp", price=10)],
        {"a": "gcp:on-demand"},
        contracts=commitment("aws"),
    ),
    # --- inference ------------------------------------------------------------------------
    Case(
        "inference replicas spread over providers",
        [job("svc", kind="inference", serving={"replicas": 3, "spread": 2})],
        [offer("aws", price=1), offer("gcp", price=2), offer("azure", price=3)],
        {"svc": "aws:on-demand+gcp:on-demand"},
        cost=1 * 2 + 2,
    ),
    Case(
        "inference replicas stay within the latency bound",
        [
            job(
                "svc",
                kind="inference",
                serving={"replicas": 2, "regions_near": ["us-east-1"], "max_latency_ms": 50},
            )
        ],
        [offer("aws", region="eu-west-1", price=1), offer("gcp", region="us-east-1", price=5)],
        {"svc": "gcp:on-demand"},
    ),
    Case(
        "inference spread impossible: unplaced with reason",
        [job("svc", kind="inference", serving={"replicas": 2, "spread": 2})],
        [offer("aws", price=1)],
        {"svc": "-"},
        reason={"svc": "spread"},
    ),
    Case(
        "inference with limited capacity uses the optimiser",
        [job("svc", kind="inference", serving={"replicas": 4, "spread": 2})],
        [
            offer("aws", price=1, capacity=2),
            offer("gcp", price=2, capacity=1),
            offer("azure", price=3),
        ],
        {"svc": "aws:on-demand+azure:on-demand+gcp:on-demand"},
        cost=1 * 2 + 2 + 3,
    ),
    Case(
        "inference ROFR: accepting holder hosts replicas - spread + 1, rest outside",
        [job("svc", kind="inference", serving={"replicas": 3, "spread": 2})],
        [offer("aws", price=10), offer("azure", price=10)],
        {"svc": "aws:on-demand+azure:on-demand"},
        contracts={"rofr": {"holders": ["azure"]}},
        cost=2 * 10 + 10,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("path", list(PATHS))
def test_planner(case: Case, path: str) -> None:
    p = run(case, path)
    got = {name: where(p, name) for name in case.want}
    assert got == case.want
    if case.cost is not None:
        assert p.total_cost == pytest.approx(case.cost)
    for name, text in case.reason.items():
        placed = p.for_job(name)
        if placed:
            assert placed[0].rofr is not None and text in placed[0].rofr.reason
        else:
            (u,) = [u for u in p.unplaced if u.job == name]
            assert text in u.reason + " ".join(u.details)


def test_rofr_audit_records_every_offer_and_answer() -> None:
    c = Case(
        "two holders",
        [job("a")],
        [offer("aws", price=10), offer("azure", price=12), offer("oracle", price=9)],
        {},
        contracts={"rofr": {"holders": ["azure", "oracle"], "tolerance": 0.1}},
    )
    p = run(c)
    assert [(e.holder, e.answer) for e in p.audit] == [
        ("azure", "declined"),
        ("oracle", "accepted"),
    ]
    first = p.audit[0]
    assert first.outside_price_per_hour == 10
    assert first.holder_price_per_hour == 12
    assert first.terms["accelerators"] == ["H100"]
    assert first.at == NOW
    (a,) = p.placements
    assert a.rofr is not None and a.rofr.holder == "oracle" and a.rofr.outcome == "accepted"


def test_rofr_outside_price_reflects_capacity_left() -> None:
    # The cheap outside offer is taken by the first job, so P for the second is higher and
    # the holder (price 15) now wins the second job within tolerance.
    c = Case(
        "P moves",
        [job("a"), job("b")],
        [offer("aws", price=10, capacity=1), offer("gcp", price=15), offer("azure", price=15.5)],
        {"a": "aws:on-demand", "b": "azure:on-demand"},
        contracts={"rofr": {"holders": ["azure"], "tolerance": 0.05}},
    )
    p = run(c)
    assert {n: where(p, n) for n in c.want} == c.want
    assert [e.outside_price_per_hour for e in p.audit] == [10, 15]


def test_reservation_offered_to_holder_when_scope_is_all() -> None:
    contracts = {
        "rofr": {"holders": ["azure"], "scope": "all", "match": True},
        "reservations": [
            {
                "name": "blk",
                "provider": "aws",
                "region": "us-east-1",
                "instance_type": "p5",
                "nodes": 1,
            }
        ],
    }
    c = Case(
        "all",
        [job("a")],
        [offer("aws", price=10, instance_type="p5"), offer("azure", price=12)],
        {},
        contracts=contracts,
    )
    p = run(c)
    assert [e.answer for e in p.audit] == ["accepted"]
    # P is the outside price of new capacity (a reservation is not on the market), so the
    # holder matches $10/h rather than a meaningless $0.
    assert p.audit[0].outside_price_per_hour == 10
    assert p.total_cost == 10


def test_every_placement_and_unplaced_job_has_reasons() -> None:
    p = run(case("higher priority gets scarce capacity"))
    assert all(a.reasons for a in p.placements)
    assert all(u.reason for u in p.unplaced)


def test_plan_json_shape() -> None:
    p = run(case("ROFR: match bills the outside price"))
    d = p.to_dict()
    assert set(d) == {"placements", "unplaced", "audit", "total_cost", "stats"}
    (a,) = d["placements"]
    assert a["price_per_hour"] == pytest.approx(20)
    assert a["cost"] == pytest.approx(20)
    assert a["rofr"]["outcome"] == "accepted"
    assert a["rofr"]["outside_price_per_hour"] == 20  # P is quoted for the whole gang


def test_fast_path_is_used_without_contention() -> None:
    p = run(case("cheapest offer wins"))
    assert p.stats.path == "fast"
    p = run(case("higher priority gets scarce capacity"))
    assert p.stats.path == "optimizer"


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        plan(Snapshot(jobs=[job("a"), job("a")], offers=[]))


def test_holder_decline_names_the_constraint_closest_to_fitting() -> None:
    offers = [
        offer("azure", price=1, count=1, instance_type="small"),
        offer("azure", price=5, count=8, instance_type="big", jurisdiction="US"),
        offer("aws", region="eu-west-1", price=10, jurisdiction="EU"),
    ]
    c = Case(
        "why",
        [job("a", count=8, residency=["EU"])],
        offers,
        {},
        contracts={"rofr": {"holders": ["azure"]}},
    )
    (entry,) = run(c).audit
    assert entry.reason == "constraint: placement.residency"


def test_outside_price_ignores_reservations() -> None:
    contracts = {
        "rofr": {"holders": ["azure"], "match": True},
        "reservations": [
            {
                "name": "blk",
                "provider": "aws",
                "region": "us-east-1",
                "instance_type": "p5",
                "nodes": 1,
            }
        ],
    }
    svc = job("svc", kind="inference", serving={"replicas": 2, "spread": 2})
    c = Case(
        "P",
        [svc],
        [
            offer("aws", price=10, instance_type="p5"),
            offer("gcp", price=12),
            offer("azure", price=20),
        ],
        {},
        contracts=contracts,
    )
    p = run(c)
    (entry,) = p.audit
    # cheapest new outside capacity for 2 replicas over 2 providers: aws 10 + gcp 12
    assert entry.outside_price_per_hour == pytest.approx(11)
    assert entry.billed_price_per_hour == pytest.approx(11)


@pytest.mark.parametrize("force", [False, True])
def test_identical_gangs_sharing_a_pool_never_exceed_it(force: bool) -> None:
    # Two classes of identical gangs (1 h and 2 h) on a 4-node pool: each class alone fits,
    # together they would not.
    jobs = [
        job(n, nodes=2, duration_hours=h) for n, h in (("a1", 1), ("a2", 1), ("b1", 2), ("b2", 2))
    ]
    offers = [offer("aws", price=10, capacity=4), offer("gcp", price=20)]
    p = plan(Snapshot(jobs=jobs, offers=offers), Policy(force_optimizer=force))
    assert sum(a.nodes for a in p.placements if a.offer.provider == "aws") <= 4
    assert p.total_cost == pytest.approx(160)


@pytest.mark.parametrize("force", [False, True])
def test_services_sharing_a_pool_never_exceed_it(force: bool) -> None:
    svc = [
        job("s1", kind="inference", serving={"replicas": 4, "spread": 2}),
        job("s2", kind="inference", serving={"replicas": 4, "spread": 3}),
    ]
    offers = [
        offer("aws", price=1, capacity=4),
        offer("gcp", price=2, capacity=2),
        offer("coreweave", price=2, capacity=2),
    ]
    p = plan(Snapshot(jobs=svc, offers=offers), Policy(force_optimizer=force))
    used: dict[str, int] = {}
    for a in p.placements:
        used[a.offer.provider] = used.get(a.offer.provider, 0) + a.nodes
    assert used.get("aws", 0) <= 4 and used.get("gcp", 0) <= 2 and used.get("coreweave", 0) <= 2


def test_times_without_a_zone_are_utc() -> None:
    j = job("a", deadline="2026-12-01T00:00:00")
    assert j.deadline is not None and j.deadline.utcoffset() is not None
    p = plan(Snapshot(jobs=[j], offers=[offer()], now=NOW))
    assert [a.job for a in p.placements] == ["a"]


@pytest.mark.parametrize("force", [False, True])
def test_declined_job_never_goes_outside_at_a_price_the_holder_would_take(force: bool) -> None:
    # azure declines "a" against P = $100 (aws). "b" may only use aws, so the optimiser
    # would like to move "a" to gcp at $112 — which azure ($115, 4%) would have accepted.
    c = Case(
        "route around",
        [job("a"), job("b", providers=["aws"])],
        [
            offer("azure", price=115),
            offer("aws", price=100, capacity=1),
            offer("gcp", price=112, capacity=1),
        ],
        {},
        contracts={"rofr": {"holders": ["azure"], "tolerance": 0.04}},
    )
    p = run(c, force)
    for a in p.for_job("a"):
        assert a.offer.provider != "azure"
        assert a.price_per_hour * 1.04 < 115


def test_commitment_preference_does_not_lift_a_declined_job_above_what_the_holder_declined() -> (
    None
):
    c = Case(
        "commitment",
        [job("a")],
        [offer("azure", price=112), offer("aws", price=110), offer("gcp", price=100)],
        {"a": "gcp:on-demand"},
        contracts={
            "rofr": {"holders": ["azure"], "tolerance": 0.05},
            "commitments": [
                {
                    "name": "c",
                    "provider": "aws",
                    "total_usd": 1e6,
                    "spent_usd": 0,
                    "start": "2026-01-01T00:00:00Z",
                    "end": "2027-01-01T00:00:00Z",
                    "tolerance": 0.15,
                }
            ],
        },
    )
    p = run(c)
    assert {n: where(p, n) for n in c.want} == c.want


QUEUE_ORDERS = {
    "no jobs": ([], []),
    "one job": ([0], [0]),
    "higher priority first": ([0, 5, 2], [1, 2, 0]),
    "ties keep submission order": ([1, 1, 1], [0, 1, 2]),
    "ties among higher priorities too": ([0, 3, 0, 3, 7, 3], [4, 1, 3, 5, 0, 2]),
    "negative priorities last": ([-1, 0, -1, 2], [3, 1, 0, 2]),
}


@pytest.mark.parametrize(("priorities", "want"), QUEUE_ORDERS.values(), ids=QUEUE_ORDERS.keys())
def test_queue_order(priorities: list[int], want: list[int]) -> None:
    jobs = [job(f"j{i}", priority=p) for i, p in enumerate(priorities)]
    assert queue_order(jobs) == want
