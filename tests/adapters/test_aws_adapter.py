"""AWSProvider behaviour beyond the conformance suite, against a moto server on 127.0.0.1.

What moto cannot do (EC2 quotas, spot prices, reservations, placement groups, errors) is
answered by the fake's tables in ``multicloud_aws.testing``; the Price List API by a botocore
``before-call`` hook. Every session handed to the adapter refuses non-fake URLs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from multicloud_aws import AWSProvider, quota_code
from multicloud_aws.testing import FakeAWS, serve
from multicloud_aws.userdata import (
    REPORT_ATTEMPTS,
    SECRET_MULTILINE_EXIT,
    SECRET_UNREADABLE_EXIT,
    render_user_data,
    secret_env_name,
)

from multicloud.catalog import load_catalog
from multicloud.errors import CapacityError, InvalidRequestError, QuotaError, error_scope
from multicloud.planner.options import OptionIndex
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    SupportsSweep,
    WorkloadState,
    request_id,
)
from multicloud.providers import from_fleet, load
from multicloud.specs import load_fleet

REGION = "us-east-1"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAWS]:
    with serve() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAWS) -> FakeAWS:
    server.reset()
    return server


# -- builders ------------------------------------------------------------------------------


def make(fake: FakeAWS, *, session: Any = None, **options: Any) -> AWSProvider:
    merged: dict[str, Any] = {**fake.options, "regions": [REGION], **options}
    return AWSProvider(_session=session or fake.session(), **merged)


def spec(
    job: str = "job-1",
    *,
    nodes: int = 1,
    market: MarketKind = MarketKind.ON_DEMAND,
    install: str = "install-a",
    attempt: int = 1,
    **extra: Any,
) -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name=f"{job}-name",
        attempt=attempt,
        nodes=nodes,
        market=market,
        install_id=install,
        image="ghcr.io/acme/train:1",
        command="python train.py",
        **extra,
    )


def pick(
    provider: AWSProvider,
    instance_type: str = "p5.48xlarge",
    *,
    zone: str | None = None,
    reserved: bool = False,
) -> Offer:
    for o in provider.offers(ResourceRequest()):
        if o.instance_type != instance_type or (o.reservation is not None) != reserved:
            continue
        if zone is None or o.zone == zone:
            return o
    raise AssertionError(f"no offer {instance_type} {zone} reserved={reserved}")


def launch(provider: AWSProvider, offer: Offer, s: LaunchSpec) -> Handle:
    return provider.launch(offer, s, request_id=request_id(s.job_id, s.attempt, offer.region))


def instances(fake: FakeAWS, handle: Handle) -> list[dict[str, Any]]:
    ec2 = fake.client("ec2", handle.region)
    answer = ec2.describe_instances(InstanceIds=handle.id.split(","))
    return [i for r in answer["Reservations"] for i in r["Instances"]]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def counting(fake: FakeAWS, event: str) -> tuple[Any, list[str]]:
    """A session whose ``event`` handler records each call's operation (for call counts)."""
    session = fake.session()
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    session.events.register(event, record)
    return session, seen


# -- launch ----------------------------------------------------------------------------------


def test_same_request_id_twice_makes_one_set_of_instances(fake: FakeAWS) -> None:
    provider = make(fake)
    offer = pick(provider)
    first = launch(provider, offer, spec(nodes=2))
    # A scheduler that crashed after launching builds a new adapter and re-sends the key.
    second = launch(make(fake), offer, spec(nodes=2))
    assert second == first
    assert len(fake.calls("RunInstances")) == 1
    assert fake.calls("RunInstances")[0]["ClientToken"] == first.request_id
    assert len(instances(fake, first)) == 2


