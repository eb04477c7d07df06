"""AWSProvider behaviour beyond the conformance suite, against a moto server on 127.0.0.1.

What moto cannot do (EC2 quotas, spot prices, reservations, placement groups, errors) is
answered by the fake's tables in ``multicloud_aws.testing``; the Price List API by a botocore
``before-call`` hook. Every session handed to the adapter refuses non-fake URLs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from multicloud_aws import AWSProvider, quota_code
from multicloud_aws.node import EXIT_TAG, IMAGE_PARAMETERS
from multicloud_aws.testing import FakeAWS, serve

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
    # A scheduler that crashed after launching builds a new adapter and re-sends the key:
    # EC2 answers the same ClientToken with the first launch's reservation.
    second = launch(make(fake), offer, spec(nodes=2))
    assert second == first
    tokens = [c["ClientToken"] for c in fake.calls("RunInstances")]
    assert tokens == [first.request_id, first.request_id]
    assert fake.launches == {first.request_id: 1}
    assert len(instances(fake, first)) == 2


def test_same_request_id_for_another_launch_is_refused_as_ec2_does(fake: FakeAWS) -> None:
    provider = make(fake)
    offer = pick(provider)
    key = request_id("reuse", 1, REGION)
    provider.launch(offer, spec("reuse"), request_id=key)
    with pytest.raises(InvalidRequestError) as err:
        provider.launch(offer, spec("reuse", env={"OTHER": "1"}), request_id=key)
    assert "IdempotentParameterMismatch" in str(err.value)
    assert fake.launches == {key: 1}


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
    assert tags["multicloud:fleet"] == "aws" and len(tags["multicloud:spec"]) == 16
    call = fake.calls("RunInstances")[0]
    assert call["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert call["MetadataOptions.HttpTokens"] == "required"  # IMDSv2 only
    assert call["MinCount"] == call["MaxCount"] == "1"
    user_data = fake.user_data()
    assert "ghcr.io/acme/train:1" in user_data and "'python train.py'" in user_data
    assert "put EPOCHS 2" in user_data
    # The secret travels by name, resolved on the node; the value is never in the request.
    assert "secret prod/hf-token HF_TOKEN" in user_data


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


@pytest.mark.parametrize(
    ("kind", "group", "expected_group"),
    [
        ("default", None, None),
        ("capacity-block", None, None),
        ("default", "team-cpg", "team-cpg"),
        ("capacity-block", "block-cpg", "block-cpg"),
    ],
)
def test_a_reserved_gang_gets_no_new_placement_group(
    fake: FakeAWS, kind: str, group: str | None, expected_group: str | None
) -> None:
    # Regression: a reserved gang got a fresh cluster placement group, which a reservation
    # not created in it does not serve; now it launches into the reservation's own group or
    # none, and the fake refuses anything else as EC2 does.
    rid = fake.add_reservation(
        REGION, "p5.48xlarge", "us-east-1b", total=2, kind=kind, placement_group=group
    )
    provider = make(fake)
    handle = launch(
        provider, pick(provider, reserved=True), spec("cr", nodes=2, market=MarketKind.RESERVED)
    )
    assert fake.calls("CreatePlacementGroup") == []
    call = fake.calls("RunInstances")[0]
    assert call.get("Placement.GroupName") == expected_group
    assert fake.launches and fake.reservation_available(rid) == 0
    # terminate never deletes a group the gang did not create (the reservation's).
    assert handle.get("placement_group") is None
    provider.terminate(handle, request_id="end")
    assert fake.calls("DeletePlacementGroup") == []


@pytest.mark.parametrize(
    ("group", "market", "refused"),
    [
        ("other-cpg", None, "it cannot serve group other-cpg"),
        (None, None, "needs InstanceMarketOptions MarketType capacity-block"),
    ],
)
def test_the_fake_refuses_a_launch_the_reservation_does_not_serve(
    fake: FakeAWS, group: str | None, market: str | None, refused: str
) -> None:
    fake.client("ec2").create_placement_group(GroupName="other-cpg", Strategy="cluster")
    kind = "default" if group else "capacity-block"
    rid = fake.add_reservation(REGION, "p5.48xlarge", "us-east-1b", total=2, kind=kind)
    placement = {"AvailabilityZone": "us-east-1b", **({"GroupName": group} if group else {})}
    with pytest.raises(ClientError) as err:
        fake.client("ec2").run_instances(
            ImageId="ami-03cf127a",
            InstanceType="p5.48xlarge",
            MinCount=2,
            MaxCount=2,
            Placement=placement,
            CapacityReservationSpecification={
                "CapacityReservationTarget": {"CapacityReservationId": rid}
            },
        )
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"
    assert refused in err.value.response["Error"]["Message"]
    assert fake.launches == {} and fake.reservation_available(rid) == 2


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
        fake.finish(instance_id, code)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, exit_code)


def test_host_that_ended_without_its_exit_tag_is_failed_not_lost(fake: FakeAWS) -> None:
    # The host's create-tags was refused (no instance profile, or one without
    # ec2:CreateTags) and it powered off: the job ran, so it must not be requeued as lost.
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("untagged", nodes=2))
    first, second = handle.id.split(",")
    fake.finish(first, 0)
    fake.finish(second, None)
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
    fake.preempt(handle.id.split(",")[0])
    assert provider.status([handle])[handle.id].state is WorkloadState.PREEMPTED


@pytest.mark.parametrize("code", [143, 137, 0])
def test_a_reclaimed_node_whose_command_was_killed_reads_preempted(
    fake: FakeAWS, code: int
) -> None:
    # Regression: the reclaim killed the container, the node still tagged 143 (or 137) and
    # status read the tag first: FAILED, never re-placed. EC2's reason now comes first.
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("reclaimed", nodes=2, market=MarketKind.SPOT))
    fake.preempt(handle.id)
    fake.client("ec2").create_tags(
        Resources=handle.id.split(","), Tags=[{"Key": EXIT_TAG, "Value": str(code)}]
    )
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (WorkloadState.PREEMPTED, None)


def test_an_on_demand_node_that_exits_3_reads_failed(fake: FakeAWS) -> None:
    provider = make(fake)
    handle = launch(provider, pick(provider), spec("three"))
    fake.finish(handle.id, 3)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (WorkloadState.FAILED, 3)


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
    fake.finish(done.id, 0)
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


# -- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "kind"),
    [
        ("p5.48xlarge", "nvidia"),
        ("g5.xlarge", "nvidia"),
        ("p3dn.24xlarge", "nvidia-proprietary"),
        ("trn1.32xlarge", "neuron"),
        ("inf2.xlarge", "neuron"),
    ],
)
def test_each_accelerator_family_boots_its_own_image(
    fake: FakeAWS, instance_type: str, kind: str
) -> None:
    # Regression: every type booted the OSS-driver DLAMI, which drives neither V100 (p3,
    # p3dn) nor Trainium / Inferentia.
    fake.public_parameters.update({name: f"ami-{k}" for k, name in IMAGE_PARAMETERS.items()})
    provider = make(fake, image_id=None)
    launch(provider, pick(provider, instance_type), spec("img"))
    assert fake.calls("RunInstances")[0]["ImageId"] == f"ami-{kind}"
    assert [c["Name"] for c in fake.calls("GetParameter")] == [IMAGE_PARAMETERS[kind]]


def test_images_stay_overridable(fake: FakeAWS) -> None:
    fake.public_parameters["/team/neuron-ami"] = "ami-team"
    provider = make(fake, image_id=None, image_parameter={"neuron": "/team/neuron-ami"})
    launch(provider, pick(provider, "trn1.32xlarge"), spec("own"))
    assert fake.calls("RunInstances")[0]["ImageId"] == "ami-team"
    pinned = make(fake, image_id={"us-east-1": "ami-pinned"})
    launch(pinned, pick(pinned, "trn1.32xlarge"), spec("pinned"))
    assert fake.calls("RunInstances")[1]["ImageId"] == "ami-pinned"


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
