"""Tests of the simulated cloud: the conformance suite plus what only the sim does."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import pytest

from multicloud.catalog import load_catalog
from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.models import Fault, InlineOffer
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    Provider,
    ResourceRequest,
    WorkloadState,
    request_id,
)
from multicloud.sim import SimProvider, SimState
from multicloud.testing.clock import FakeClock
from multicloud.testing.conformance import ProviderConformance

SCALE = 100.0  # wall seconds per simulated hour: small numbers keep the timing tables readable

H100 = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "instance_type": "h100x8",
    "accelerator": "H100",
    "count": 8,
    "price": 30.0,
    "spot_price": 12.0,
    "capacity": 4,
}
L4 = {
    "region": "eu-west-1",
    "instance_type": "l4x1",
    "accelerator": "l4",
    "count": 1,
    "price": 1.0,
}


def inline(**fields: Any) -> InlineOffer:
    return InlineOffer.model_validate(fields)


def make_sim(
    clock: FakeClock | None = None,
    offers: tuple[dict[str, Any], ...] = (H100, L4),
    faults: tuple[dict[str, Any], ...] = (),
    **kwargs: Any,
) -> SimProvider:
    return SimProvider(
        fleet_name=kwargs.pop("fleet_name", "simcloud"),
        offers=[inline(**o) for o in offers],
        faults=[Fault.model_validate(f) for f in faults],
        time_scale=kwargs.pop("time_scale", SCALE),
        clock=clock or FakeClock(),
        **kwargs,
    )


def spec(
    job: str = "job-1", *, nodes: int = 1, market: MarketKind = MarketKind.ON_DEMAND, **kw: Any
) -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name=job,
        attempt=kw.pop("attempt", 1),
        nodes=nodes,
        market=market,
        install_id=kw.pop("install_id", "inst-a"),
        duration_hours=kw.pop("duration_hours", 1.0),
        **kw,
    )


def pool(sim: SimProvider, instance_type: str = "h100x8") -> Offer:
    return next(o for o in sim.offers(ResourceRequest()) if o.instance_type == instance_type)


def launch(sim: SimProvider, job: str = "job-1", offer: Offer | None = None, **kw: Any) -> Handle:
    offer = offer or pool(sim)
    s = spec(job, **kw)
    return sim.launch(offer, s, request_id=request_id(job, s.attempt, offer.region))


def state_of(sim: SimProvider, handle: Handle) -> WorkloadState:
    return sim.status([handle])[handle.id].state


class TestSimConformance(ProviderConformance):
    """The sim passes the suite every adapter passes."""

    def make_provider(self) -> Provider:
        self.clock = FakeClock()
        return make_sim(self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


# -- offers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "capacity_map", "expected"),
    [
        pytest.param(
            H100,
            {},
            {"provider": "simcloud", "zone": "us-east-1a", "capacity": 4, "jurisdiction": "US"},
            id="known-region",
        ),
        pytest.param(
            {**L4, "region": "moon-base-1"},
            {},
            {"accelerator": "L4", "capacity": None, "jurisdiction": None},
            id="unknown-region-no-jurisdiction",
        ),
        pytest.param(
            L4, {"l4x1": 7}, {"capacity": 7, "jurisdiction": "EU"}, id="capacity-by-type"
        ),
        pytest.param(
            L4,
            {"l4x1": 7, "eu-west-1/l4x1": 3},
            {"capacity": 3},
            id="capacity-by-region-wins",
        ),
        pytest.param(
            H100, {"h100x8": 9}, {"capacity": 4}, id="own-capacity-beats-map"
        ),
    ],
)
def test_inline_offers(
    fields: dict[str, Any], capacity_map: dict[str, int], expected: dict[str, Any]
) -> None:
    sim = make_sim(offers=(fields,), capacity=capacity_map)
    (offer,) = sim.offers(ResourceRequest())
    assert offer.catalog_version == "inline"
    for name, value in expected.items():
        assert getattr(offer, name) == value, name


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ResourceRequest(), {"h100x8", "l4x1"}),
        (ResourceRequest(accelerators=("H100",)), {"h100x8"}),
        (ResourceRequest(accelerators=("L4", "H100")), {"h100x8", "l4x1"}),
        (ResourceRequest(accelerators=("A100",)), set()),
        (ResourceRequest(count=2), {"h100x8"}),
        (ResourceRequest(count=9), set()),
        (ResourceRequest(regions=("eu-*",)), {"l4x1"}),
        (ResourceRequest(regions=("us-*", "ap-*")), {"h100x8"}),
    ],
)
def test_offer_filters(request_: ResourceRequest, expected: set[str]) -> None:
    assert {o.instance_type for o in make_sim().offers(request_)} == expected


@pytest.mark.parametrize(
    ("regions", "expected"),
    [((), {"h100x8", "l4x1"}), (("eu-*",), {"l4x1"}), (("asia-*",), set())],
)
def test_configured_regions_narrow_offers_and_launches(
    regions: tuple[str, ...], expected: set[str]
) -> None:
    sim = make_sim(regions=regions)
    assert {o.instance_type for o in sim.offers(ResourceRequest())} == expected
    if "h100x8" not in expected:
        with pytest.raises(InvalidRequestError):
            launch(sim, offer=pool(make_sim()))


@pytest.mark.parametrize(
    ("fleet_name", "cloud", "regions", "capacity"),
    [
        ("aws", None, (), {}),
        ("east", "aws", ("us-east-*",), {"p5.48xlarge": 2, "us-east-1/p5.48xlarge": 1}),
        ("tpus", "gcp", ("us-*",), {}),
    ],
)
def test_builtin_catalog(
    fleet_name: str, cloud: str | None, regions: tuple[str, ...], capacity: dict[str, int]
) -> None:
    sim = SimProvider(
        fleet_name=fleet_name,
        cloud=cloud,
        catalog="builtin",
        capacity=capacity,
        regions=regions,
        clock=FakeClock(),
    )
    got = sim.offers(ResourceRequest())
    want = [
        o
        for o in load_catalog().offers(
            cloud or fleet_name, fleet_name=fleet_name, capacity=capacity
        )
        if not regions or any(fnmatch.fnmatchcase(o.region, g) for g in regions)
    ]
    assert got and sorted(got, key=str) == sorted(want, key=str)
    assert {o.provider for o in got} == {fleet_name}
    assert all(o.catalog_version == load_catalog().version for o in got)


def test_builtin_catalog_capacity_is_consumed() -> None:
    sim = SimProvider(
        fleet_name="east",
        cloud="aws",
        catalog="builtin",
        capacity={"p5.48xlarge": 2},
        regions=("us-east-1",),
        clock=FakeClock(),
    )
    offer = pool(sim, "p5.48xlarge")
    launch(sim, offer=offer, nodes=2)
    assert pool(sim, "p5.48xlarge").capacity == 0
    with pytest.raises(CapacityError):
        launch(sim, "job-2", offer=offer)


def test_inline_offer_overrides_catalog_pool() -> None:
    base = next(o for o in load_catalog().offers("aws") if o.region == "us-east-1")
    override = {
        "region": base.region,
        "zone": base.zone,
        "instance_type": base.instance_type,
        "accelerator": base.accelerator,
        "count": base.count,
        "price": 0.5,
    }
    sim = SimProvider(
        fleet_name="aws", catalog="builtin", offers=[inline(**override)], clock=FakeClock()
    )
    mine = [o for o in sim.offers(ResourceRequest()) if o.key == base.key]
    assert [o.price for o in mine] == [0.5]


# -- capacity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "capacity_after"),
    [
        ("still-running", 1),
        ("terminate", 4),
        ("finish", 4),
        ("preempted", 4),
    ],
)
def test_capacity_taken_and_returned(ending: str, capacity_after: int) -> None:
    clock = FakeClock()
    faults = ({"kind": "preemption", "after_hours": 0.5},) if ending == "preempted" else ()
    sim = make_sim(clock, faults=faults)
    market = MarketKind.SPOT if ending == "preempted" else MarketKind.ON_DEMAND
    handle = launch(sim, nodes=3, market=market)
    assert pool(sim).capacity == 1
    if ending == "terminate":
        sim.terminate(handle, request_id="t")
    elif ending in ("finish", "preempted"):
        clock.advance(SCALE)
    assert pool(sim).capacity == capacity_after


def test_capacity_error_when_pool_is_short() -> None:
    sim = make_sim()
    launch(sim, "a", nodes=3)
    with pytest.raises(CapacityError) as info:
        launch(sim, "b", nodes=2)
    assert info.value.scope == "simcloud/us-east-1/us-east-1a"
    assert info.value.provider == "simcloud"
    launch(sim, "c", nodes=1)  # exactly what is left still fits
    assert pool(sim).capacity == 0


def test_reservation_launch_does_not_draw_public_pool() -> None:
    sim = make_sim()
    reserved = dataclasses.replace(pool(sim), reservation="block-1")
    launch(sim, offer=reserved, nodes=4)
    assert pool(sim).capacity == 4


# -- launch validation and idempotency -----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("spot-without-spot-market", InvalidRequestError),
        ("unknown-instance-type", InvalidRequestError),
        ("other-provider", InvalidRequestError),
        ("same-key-other-spec", InvalidRequestError),
        ("same-key-other-offer", InvalidRequestError),
        ("zero-nodes", InvalidRequestError),
    ],
)
def test_launch_rejects(case: str, error: type[ProviderError]) -> None:
    sim = make_sim()
    h100, l4 = pool(sim), pool(sim, "l4x1")
    key = request_id("job-1", 1, "us-east-1")
    offer, s = h100, spec()
    if case == "spot-without-spot-market":
        offer, s = l4, spec(market=MarketKind.SPOT)
    elif case == "unknown-instance-type":
        offer = dataclasses.replace(h100, instance_type="nope")
    elif case == "other-provider":
        offer = dataclasses.replace(h100, provider="elsewhere")
    elif case == "same-key-other-spec":
        sim.launch(h100, spec(), request_id=key)
        s = spec(nodes=2)
    elif case == "same-key-other-offer":
        sim.launch(h100, spec(), request_id=key)
        offer = l4
    elif case == "zero-nodes":
        s = spec(nodes=0)
    with pytest.raises(error):
        sim.launch(offer, s, request_id=key)


def test_launch_replay_returns_same_handle_even_when_pool_is_full() -> None:
    sim = make_sim()
    first = launch(sim, nodes=4)
    assert pool(sim).capacity == 0
    assert launch(sim, nodes=4) == first
    assert len(sim.state.workloads) == 1


def test_handle_ids_are_deterministic_and_distinct() -> None:
    a, b = make_sim(), make_sim()
    assert launch(a, "job-long-name-attempt-1") == launch(b, "job-long-name-attempt-1")
    assert launch(a, "job-long-name-attempt-2").id != launch(a, "job-long-name-attempt-1").id
    assert launch(a).id.startswith("sim-simcloud-")


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "scope"),
    [
        ("capacity", CapacityError, "simcloud/us-east-1/us-east-1a"),
        ("quota", QuotaError, "simcloud/us-east-1"),
        ("transient", TransientError, "simcloud/us-east-1/us-east-1a"),
    ],
)
def test_injected_fault(kind: str, error: type[ProviderError], scope: str) -> None:
    sim = make_sim(faults=({"kind": kind},))
    with pytest.raises(error) as info:
        launch(sim)
    assert type(info.value) is error
    assert info.value.scope == scope
    assert info.value.provider == "simcloud"
    assert pool(sim).capacity == 4  # a failed launch holds nothing
    launch(sim)  # spent after one launch (times=1)


@pytest.mark.parametrize("times", [1, 2, 3])
def test_fault_fires_times_then_is_spent(times: int) -> None:
    sim = make_sim(faults=({"kind": "transient", "times": times},))
    for _ in range(times):
        with pytest.raises(TransientError):
            launch(sim)
    launch(sim)


@pytest.mark.parametrize(
    ("fault", "fires_on_h100", "fires_on_l4"),
    [
        ({"kind": "capacity"}, True, True),
        ({"kind": "capacity", "region": "us-east-1"}, True, False),
        ({"kind": "capacity", "region": "us-east-1a"}, True, False),
        ({"kind": "capacity", "region": "eu-west-1"}, False, True),
        ({"kind": "capacity", "instance_type": "l4x1"}, False, True),
        ({"kind": "capacity", "region": "us-east-1", "instance_type": "l4x1"}, False, False),
    ],
)
def test_fault_matching(fault: dict[str, Any], fires_on_h100: bool, fires_on_l4: bool) -> None:
    for instance_type, fires in (("h100x8", fires_on_h100), ("l4x1", fires_on_l4)):
        sim = make_sim(faults=({**fault, "times": 5},))
        offer = pool(sim, instance_type)
        if fires:
            with pytest.raises(CapacityError):
                launch(sim, offer=offer)
        else:
            launch(sim, offer=offer)


def test_faults_fire_in_order() -> None:
    sim = make_sim(faults=({"kind": "quota"}, {"kind": "capacity"}))
    with pytest.raises(QuotaError):
        launch(sim)
    with pytest.raises(CapacityError):
        launch(sim)
    launch(sim)


@pytest.mark.parametrize(
    ("market", "after_hours", "duration_hours", "state_at_end"),
    [
        (MarketKind.SPOT, 0.5, 1.0, WorkloadState.PREEMPTED),
        (MarketKind.ON_DEMAND, 0.5, 1.0, WorkloadState.SUCCEEDED),
        (MarketKind.SPOT, 2.0, 1.0, WorkloadState.SUCCEEDED),  # due after the run ends
        (MarketKind.SPOT, 0.0, 1.0, WorkloadState.PREEMPTED),
    ],
)
def test_preemption_hits_spot_only(
    market: MarketKind, after_hours: float, duration_hours: float, state_at_end: WorkloadState
) -> None:
    clock = FakeClock()
    sim = make_sim(clock, faults=({"kind": "preemption", "after_hours": after_hours},))
    handle = launch(sim, market=market, duration_hours=duration_hours, nodes=2)
    clock.advance(duration_hours * SCALE)
    assert state_of(sim, handle) is state_at_end
    assert pool(sim).capacity == 4


def test_preemption_timing_and_times() -> None:
    clock = FakeClock()
    sim = make_sim(clock, faults=({"kind": "preemption", "after_hours": 0.25, "times": 2},))
    handles = [launch(sim, f"j{i}", market=MarketKind.SPOT) for i in range(3)]
    clock.advance(0.25 * SCALE - 0.01)
    assert [state_of(sim, h) for h in handles] == [WorkloadState.RUNNING] * 3
    clock.advance(0.01)
    assert [state_of(sim, h) for h in handles] == [
        WorkloadState.PREEMPTED,
        WorkloadState.PREEMPTED,
        WorkloadState.RUNNING,
    ]
    assert pool(sim).capacity == 3


def test_spent_on_demand_launch_does_not_spend_preemption() -> None:
    clock = FakeClock()
    sim = make_sim(clock, faults=({"kind": "preemption", "after_hours": 0.1},))
    on_demand = launch(sim, "od")
    spot = launch(sim, "spot", market=MarketKind.SPOT)
    clock.advance(0.1 * SCALE)
    assert state_of(sim, on_demand) is WorkloadState.RUNNING
    assert state_of(sim, spot) is WorkloadState.PREEMPTED


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, WorkloadState.PROVISIONING),
        (3.99, WorkloadState.PROVISIONING),  # 2% of 2 h × 100 s/h = 4 s
        (4.0, WorkloadState.RUNNING),
        (199.99, WorkloadState.RUNNING),
        (200.0, WorkloadState.SUCCEEDED),
        (10_000.0, WorkloadState.SUCCEEDED),
    ],
)
def test_lifecycle_timing(elapsed: float, expected: WorkloadState) -> None:
    clock = FakeClock(1000.0)
    sim = make_sim(clock)
    handle = launch(sim, duration_hours=2.0)
    clock.advance(elapsed)
    status = sim.status([handle])[handle.id]
    assert status.state is expected
    assert status.exit_code == (0 if expected is WorkloadState.SUCCEEDED else None)


@pytest.mark.parametrize("time_scale", [1.0, 60.0, 3600.0])
def test_time_scale_stretches_the_run(time_scale: float) -> None:
    clock = FakeClock()
    sim = make_sim(clock, time_scale=time_scale)
    handle = launch(sim, duration_hours=3.0)
    clock.advance(3.0 * time_scale - 1e-6)
    assert state_of(sim, handle) is WorkloadState.RUNNING
    clock.advance(1e-6)
    assert state_of(sim, handle) is WorkloadState.SUCCEEDED


def test_status_unknown_and_terminated() -> None:
    sim = make_sim()
    handle = launch(sim)
    ghost = dataclasses.replace(handle, id="x")
    sim.terminate(handle, request_id="t")
    statuses = sim.status([handle, ghost])
    assert {k: v.state for k, v in statuses.items()} == {
        handle.id: WorkloadState.TERMINATED,
        "x": WorkloadState.UNKNOWN,
    }


def test_terminate_after_finish_keeps_final_state() -> None:
    clock = FakeClock()
    sim = make_sim(clock)
    handle = launch(sim)
    clock.advance(SCALE)
    sim.terminate(handle, request_id="late")
    assert state_of(sim, handle) is WorkloadState.SUCCEEDED


# -- ownership -------------------------------------------------------------------------------


def test_tags_and_list_owned() -> None:
    clock = FakeClock()
    sim = make_sim(clock, install_id="inst-b")
    a = launch(sim, "a", attempt=2, install_id="inst-a")
    b = launch(sim, "b", install_id="default")  # the provider's own install id fills in
    c = launch(sim, "c", install_id="inst-a", duration_hours=0.5)
    assert sim.tags(a) == {
        "multicloud:job": "a",
        "multicloud:attempt": "2",
        "multicloud:install": "inst-a",
    }
    assert sim.tags(b)["multicloud:install"] == "inst-b"
    assert sim.list_owned("inst-a") == [a, c]
    assert sim.list_owned() == [b]
    clock.advance(0.5 * SCALE)  # c finished: no longer an orphan candidate
    sim.terminate(b, request_id="t")
    assert sim.list_owned("inst-a") == [a]
    assert sim.list_owned() == []
    assert sim.tags(dataclasses.replace(a, id="?")) == {}


# -- state -------------------------------------------------------------------------------------


def test_state_json_round_trip() -> None:
    clock = FakeClock()
    faults = (
        {"kind": "transient", "times": 2, "instance_type": "l4x1"},
        {"kind": "preemption", "after_hours": 0.5},
    )
    sim = make_sim(clock, faults=faults)
    with pytest.raises(TransientError):
        launch(sim, offer=pool(sim, "l4x1"))
    spot = launch(sim, "spot", market=MarketKind.SPOT, duration_hours=2.0)
    done = launch(sim, "done", duration_hours=0.1)
    ended = launch(sim, "ended")
    sim.terminate(ended, request_id="t")
    clock.advance(0.2 * SCALE)

    text = sim.state.to_json()
    restored = SimState.from_json(text)
    assert restored == sim.state
    assert restored.to_json() == text

    again = make_sim(clock, faults=faults, state=restored)
    assert again.status([spot, done, ended]) == sim.status([spot, done, ended])
    assert pool(again).capacity == pool(sim).capacity == 3
    with pytest.raises(TransientError):  # one of the two transient faults is left
        launch(again, "next", offer=pool(again, "l4x1"))
    launch(again, "next", offer=pool(again, "l4x1"))
    assert launch(again, "spot", market=MarketKind.SPOT, duration_hours=2.0) == spot


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 99}',
        "[]",
        '{"workloads": []}',
        '{"format": 1, "workloads": [{"id": "x"}]}',
        '{"format": 1, "workloads": [], "fault_uses": []}',
    ],
)
def test_state_from_json_rejects_other_documents(text: str) -> None:
    with pytest.raises(ValueError):
        SimState.from_json(text)


def test_two_providers_share_one_cloud() -> None:
    clock = FakeClock()
    state = SimState()
    first = make_sim(clock, state=state)
    second = make_sim(clock, state=state)
    handle = launch(first, nodes=3)
    assert pool(second).capacity == 1
    assert launch(second, nodes=3) == handle  # the replay lands on the same workload
    assert state_of(second, handle) is WorkloadState.PROVISIONING
    second.terminate(handle, request_id="t")
    assert state_of(first, handle) is WorkloadState.TERMINATED
    assert pool(first).capacity == 4


def test_separate_states_are_separate_clouds() -> None:
    first, second = make_sim(), make_sim()
    launch(first, nodes=4)
    assert pool(second).capacity == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"time_scale": 0.0}, "time_scale"), ({"catalog": "mine"}, "catalog")],
)
def test_constructor_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimProvider(**kwargs)


def test_class_identity() -> None:
    assert SimProvider.name == "sim"
    assert isinstance(make_sim(), Provider)