def test_instances_carry_tags_shutdown_behaviour_and_user_data(fake: FakeAWS) -> None:
    provider = make(fake)
    s = spec(attempt=3, env={"EPOCHS": "2"}, secrets=("prod/hf-token",))
    handle = launch(provider, pick(provider), s)
    (inst,) = instances(fake, handle)
    tags = tags_of(inst)
    assert tags["multicloud:job"] == "job-1"
    assert tags["multicloud:attempt"] == "3"
    assert tags["multicloud:install"] == "install-a"
    assert tags["multicloud:request"] == handle.request_id
    call = fake.calls("RunInstances")[0]
    assert call["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert call["MinCount"] == call["MaxCount"] == "1"
    user_data = base64.b64decode(call["UserData"]).decode()
    assert "ghcr.io/acme/train:1" in user_data and "'python train.py'" in user_data
    assert "EPOCHS" in user_data
    # The secret travels by name, resolved on the host; the value is never in the request.
    assert "--secret-id prod/hf-token" in user_data and "HF_TOKEN" in user_data


def test_gang_lands_in_one_zone_with_its_cluster_placement_group(fake: FakeAWS) -> None:
    provider = make(fake)
    offer = pick(provider, zone="use1-az1")
    key = request_id("gang", 1, REGION)
    # A group left by an earlier, interrupted try must not fail the launch.
    fake.client("ec2").create_placement_group(GroupName=f"multicloud-{key}", Strategy="cluster")
    handle = launch(provider, offer, spec("gang", nodes=3))
    members = instances(fake, handle)
    assert len(members) == 3 and handle.nodes == 3
    assert {m["Placement"]["AvailabilityZone"] for m in members} == {"us-east-1b"}
    assert handle.zone == "use1-az1"
    call = fake.calls("RunInstances")[0]
    assert call["Placement.GroupName"] == f"multicloud-{key}"
    assert call["Placement.AvailabilityZone"] == "us-east-1b"
    assert ("placement_group", f"multicloud-{key}") in handle.extra


def test_new_placement_group_is_cluster_and_tagged(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider, zone="use1-az2"), spec("pg", nodes=2))
    group = fake.placement_groups(REGION)[f"multicloud-{handle.request_id}"]
    assert group["strategy"] == "cluster"
    assert group["tags"]["multicloud:job"] == "pg"
    assert group["tags"]["multicloud:install"] == "install-a"


def test_single_node_needs_no_placement_group(fake: FakeAWS) -> None:
    provider = make(fake)
    launch(provider, pick(provider), spec("solo"))
    assert fake.calls("CreatePlacementGroup") == []
    assert "Placement.GroupName" not in fake.calls("RunInstances")[0]


