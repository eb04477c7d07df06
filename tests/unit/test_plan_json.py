"""``plan --json``'s text: the plan document, one placement (queued job, audit line) per line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from multicloud.cli.plan import plan_json


def doc(**lists: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"placements": [], "unplaced": [], "audit": []}
    out.update(lists)
    out["total_cost"] = 12.5
    out["stats"] = {"path": "fast", "mip_gap": 0.0, "lp_bound_gap": None}
    return out


DOCS = {
    "empty plan": doc(),
    "placements": doc(placements=[{"job": "a", "cost": 1.25, "rofr": None}, {"job": "b"}]),
    "non-ASCII reasons": doc(
        placements=[{"job": "a", "reasons": ["own price $1.00/h ≤ outside $2.00/h"]}],
        unplaced=[{"job": "b", "reason": "no capacity", "details": ["H100×8: 0 left"]}],
    ),
    "nested rows": doc(audit=[{"job": "a", "terms": {"regions": ["us-*"], "count": 8}}]),
}


@pytest.mark.parametrize("plan", DOCS.values(), ids=DOCS.keys())
def test_the_text_is_the_document(plan: dict[str, Any]) -> None:
    assert json.loads(plan_json(plan)) == plan


@pytest.mark.parametrize("plan", DOCS.values(), ids=DOCS.keys())
def test_each_row_is_one_line(plan: dict[str, Any]) -> None:
    lines = plan_json(plan).decode("utf-8").splitlines()
    rows = [json.loads(line.strip().rstrip(",")) for line in lines if line.startswith("    {")]
    assert rows == plan["placements"] + plan["unplaced"] + plan["audit"]
