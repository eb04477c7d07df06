"""The planned place travels whole from the plan to the store, the launch and the views.

A recording wrapper sees exactly what each adapter is asked to launch: the offer as the
planner chose it (accelerator, prices, catalog version), never one rebuilt from columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multicloud.catalog import load_catalog
from multicloud.lifecycle import JobState
from multicloud.provider import Handle, LaunchSpec, MarketKind, Offer, Place, Provider
from multicloud.service.views import job_view
from multicloud.testing.builders import job
from multicloud.testing.scheduling import SchedulerHarness, sim_fleet, sim_offer

S = JobState


class Recording:
    """An adapter wrapper that records every launch it forwards."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.launches: list[tuple[Offer, LaunchSpec]] = []

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        self.launches.append((offer, spec))
        return self.inner.launch(offer, spec, request_id=request_id)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[dict[str, Recording], Any]]:
    made: list[SchedulerHarness] = []
    seen: dict[str, Recording] = {}

    def wrap(name: str, provider: Provider) -> Provider:
        seen[name] = Recording(provider)
        return seen[name]  # type: ignore[return-value]

    def make(doc: dict[str, Any]) -> SchedulerHarness:
        h = SchedulerHarness.in_dir(tmp_path, doc, wrap=wrap)
        made.append(h)
        return h

    yield seen, make
    for h in made:
        h.close()


def test_a_job_accepting_h100_or_h200_placed_on_h200_launches_h200(
    recorded: tuple[dict[str, Recording], Any],
) -> None:
    seen, make = recorded
    doc = sim_fleet(
        cloud={
            "offers": [
                sim_offer("r1", 12.0),
                sim_offer("r1", 10.0, instance_type="h200x8", accelerator="H200"),
            ]
        }
    )
    h = make(doc)
    (job_id,) = h.submit(job("either", accelerator=["H100", "H200"], duration_hours=4))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
    ((offer, spec),) = seen["cloud"].launches
    assert (offer.accelerator, offer.instance_type, offer.price) == ("H200", "h200x8", 10.0)
    (attempt,) = h.store.get(job_id).attempts
    # The launch got the planned offer itself, and the store kept it whole.
    assert attempt.place == Place(offer, spec.nodes, spec.market, 10.0)
    view = job_view(h.store.get(job_id))
    assert (view.accelerator, view.count, view.catalog_version) == ("H200", 8, "inline")


def test_a_spot_attempt_launches_the_planned_spot_price_and_catalog_version(
    recorded: tuple[dict[str, Recording], Any],
) -> None:
    seen, make = recorded
    doc = sim_fleet(aws={"catalog": "builtin", "regions": ["us-east-1"]})
    h = make(doc)
    (job_id,) = h.submit(job("cheap", accelerator="H100", count=8, market="spot", nodes=2))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
    ((offer, spec),) = seen["aws"].launches
    (attempt,) = h.store.get(job_id).attempts
    assert spec.market is MarketKind.SPOT and spec.nodes == 2
    assert offer == attempt.place.offer
    assert offer.spot_price is not None and offer.spot_price > 0
    assert attempt.place.price_per_hour == pytest.approx(offer.spot_price * 2)
    assert offer.catalog_version == load_catalog().version
    # What the planner decided is what the status shows.
    (decision,) = [d for d in h.store.decisions(job_id) if d.placement]
    assert decision.catalog_version == offer.catalog_version
    assert decision.placement[0]["accelerator"] == offer.accelerator == "H100"


def test_later_rounds_reuse_the_shapes_an_earlier_round_worked_out(
    recorded: tuple[dict[str, Recording], Any],
) -> None:
    _, make = recorded
    h = make(sim_fleet(cloud={"offers": [sim_offer("r1", 12.0, capacity=8)]}))
    shapes = h.scheduler.placer.shapes
    (first,) = h.submit(job("first", duration_hours=4))
    h.run_until(lambda: h.state_of(first) is S.RUNNING)
    assert (shapes.hits, shapes.misses) == (0, 1)
    # Same shape, a later round: the capacity moved (one node is taken), the offer did not.
    (second,) = h.submit(job("second", duration_hours=4))
    h.run_until(lambda: h.state_of(second) is S.RUNNING)
    assert (shapes.hits, shapes.misses) == (1, 1)
    assert h.store.get(second).attempts[0].place.offer.key == "cloud/r1/h100x8"