def test_spot_launch_uses_instance_market_options(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("spot", market=MarketKind.SPOT))
    call = fake.calls("RunInstances")[0]
    assert call["InstanceMarketOptions.MarketType"] == "spot"
    assert call["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"
    assert instances(fake, handle)[0]["InstanceLifecycle"] == "spot"
    assert handle.market is MarketKind.SPOT


def test_offer_in_unknown_zone_is_invalid(fake: FakeAWS) -> None:
    provider = make(fake)
    offer = dataclasses.replace(pick(provider), zone="use1-az99")
    with pytest.raises(InvalidRequestError):
        launch(provider, offer, spec())
    assert fake.calls("RunInstances") == []


# -- reservations ------------------------------------------------------------------------------


def test_owned_active_reservations_become_reserved_offers(fake: FakeAWS) -> None:
    block = fake.add_reservation(
        REGION, "p5.48xlarge", "us-east-1b", total=4, available=3, kind="capacity-block"
    )
    odcr = fake.add_reservation(REGION, "p4d.24xlarge", "us-east-1a", total=2)
    # Each of these must be left out: someone else's, expired, and a type with no GPU row.
    fake.add_reservation(REGION, "p5.48xlarge", "us-east-1a", total=8, owner="999999999999")
    fake.add_reservation(REGION, "p5.48xlarge", "us-east-1a", total=8, state="expired")
    fake.add_reservation(REGION, "m5.large", "us-east-1a", total=8)
    reserved = {o.reservation: o for o in make(fake).offers(ResourceRequest()) if o.reservation}
    assert set(reserved) == {block, odcr}
    offer = reserved[block]
    got = (offer.zone, offer.capacity, offer.accelerator, offer.count)
    assert got == ("use1-az1", 3, "H100", 8)
    assert offer.spot_price is None and offer.price is not None
    assert reserved[odcr].capacity == 2


def test_reserved_launch_targets_the_reservation(fake: FakeAWS) -> None:
    rid = fake.add_reservation(REGION, "p5.48xlarge", "us-east-1b", total=4)
    provider = make(fake)
    offer = pick(provider, reserved=True)
    handle = launch(provider, offer, spec("res", nodes=2, market=MarketKind.RESERVED))
    call = fake.calls("RunInstances")[0]
    assert (
        call["CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"]
        == rid
    )
    assert "InstanceMarketOptions.MarketType" not in call
    assert handle.market is MarketKind.RESERVED and ("reservation", rid) in handle.extra
    assert fake.reservation_available(rid) == 2
    # The adapter's next offers show the reservation's new free count, not a cached one.
    assert pick(provider, reserved=True).capacity == 2


def test_capacity_block_launch_uses_its_market_type(fake: FakeAWS) -> None:
    fake.add_reservation(REGION, "p5.48xlarge", "us-east-1b", total=2, kind="capacity-block")
    provider = make(fake)
    launch(provider, pick(provider, reserved=True), spec("cb", market=MarketKind.RESERVED))
    assert fake.calls("RunInstances")[0]["InstanceMarketOptions.MarketType"] == "capacity-block"


def test_reservation_named_in_the_fleet_is_found_by_its_name_tag(fake: FakeAWS) -> None:
    # A fleet's contracts.reservations entry names the block; the planner's offer for it has
    # that name and may have no zone. The adapter finds it by Name tag and uses its zone.
    rid = fake.add_reservation(REGION, "p5.48xlarge", "us-east-1c", total=2, name="team-h100")
    provider = make(fake)
    base = pick(provider, zone="use1-az1")
    offer = dataclasses.replace(base, zone=None, reservation="team-h100")
    handle = launch(provider, offer, spec("named", market=MarketKind.RESERVED))
    call = fake.calls("RunInstances")[0]
    target = "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"
    assert call[target] == rid
    assert call["Placement.AvailabilityZone"] == "us-east-1c"
    assert handle.zone == "use1-az2"


def test_reservation_without_room_fails_before_run_instances(fake: FakeAWS) -> None:
    fake.add_reservation(REGION, "p5.48xlarge", "us-east-1b", total=2)
    provider = make(fake)
    offer = pick(provider, reserved=True)
    with pytest.raises(CapacityError) as err:
        launch(provider, offer, spec("big", nodes=3, market=MarketKind.RESERVED))
    assert err.value.scope == "aws/us-east-1/use1-az1"
    assert fake.calls("RunInstances") == []


# -- quota -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "market", "code"),
    [
        ("p5.48xlarge", MarketKind.ON_DEMAND, "L-417A185B"),
        ("p5.48xlarge", MarketKind.SPOT, "L-7212CCBC"),
        ("p6-b200.48xlarge", MarketKind.ON_DEMAND, "L-417A185B"),
        ("g6e.xlarge", MarketKind.ON_DEMAND, "L-DB2E81BA"),
        ("g6e.xlarge", MarketKind.SPOT, "L-3819A6DF"),
        ("inf2.xlarge", MarketKind.ON_DEMAND, "L-1945791B"),
        ("inf2.xlarge", MarketKind.SPOT, "L-B5D1601B"),
        ("trn1.32xlarge", MarketKind.ON_DEMAND, "L-2C3B7624"),
        ("trn1.32xlarge", MarketKind.SPOT, "L-6B0D517C"),
        ("m5.large", MarketKind.ON_DEMAND, None),
    ],
)
def test_quota_codes(instance_type: str, market: MarketKind, code: str | None) -> None:
    assert quota_code(instance_type, market) == code


def test_region_without_quota_is_refused_fast_without_run_instances(fake: FakeAWS) -> None:
    fake.set_quota(REGION, "L-417A185B", 0)
    provider = make(fake)
    offer = pick(provider)
    started = time.monotonic()
    with pytest.raises(QuotaError) as err:
        launch(provider, offer, spec())
    assert time.monotonic() - started < 1.0
    assert err.value.scope == "aws/us-east-1"
    assert fake.calls("RunInstances") == []


