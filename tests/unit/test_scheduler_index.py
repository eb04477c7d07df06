"""The scheduler's index keeps each reservation block's use as live attempts come and go."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from multicloud.provider import Handle, MarketKind, Place
from multicloud.service.scheduler.index import JobIndex
from multicloud.store import AttemptRecord
from multicloud.testing.builders import offer

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def row(key: str, nodes: int, block: str | None) -> AttemptRecord:
    place = Place(offer(reservation=block), nodes, MarketKind.ON_DEMAND, 0.0)
    return AttemptRecord(f"job-{key}", 1, key, place, None, None, T0, None)


def launched(r: AttemptRecord) -> AttemptRecord:
    o = r.place.offer
    return r.with_handle(
        Handle(
            o.provider,
            "h-" + r.request_id,
            r.request_id,
            o.region,
            o.zone,
            o.instance_type,
            r.nodes,
            r.market,
            r.job_id,
        )
    )


def summed(index: JobIndex) -> dict[str, int]:
    used: Counter[str] = Counter()
    for r in index.live.values():
        if r.reservation is not None:
            used[r.reservation] += r.nodes
    return dict(used)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([("add", "a", 2, "blk"), ("add", "b", 3, "blk")], {"blk": 5}),
        ([("add", "a", 2, "blk"), ("add", "b", 4, None)], {"blk": 2}),
        ([("add", "a", 2, "blk"), ("drop", "a", 0, None)], {}),
        ([("add", "a", 2, "blk"), ("launch", "a", 0, None)], {"blk": 2}),
        ([("add", "a", 2, "blk"), ("add", "a", 2, "blk")], {"blk": 2}),
        ([("add", "a", 2, "x"), ("add", "b", 1, "y"), ("drop", "b", 0, None)], {"x": 2}),
        ([("drop", "nothing", 0, None)], {}),
    ],
)
def test_reservation_use_follows_live_attempts(
    steps: list[tuple[str, str, int, str | None]], expected: dict[str, int]
) -> None:
    index = JobIndex()
    for op, key, nodes, block in steps:
        if op == "add":
            index.add_row(row(key, nodes, block))
        elif op == "launch":
            index.update_row(launched(index.live[key]))
        else:
            index.drop_row(f"job-{key}", key)
        assert {k: n for k, n in index.reserved.items() if n} == summed(index)
    assert {k: n for k, n in index.reserved.items() if n} == expected
