"""``plan --json``'s fast text: byte for byte the encoding of ``Plan.to_dict()``."""

from __future__ import annotations

import io
import sys
from datetime import datetime, timedelta, timezone

import pytest

from multicloud.cli import plantext
from multicloud.cli.plan import echo_plan_json
from multicloud.cli.plantext import plan_json, plan_text
from multicloud.demo import DEMO_NOW, demo_paths
from multicloud.fleet import plan_fleet
from multicloud.offer import MarketKind, Offer
from multicloud.planner import Assignment, AuditEntry, Plan, PlanStats, RofrOutcome, Unplaced
from multicloud.specs import load_fleet, load_jobs

AT = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
# The same instant in another zone: equal to AT, printed differently.
AT_CET = AT.astimezone(timezone(timedelta(hours=1)))
ZONAL = Offer("aws", "us-east-1", "use1-az2", "p5.48xlarge", "H100", 8, 98.32, 30.0)
REGIONAL = Offer("azure", "eastus", None, "ND96", "H100", 8, 88.49, reservation="block")
# Equal to ZONAL, another object: its text must not depend on which one came first.
ZONAL_TWIN = Offer("aws", "us-east-1", "use1-az2", "p5.48xlarge", "H100", 8, 98.32, 30.0)


def placed(job: str, offer: Offer = ZONAL, **fields: object) -> Assignment:
    values: dict[str, object] = {
        "job": job,
        "offer": offer,
        "market": MarketKind.ON_DEMAND,
        "nodes": 1,
        "replicas": 1,
        "node_price": 98.32,
        "duration_hours": 2.0,
        "rofr": None,
        "reasons": ("cheapest of 3 feasible options",),
    }
    values.update(fields)
    return Assignment(**values)  # type: ignore[arg-type]


def audited(job: str, **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "job": job,
        "holder": "azure",
        "terms": {"accelerators": ["H100"], "count": 8, "duration_hours": 0.25},
        "outside_price_per_hour": 157.68,
        "holder_price_per_hour": 786.56,
        "answer": "declined",
        "reason": "price: own $786.56/h > outside $157.68/h + 10%",
        "billed_price_per_hour": None,
        "at": AT,
        "catalog_version": "2026.12.06",
    }
    values.update(fields)
    return AuditEntry(**values)  # type: ignore[arg-type]


def plan(*rows: object, **stats: object) -> Plan:
    return Plan(
        placements=tuple(r for r in rows if isinstance(r, Assignment)),
        unplaced=tuple(r for r in rows if isinstance(r, Unplaced)),
        audit=tuple(r for r in rows if isinstance(r, AuditEntry)),
        stats=PlanStats(**{"path": "fast", "jobs": len(rows), **stats}),  # type: ignore[arg-type]
    )


ROFR = RofrOutcome("azure", "declined", "constraint: no offer", 345.6)
PLANS = {
    "empty": plan(),
    "one placement": plan(placed("a")),
    "only queued jobs": plan(Unplaced("a", "no capacity"), Unplaced("b", "x", ("d1", "d2"))),
    "shared and equal objects": plan(
        placed("a"), placed("b", ZONAL_TWIN), placed("c"), placed("d", REGIONAL)
    ),
    "markets, reservations, ROFR": plan(
        placed("a", REGIONAL, market=MarketKind.RESERVED, node_price=0.0, rofr=ROFR),
        placed("b", market=MarketKind.SPOT, node_price=30.0, nodes=4, replicas=2),
        placed("c", rofr=RofrOutcome("oci", "accepted", "match", None)),
        placed("d", rofr=ROFR),
    ),
    "zero and minus zero prices": plan(
        placed("a", node_price=0.0),
        placed("b", node_price=-0.0),
        placed("c", node_price=0.0, rofr=RofrOutcome("azure", "declined", "r", 0.0)),
        placed("d", node_price=0.0, rofr=RofrOutcome("azure", "declined", "r", -0.0)),
    ),
    "prices that round, tiny and huge": plan(
        placed("a", node_price=0.1 + 0.2, duration_hours=1 / 3),
        placed("b", node_price=1e-5, nodes=3),
        placed("c", node_price=1e-9),
        placed("d", node_price=1.5e16),
        placed("e", node_price=0.1 + 0.2, duration_hours=1 / 3),
    ),
    "strings that need escaping": plan(
        placed('q"uote', reasons=("own price $1.00/h ≤ outside $2.00/h", "back\\slash")),
        placed("ctl\x01\n", reasons=()),
        placed('","', reasons=('","', "")),
        Unplaced("é", 'no "capacity"', ("H100×8: 0 left",)),
        audited('","', reason='a "quoted" reason', holder="oci\t"),
    ),
    "a quote before a comma in a name": plan(
        Unplaced('x",', "r"), Unplaced("y", "r"), placed('a",'), placed("b")
    ),
    "an int price, then an equal float": plan(
        placed("a", node_price=2, duration_hours=1),
        placed("b", node_price=2.0, duration_hours=1.0),
        audited("c", outside_price_per_hour=1, billed_price_per_hour=1.0),
    ),
    "audit lines": plan(
        placed("a", rofr=ROFR),
        audited("a"),
        audited("b", answer="accepted", billed_price_per_hour=140.0, at=None),
        audited("c", at=AT_CET, outside_price_per_hour=None, holder_price_per_hour=None),
        audited("d", terms={"regions": ["us-*"], "nested": {"k": [1, 2.5]}}, at=AT),
        audited("e", catalog_version=""),
    ),
    "optimiser stats": plan(
        placed("a"),
        path="optimizer",
        optimizer_jobs=1,
        optimal=False,
        mip_gap=float("inf"),
        lp_bound_gap=0.011586975370911133,
        work=58693,
    ),
}


@pytest.mark.parametrize("p", PLANS.values(), ids=PLANS.keys())
def test_the_text_is_the_documents(p: Plan) -> None:
    assert plan_text(p) == plan_json(p.to_dict())


def test_the_demo_plan() -> None:
    # Every kind of row the planner makes: ROFR, reservations, inference, queued jobs.
    jobs_path, fleet_path = demo_paths()
    p = plan_fleet(load_jobs(jobs_path), load_fleet(fleet_path), now=DEMO_NOW)
    assert p.placements and p.audit
    assert plan_text(p) == plan_json(p.to_dict())


@pytest.mark.parametrize("chunk_rows", [1, 2, 1024])
@pytest.mark.parametrize("p", PLANS.values(), ids=PLANS.keys())
def test_the_pieces_make_the_text(
    monkeypatch: pytest.MonkeyPatch, p: Plan, chunk_rows: int
) -> None:
    monkeypatch.setattr(plantext, "_CHUNK_ROWS", chunk_rows)
    assert b"".join(plantext.plan_chunks(p)) == plan_json(p.to_dict())


@pytest.mark.parametrize("stdout", ["binary", "text only"])
def test_printed_as_the_text_and_a_newline(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes], stdout: str
) -> None:
    p = PLANS["audit lines"]
    if stdout == "text only":
        # e.g. redirect_stdout to a StringIO: no binary stream under it
        text = io.StringIO()
        monkeypatch.setattr(sys, "stdout", text)
        echo_plan_json(p)
        assert text.getvalue().encode("utf-8") == plan_json(p.to_dict()) + b"\n"
    else:
        echo_plan_json(p)
        assert capsysbinary.readouterr().out == plan_json(p.to_dict()) + b"\n"