def test_quota_counts_vcpus_of_the_whole_gang_and_is_cached(fake: FakeAWS) -> None:
    fake.set_quota(REGION, "L-417A185B", 384)  # two p5.48xlarge (192 vCPUs each)
    provider = make(fake)
    offer = pick(provider)
    launch(provider, offer, spec("two", nodes=2))
    with pytest.raises(QuotaError):
        launch(provider, offer, spec("three", nodes=3))
    assert len(fake.calls("RunInstances")) == 1
    assert len(fake.calls("GetServiceQuota")) == 1


def test_spot_launch_checks_the_spot_quota(fake: FakeAWS) -> None:
    fake.set_quota(REGION, "L-417A185B", 0)  # no on-demand quota, but spot is fine
    fake.set_quota(REGION, "L-7212CCBC", 192)
    provider = make(fake)
    launch(provider, pick(provider), spec("s", market=MarketKind.SPOT))
    assert len(fake.calls("RunInstances")) == 1


def test_quota_check_can_be_switched_off(fake: FakeAWS) -> None:
    fake.set_quota(REGION, "L-417A185B", 0)
    provider = make(fake, quota_check=False)
    launch(provider, pick(provider), spec())
    assert fake.calls("GetServiceQuota") == []


# -- status, preemption, terminate, sweep -----------------------------------------------------


def test_status_is_one_describe_instances_per_region(fake: FakeAWS) -> None:
    provider = make(fake, regions=["us-east-1", "us-west-2"])
    east = pick(provider)
    west = next(o for o in provider.offers(ResourceRequest()) if o.region == "us-west-2")
    handles = [
        launch(provider, east, spec("a")),
        launch(provider, east, spec("b", nodes=2)),
        launch(provider, west, spec("c")),
    ]
    session, seen = counting(fake, "before-call.ec2.DescribeInstances")
    watcher = make(fake, regions=["us-east-1", "us-west-2"], session=session)
    statuses = watcher.status(handles)
    assert set(statuses) == {h.id for h in handles}
    assert all(s.state is WorkloadState.RUNNING for s in statuses.values())
    assert seen == ["DescribeInstances", "DescribeInstances"]


@pytest.mark.parametrize(
    ("exit_codes", "state", "exit_code"),
    [
        ((0,), WorkloadState.SUCCEEDED, 0),
        ((3,), WorkloadState.FAILED, 3),
        ((0, 0), WorkloadState.SUCCEEDED, 0),
        ((0, 137), WorkloadState.FAILED, 137),
    ],
)
def test_exit_tag_reports_the_end(
    fake: FakeAWS, exit_codes: tuple[int, ...], state: WorkloadState, exit_code: int
) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("end", nodes=len(exit_codes)))
    for instance_id, code in zip(handle.id.split(","), exit_codes, strict=True):
        fake.finish(REGION, [instance_id], code)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, exit_code)


def test_host_that_ended_without_its_exit_tag_is_failed_not_lost(fake: FakeAWS) -> None:
    # The host's create-tags was refused (no instance profile, or one without
    # ec2:CreateTags) and it powered off: the job ran, so it must not be requeued as lost.
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("untagged", nodes=2))
    first, second = handle.id.split(",")
    fake.finish(REGION, [first], 0)
    fake.finish(REGION, [second], None)
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.FAILED and status.exit_code is None
    assert status.message.startswith(
        "host ended without reporting an exit code (instance profile allowed to tag?)"
    )
    # Terminated from outside (the scheduler, a person) it still reads as terminated.
    other = launch(provider, pick(provider), spec("killed"))
    provider.terminate(other, request_id="kill")
    assert provider.status([other])[other.id].state is WorkloadState.TERMINATED


def test_spot_interruption_is_preemption(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("pre", nodes=2, market=MarketKind.SPOT))
    fake.preempt(REGION, handle.id.split(",")[:1])
    assert provider.status([handle])[handle.id].state is WorkloadState.PREEMPTED


