"""The plan's value types whose initialisers are written out (for the fast path's speed).

``Assignment`` and ``AuditEntry`` fill their fields by hand instead of through the frozen
dataclass's generated initialiser; these tests hold them to what that one did: every
field, in order, by position or keyword, and still frozen and equal by value (an
``Assignment`` also hashable; an ``AuditEntry`` never was: its terms are a dict).
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest

from multicloud.planner.types import Assignment, AuditEntry, RofrOutcome
from multicloud.provider import MarketKind, Offer

OFFER = Offer(
    provider="aws",
    region="us-east-1",
    zone=None,
    instance_type="p5.48xlarge",
    accelerator="H100",
    count=8,
    price=98.32,
    spot_price=None,
    capacity=4,
)

VALUES: dict[type, dict[str, Any]] = {
    Assignment: {
        "job": "train-1",
        "offer": OFFER,
        "market": MarketKind.ON_DEMAND,
        "nodes": 4,
        "replicas": 1,
        "node_price": 98.32,
        "duration_hours": 2.5,
        "rofr": None,
        "reasons": ("cheapest of 3 feasible options",),
    },
    AuditEntry: {
        "job": "train-1",
        "holder": "azure",
        "terms": {"accelerators": ["H100"], "count": 8, "nodes": 4},
        "outside_price_per_hour": 393.28,
        "holder_price_per_hour": 400.0,
        "answer": "accepted",
        "reason": "within its tolerance of the outside price",
        "billed_price_per_hour": 395.5,  # no other field's value: a mix-up shows
        "at": datetime(2026, 12, 8, tzinfo=timezone.utc),
        "catalog_version": "builtin-1",
    },
}


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__name__)
def test_the_initialiser_takes_every_field_in_order(cls: type) -> None:
    params = list(inspect.signature(cls).parameters)
    assert params == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__name__)
def test_by_position_and_by_keyword_the_same_value(cls: type) -> None:
    values = VALUES[cls]
    by_keyword = cls(**values)
    by_position = cls(*values.values())
    assert dataclasses.asdict(by_keyword) == dataclasses.asdict(by_position)
    assert {f.name: getattr(by_keyword, f.name) for f in dataclasses.fields(cls)} == values
    assert by_keyword == by_position


def test_an_assignment_hashes_by_value() -> None:
    values = VALUES[Assignment]
    assert hash(Assignment(**values)) == hash(Assignment(*values.values()))


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__name__)
def test_still_frozen(cls: type) -> None:
    value = cls(**VALUES[cls])
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.job = "other"


@pytest.mark.parametrize("cls", VALUES, ids=lambda c: c.__name__)
def test_replace_and_pickle_keep_every_field(cls: type) -> None:
    value = cls(**VALUES[cls])
    moved = dataclasses.replace(value, job="train-2")
    assert moved.job == "train-2"
    assert dataclasses.replace(moved, job="train-1") == value
    assert pickle.loads(pickle.dumps(value)) == value


def test_an_assignment_with_rofr_keeps_its_outcome() -> None:
    outcome = RofrOutcome("azure", "accepted", "matched the outside price", 393.28)
    a = Assignment(**{**VALUES[Assignment], "rofr": outcome})
    assert a.rofr is outcome
    assert a.to_dict()["rofr"] == outcome.to_dict()