def test_terminate_is_idempotent_and_skips_what_is_gone(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("t", nodes=2))
    provider.terminate(handle, request_id="t-term")
    provider.terminate(handle, request_id="t-term")
    assert len(fake.calls("TerminateInstances")) == 1
    assert provider.status([handle])[handle.id].state is WorkloadState.TERMINATED
    ghost = dataclasses.replace(handle, id="i-0123456789abcdef0", request_id="f" * 32)
    provider.terminate(ghost, request_id="ghost")
    assert len(fake.calls("TerminateInstances")) == 1


def test_terminate_deletes_the_gangs_placement_group(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("pg-end", nodes=2))
    group = f"multicloud-{handle.request_id}"
    assert group in fake.placement_groups(REGION)
    provider.terminate(handle, request_id="end")
    assert group not in fake.placement_groups(REGION)
    # Idempotent: the group already gone is fine.
    provider.terminate(handle, request_id="end")
    assert [c["GroupName"] for c in fake.calls("DeletePlacementGroup")] == [group, group]


@pytest.mark.parametrize(
    ("code", "status"),
    [("InvalidPlacementGroup.InUse", 400), ("UnauthorizedOperation", 403), ("Unavailable", 503)],
)
def test_placement_group_left_behind_does_not_fail_terminate(
    fake: FakeAWS, code: str, status: int
) -> None:
    # Instances still shutting down keep the group in use (or the principal may not delete
    # it): the instances are terminated all the same, and the next terminate deletes it.
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("pg-busy", nodes=2))
    group = f"multicloud-{handle.request_id}"
    fake.fail_next("DeletePlacementGroup", code, status=status)
    provider.terminate(handle, request_id="end")
    assert len(fake.calls("TerminateInstances")) == 1
    assert group in fake.placement_groups(REGION)
    provider.terminate(handle, request_id="end")
    assert group not in fake.placement_groups(REGION)


def test_sweep_terminate_deletes_the_placement_group_too(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("pg-orphan", nodes=2))
    (orphan,) = make(fake).owned("install-a")
    make(fake).terminate(orphan.handle, request_id="sweep")
    assert f"multicloud-{handle.request_id}" not in fake.placement_groups(REGION)


def test_owned_lists_live_gangs_of_one_install(fake: FakeAWS) -> None:
    provider = make(fake)
    assert isinstance(provider, SupportsSweep)
    offer = pick(provider)
    mine = launch(provider, offer, spec("mine", nodes=2, attempt=2))
    launch(provider, offer, spec("theirs", install="install-b"))
    done = launch(provider, offer, spec("done"))
    fake.finish(REGION, done.id.split(","), 0)
    owned = provider.owned("install-a")
    assert [(o.handle.id, o.job_id, o.attempt) for o in owned] == [(mine.id, "mine", 2)]
    assert owned[0].handle.request_id == mine.request_id and owned[0].handle.nodes == 2
    provider.terminate(owned[0].handle, request_id="sweep")
    assert provider.owned("install-a") == []


# -- offers --------------------------------------------------------------------------------------


def test_offers_are_narrowed_by_live_instance_type_offerings(fake: FakeAWS) -> None:
    answer = fake.client("ec2").describe_instance_type_offerings(
        LocationType="availability-zone-id"
    )["InstanceTypeOfferings"]
    offered = {(o["InstanceType"], o["Location"]) for o in answer}
    types = {t for t, _ in offered}
    rows = [r for r in load_catalog().rows if r.provider == "aws" and r.region == REGION]
    # A zoned row stays if its zone sells the type; a regional row becomes one offer per
    # zone that sells it.
    expected = {(r.instance_type, r.zone) for r in rows if (r.instance_type, r.zone) in offered}
    expected |= {(t, z) for r in rows if r.zone is None for t, z in offered if t == r.instance_type}
    assert any(r.zone is None and r.instance_type in types for r in rows)
    offers = make(fake).offers(ResourceRequest())
    got = {(o.instance_type, o.zone) for o in offers}
    assert got == expected and len(got) == len(offers)
    # The live answer really removed catalog rows (e.g. zones that stopped selling a type).
    assert any(r.zone and (r.instance_type, r.zone) not in offered for r in rows)


def _regional_type() -> str:
    """An instance type the catalog lists for REGION without a zone (a regional row)."""
    rows = [r for r in load_catalog().rows if r.provider == "aws" and r.region == REGION]
    assert any(r.zone is None and r.instance_type == "g5.xlarge" for r in rows)
    return "g5.xlarge"


def test_regional_row_becomes_one_offer_per_zone_and_capacity_fails_over(
    fake: FakeAWS,
) -> None:
    provider = make(fake)
    itype = _regional_type()
    offers = [o for o in provider.offers(ResourceRequest()) if o.instance_type == itype]
    zones = [o.zone for o in offers]
    assert len(zones) > 1 and None not in zones and len(set(zones)) == len(zones)
    assert len({o.key for o in offers}) == len(offers)
    first, second = offers[0], offers[1]
    fake.fail_next("RunInstances", "InsufficientInstanceCapacity", status=500)
    with pytest.raises(CapacityError) as err:
        launch(provider, first, spec("full"))
    assert err.value.scope == error_scope("aws", REGION, first.zone)
    # The planner blocks that scope: it hides the full zone's offer, not the other zones'.
    index = OptionIndex(offers, blocked=frozenset({err.value.scope}))
    assert index._is_blocked(first) and not index._is_blocked(second)
    # The next zone's offer launches in its own zone.
    handle = launch(provider, second, spec("full", attempt=2))
    names = {
        z["ZoneId"]: z["ZoneName"]
        for z in fake.client("ec2").describe_availability_zones()["AvailabilityZones"]
    }
    placed = [c["Placement.AvailabilityZone"] for c in fake.calls("RunInstances")]
    assert placed == [names[str(first.zone)], names[str(second.zone)]]
    assert handle.zone == second.zone


def test_regional_row_gets_each_zones_live_spot_price(fake: FakeAWS) -> None:
    itype = _regional_type()
    fake.set_spot_price(REGION, itype, "us-east-1b", 0.90)  # use1-az1
    fake.set_spot_price(REGION, itype, "us-east-1c", 0.20)  # use1-az2
    provider = make(fake, live_spot_prices=True)
    by_zone = {o.zone: o for o in provider.offers(ResourceRequest()) if o.instance_type == itype}
    assert by_zone["use1-az1"].spot_price == 0.90 and by_zone["use1-az2"].spot_price == 0.20
    assert "+aws-spot-" in by_zone["use1-az2"].catalog_version
    handle = launch(provider, by_zone["use1-az2"], spec("cheap", market=MarketKind.SPOT))
    assert fake.calls("RunInstances")[0]["Placement.AvailabilityZone"] == "us-east-1c"
    assert handle.zone == "use1-az2"


def test_offers_need_no_options_beyond_the_endpoint(fake: FakeAWS) -> None:
    provider = AWSProvider(endpoint_url=fake.endpoint_url, _session=fake.session())
    offers = provider.offers(ResourceRequest(accelerators=("H100",), count=8))
    assert offers and {o.accelerator for o in offers} == {"H100"}
    assert len({o.region for o in offers}) > 3


def test_live_spot_prices_replace_the_catalog_ones(fake: FakeAWS) -> None:
    fake.set_spot_price(REGION, "p5.48xlarge", "us-east-1b", 12.5)  # us-east-1b is use1-az1
    live = pick(make(fake, live_spot_prices=True), zone="use1-az1")
    assert live.spot_price == 12.5
    assert live.catalog_version.startswith(load_catalog().version + "+aws-spot-")
    catalog = pick(make(fake), zone="use1-az1")
    assert catalog.spot_price != 12.5 and catalog.catalog_version == load_catalog().version
    assert len(fake.calls("DescribeSpotPriceHistory")) == 1


def _price_list(region: str, usd: str) -> str:
    return json.dumps(
        {
            "product": {"attributes": {"regionCode": region, "instanceType": "p5.48xlarge"}},
            "terms": {
                "OnDemand": {"T1": {"priceDimensions": {"D1": {"pricePerUnit": {"USD": usd}}}}}
            },
        }
    )


def test_live_pricing_refresh_updates_prices_and_records_the_version(fake: FakeAWS) -> None:
    session, seen = counting(fake, "before-call.pricing.GetProducts")

    def answer(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        # The Price List API is not in moto: answer it here, as AWS would for one type.
        body = json.loads(params["body"])  # the serialised request, as it would be sent
        wanted = {f["Value"] for f in body["Filters"] if f["Field"] == "instanceType"}
        rows = [_price_list(REGION, "61.23")] if "p5.48xlarge" in wanted else []
        return AWSResponse("", 200, {}, None), {"PriceList": rows, "FormatVersion": "aws_v1"}

    session.events.register("before-call.pricing.GetProducts", answer)
    offer = pick(make(fake, session=session, live_pricing=True), zone="use1-az1")
    assert offer.price == 61.23
    assert "+aws-live-" in offer.catalog_version
    assert seen  # the refresh really asked the pricing API
    # Where the Price List API cannot answer (moto has none), the catalog's prices stand.
    fallback = pick(make(fake, live_pricing=True), zone="use1-az1")
    assert fallback.price != 61.23 and "+aws-live-" not in fallback.catalog_version
    # Off by default: no pricing call, catalog prices.
    session2, seen2 = counting(fake, "before-call.pricing.GetProducts")
    assert pick(make(fake, session=session2), zone="use1-az1").price != 61.23
    assert seen2 == []


# -- loading -------------------------------------------------------------------------------------


def test_loads_from_the_registry_and_a_fleet_file(fake: FakeAWS, tmp_path: Path) -> None:
    assert isinstance(load("aws", regions=[REGION], **fake.options), AWSProvider)
    lines = [
        "providers:",
        "  cloud-a:",
        "    adapter: aws",
        f"    regions: [{REGION}]",
        "    options:",
        *(f"      {k}: {v}" for k, v in fake.options.items()),
        "      quota_check: false",
    ]
    path = tmp_path / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    provider = from_fleet(load_fleet(path), "cloud-a")
    assert isinstance(provider, AWSProvider)
    assert {o.provider for o in provider.offers(ResourceRequest())} == {"cloud-a"}


# -- user-data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "env_name"),
    [("prod/hf-token", "HF_TOKEN"), ("/team/wandb_key", "WANDB_KEY"), ("9lives", "_9LIVES")],
)
def test_secret_env_names(secret: str, env_name: str) -> None:
    assert secret_env_name(secret) == env_name


@pytest.mark.parametrize(("neuron", "flag"), [(False, "--gpus all"), (True, "/dev/neuron*")])
def test_user_data_passes_the_right_accelerators(neuron: bool, flag: str) -> None:
    script = render_user_data(
        image="img",
        command=None,
        env={},
        secrets=(),
        request_id="r",
        job_id="j",
        nodes=1,
        neuron=neuron,
    )
    (run_line,) = [line for line in script.splitlines() if line.startswith("docker run")]
    assert flag in run_line and run_line.endswith(" img")
    assert ("--gpus" in run_line) is not neuron


def _shell_function(script: str, name: str) -> str:
    """Return the definition of shell function ``name`` in a generated script."""
    lines = script.splitlines()
    start = lines.index(f"{name}() {{")
    end = lines.index("}", start)
    return "\n".join(lines[start : end + 1])


def _bash(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=False
    )


def _script(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "image": "img",
        "command": None,
        "env": {},
        "secrets": (),
        "request_id": "r",
        "job_id": "j",
        "nodes": 1,
        **overrides,
    }
    return render_user_data(**args)


def test_user_data_is_valid_bash() -> None:
    script = _script(env={"A": "1"}, secrets=("prod/hf-token", "/team/wandb_key"))
    assert _bash(f"bash -n <<'MULTICLOUD_EOF'\n{script}\nMULTICLOUD_EOF").returncode == 0


@pytest.mark.parametrize(("failures", "tagged"), [(0, True), (2, True), (10, False)])
def test_user_data_retries_the_exit_tag_before_powering_off(failures: int, tagged: bool) -> None:
    # Run the script's own report function with aws, sleep and shutdown stubbed out.
    stubs = f"""
    LEFT={failures}
    aws() {{ echo "aws $*"; if [ "$LEFT" -gt 0 ]; then LEFT=$((LEFT - 1)); return 255; fi; }}
    sleep() {{ echo "sleep $1"; }}
    shutdown() {{ echo "shutdown $*"; }}
    REGION=us-east-1
    IID=i-0123
    """
    done = _bash(stubs + _shell_function(_script(), "report") + "\nreport 3\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    calls = [line for line in out if line.startswith("aws ec2 create-tags")]
    assert calls[0] == (
        "aws ec2 create-tags --region us-east-1 --resources i-0123"
        " --tags Key=multicloud:exit,Value=3"
    )
    assert len(calls) == (failures + 1 if tagged else REPORT_ATTEMPTS)
    sleeps = [line for line in out if line.startswith("sleep")]
    assert sleeps == [f"sleep {2**n}" for n in range(1, len(calls))]
    assert out[-1] == "shutdown -h now"  # it powers off either way
    assert ("could not tag" in done.stderr) is not tagged


SECRET_CASES = [
    # (what the CLI prints, exit code, env file afterwards)
    ("hf_abc=def with spaces\n", 0, "HF_TOKEN=hf_abc=def with spaces\n"),
    ("line-one-SECRET\nline-two-SECRET\n", SECRET_MULTILINE_EXIT, ""),
    (None, SECRET_UNREADABLE_EXIT, ""),
]


@pytest.mark.parametrize(("printed", "code", "envfile"), SECRET_CASES)
def test_user_data_refuses_a_multi_line_secret_without_showing_it(
    tmp_path: Path, printed: str | None, code: int, envfile: str
) -> None:
    # Run the generated secret lines with bash: the CLI is stubbed to print the value (or
    # fail), report is stubbed to record the exit code instead of tagging and powering off.
    script = _script(secrets=("prod/hf-token",))
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("VAL=$(aws"))
    secret_lines = "\n".join(lines[start : start + 2])
    assert lines[start + 1] == 'secret_line prod/hf-token HF_TOKEN "$VAL"'
    out = tmp_path / "env"
    out.write_text("")
    value = "" if printed is None else printed.replace("\n", "\\n")
    stub = "return 1" if printed is None else f"printf '{value}'"
    program = "\n".join(
        [
            "set -u",
            f"ENVFILE={shlex.quote(str(out))}",
            "REGION=us-east-1",
            f"aws() {{ {stub}; }}",
            'report() { echo "report $1"; }',
            _shell_function(script, "secret_line"),
            secret_lines,
            "exit 0",
        ]
    )
    done = _bash(program)
    assert done.returncode == code, done.stderr
    assert out.read_text() == envfile
    if code:
        assert done.stdout.splitlines() == [f"report {code}"]
    if code == SECRET_MULTILINE_EXIT:
        assert "prod/hf-token" in done.stderr and "multi-line" in done.stderr
        assert "SECRET" not in done.stderr + done.stdout  # no part of the value is shown


def test_user_data_reports_the_exit_and_refuses_bad_input() -> None:
    script = render_user_data(
        image=None,
        command=("echo", "a b"),
        env={},
        secrets=(),
        request_id="r",
        job_id="j",
        nodes=1,
    )
    assert "multicloud:exit" in script and "shutdown -h now" in script
    # Argument lists keep their word boundaries through both levels of quoting.
    assert "exec sh -c " + shlex.quote("echo 'a b'") in script
    with pytest.raises(ValueError):
        render_user_data(
            image=None, command=None, env={}, secrets=(), request_id="r", job_id="j", nodes=1
        )
    with pytest.raises(ValueError):
        render_user_data(
            image="x",
            command=None,
            env={"BAD-NAME": "1"},
            secrets=(),
            request_id="r",
            job_id="j",
            nodes=1,
        )
    with pytest.raises(ValueError):
        render_user_data(
            image="x",
            command=None,
            env={"BIG": "x" * 20000},
            secrets=(),
            request_id="r",
            job_id="j",
            nodes=1,
        )
