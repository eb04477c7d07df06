"""The OCI adapter against the fake OCI REST server, through the real ``oci`` SDK."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from multicloud_oci.testing import FakeOCI, pick, serve
from multicloud_oci.workload import OCI_TAGS, gang_status

from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    QuotaError,
    SpecError,
    TransientError,
)
from multicloud.provider import MarketKind, ResourceRequest, WorkloadState
from multicloud.testing.builders import launch_spec

REGION = "us-ashburn-1"
AD1, AD2, AD3 = (f"FAKE:US-ASHBURN-1-AD-{i}" for i in (1, 2, 3))

H100 = "BM.GPU.H100.8"
A10 = "VM.GPU.A10.1"
V100 = "VM.GPU3.1"


@pytest.fixture
def fake() -> Iterator[FakeOCI]:
    with serve() as f:
        yield f


# -- offers -----------------------------------------------------------------------------------


def test_offers_are_narrowed_per_availability_domain_by_list_shapes(fake: FakeOCI) -> None:
    fake.shapes[AD1] = {H100: 8}
    fake.shapes[AD2] = {H100: 8, A10: 1}
    fake.shapes[AD3] = {}
    got = {(o.zone, o.instance_type) for o in fake.provider().offers(ResourceRequest())}
    assert got == {(AD1, H100), (AD2, H100), (AD2, A10)}


def test_offers_carry_catalog_prices_and_the_capacity_report(fake: FakeOCI) -> None:
    fake.host_capacity[(AD1, H100)] = 0
    fake.host_capacity[(AD2, H100)] = 7
    offers = {o.zone: o for o in fake.provider().offers(ResourceRequest(accelerators=("H100",)))}
    assert {o.price for o in offers.values()} == {80.0}
    assert all(o.spot_price is None and o.jurisdiction == "US" for o in offers.values())
    assert (offers[AD1].capacity, offers[AD2].capacity, offers[AD3].capacity) == (0, 7, 4)


def test_without_capacity_report_permission_offers_have_no_capacity(fake: FakeOCI) -> None:
    fake.report_permission = False
    offers = fake.provider().offers(ResourceRequest(accelerators=("H100",)))
    assert offers and all(o.capacity is None for o in offers)


def test_a_reservation_is_offered_at_zero_with_its_free_room(fake: FakeOCI) -> None:
    rid = fake.add_reservation(REGION, AD2, H100, 3)
    reserved = [o for o in fake.provider().offers(ResourceRequest()) if o.reservation]
    assert [(o.reservation, o.zone, o.instance_type, o.price, o.capacity) for o in reserved] == [
        (rid, AD2, H100, 0.0, 3)
    ]


def test_only_preemptible_vm_shapes_have_a_spot_price(fake: FakeOCI) -> None:
    offers = fake.provider().offers(ResourceRequest())
    spot = {o.instance_type for o in offers if o.spot_price is not None}
    assert spot and all(s.startswith("VM.GPU3.") for s in spot)


def test_a_shape_without_an_image_gets_no_offers_and_the_most_specific_image_wins(
    fake: FakeOCI,
) -> None:
    fake.images[REGION] = "ocid1.image.oc1..nv"
    arm = "ocid1.image.oc1..arm"
    p = fake.provider(images={f"{REGION}/nvidia": fake.images[REGION],
                              f"{REGION}/BM.GPU.GB200.4": arm})
    accelerators = {o.accelerator for o in p.offers(ResourceRequest())}
    assert "MI300X" not in accelerators and {"H100", "GB200"} <= accelerators
    fake.images[REGION] = arm
    handle = p.launch(pick(p, "BM.GPU.GB200.4"), launch_spec(), request_id="p" * 32)
    (inst,) = fake.members(handle.id)
    assert inst["imageId"] == arm


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        ({"compartment_id": ""}, "compartment_id"),
        ({"subnets": {}}, "subnets"),
        ({"images": {}}, "images"),
        ({"auth": "password"}, "auth"),
    ],
)
def test_missing_options_are_named(fake: FakeOCI, missing: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        fake.provider(**missing)
    assert f"providers.oci.options.{field}" in str(caught.value.render())


# -- launch -----------------------------------------------------------------------------------


def test_a_gang_of_an_rdma_shape_goes_on_one_compute_cluster(fake: FakeOCI) -> None:
    p = fake.provider()
    handle = p.launch(pick(p), launch_spec(nodes=2), request_id="a" * 32)
    bodies = [fake.launch_bodies[i["id"]] for i in fake.members(handle.id)]
    (cluster,) = fake.clusters
    assert [b["computeClusterId"] for b in bodies] == [cluster, cluster]
    assert [b["availabilityDomain"] for b in bodies] == [AD1, AD1]
    assert [b["createVnicDetails"]["hostnameLabel"] for b in bodies] == [
        f"{handle.id}-0", f"{handle.id}-1"
    ]
    assert [b["metadata"]["multicloud_rank"] for b in bodies] == ["0", "1"]
    assert handle.get("cluster") == cluster
    tags = bodies[0]["freeformTags"]
    assert tags[OCI_TAGS.key("job")] == "job-1" and tags["multicloud-nodes"] == "2"
    assert len(tags) <= 10


def test_a_gang_of_a_vm_shape_needs_no_compute_cluster(fake: FakeOCI) -> None:
    p = fake.provider()
    handle = p.launch(pick(p, A10), launch_spec(nodes=2), request_id="b" * 32)
    assert not fake.clusters and handle.get("cluster") is None
    assert len(fake.members(handle.id)) == 2


def test_launch_is_idempotent_by_request_id(fake: FakeOCI) -> None:
    p = fake.provider()
    first = p.launch(pick(p), launch_spec(nodes=2), request_id="c" * 32)
    second = fake.provider().launch(pick(p), launch_spec(nodes=2), request_id="c" * 32)
    assert first == second
    assert fake.count("POST", "/instances") == 2
    assert sorted(fake.launches.values()) == [1, 1]


def test_the_retry_token_makes_a_lost_answer_harmless(fake: FakeOCI) -> None:
    p = fake.provider()
    fake.fail_next("ListInstances", "ServiceUnavailable")
    with pytest.raises(Exception):  # noqa: B017 - the listing before the launch fails
        p.launch(pick(p), launch_spec(), request_id="d" * 32)
    handle = p.launch(pick(p), launch_spec(), request_id="d" * 32)
    # The same opc-retry-token with the same body: OCI answers with the same instance.
    compute = p._clients.compute(REGION)
    body = fake.launch_bodies[fake.members(handle.id)[0]["id"]]
    details = compute.base_client.sanitize_for_serialization(body)
    again = compute.base_client.call_api(
        resource_path="/instances", method="POST", body=details,
        header_params={"opc-retry-token": f"{handle.id}-0-0", "content-type": "application/json",
                       "accept": "application/json"}, response_type="Instance",
    ).data
    assert again.id == fake.members(handle.id)[0]["id"]
    assert sum(fake.launches.values()) == 1


def test_a_request_id_reused_for_another_spec_is_refused(fake: FakeOCI) -> None:
    p = fake.provider()
    p.launch(pick(p), launch_spec("job-1"), request_id="e" * 32)
    with pytest.raises(InvalidRequestError, match="already used"):
        p.launch(pick(p), launch_spec("job-2"), request_id="e" * 32)
    assert fake.count("POST", "/instances") == 1


def test_a_gang_that_cannot_form_leaves_nothing_running_and_can_be_retried(
    fake: FakeOCI,
) -> None:
    fake.host_capacity[(AD1, H100)] = 1
    p = fake.provider()
    o = pick(p)
    with pytest.raises(CapacityError) as caught:
        p.launch(o, launch_spec(nodes=2), request_id="f" * 32)
    assert caught.value.scope == f"oci/{REGION}/{AD1}"
    assert {i["lifecycleState"] for i in fake.instances.values()} == {"TERMINATED"}
    # Later, with room: the same request id launches anew (fresh retry tokens: OCI
    # invalidates the token of a terminated instance).
    fake.host_capacity[(AD1, H100)] = 2
    handle = p.launch(o, launch_spec(nodes=2), request_id="f" * 32)
    assert p.status([handle])[handle.id].state is WorkloadState.RUNNING


def test_a_transient_failure_keeps_the_nodes_the_re_send_finds(fake: FakeOCI) -> None:
    p = fake.provider()
    fake.fail_next("LaunchInstance", "")
    fake.fail_next("LaunchInstance", "ServiceUnavailable")
    with pytest.raises(TransientError):
        p.launch(pick(p), launch_spec(nodes=2), request_id="o" * 32)
    handle = p.launch(pick(p), launch_spec(nodes=2), request_id="o" * 32)
    assert [i["lifecycleState"] for i in fake.members(handle.id)] == ["RUNNING", "RUNNING"]
    assert sorted(fake.launches.values()) == [1, 1]


@pytest.mark.parametrize(
    ("limits", "width"),
    [
        ({AD2: 0, AD3: 16}, "zone"),
        ({AD2: 0, AD3: 8}, "region"),
    ],
    ids=["another-ad-has-room", "no-ad-has-room"],
)
def test_quota_is_read_before_launching(
    fake: FakeOCI, limits: dict[str, int], width: str
) -> None:
    for ad, gpus in limits.items():
        fake.limits[(ad, "gpu-h100-count")] = gpus
    fake.limits[(AD1, "gpu-h100-count")] = 8  # room for one node of 8 GPUs, not two
    p = fake.provider()
    with pytest.raises(QuotaError) as caught:
        p.launch(pick(p), launch_spec(nodes=2), request_id="g" * 32)
    scope = f"oci/{REGION}/{AD1}" if width == "zone" else f"oci/{REGION}"
    assert caught.value.scope == scope
    assert fake.count("POST", "/instances") == 0


def test_a_reserved_launch_draws_on_its_reservation(fake: FakeOCI) -> None:
    rid = fake.add_reservation(REGION, AD2, H100, 2)
    p = fake.provider()
    o = pick(p, zone=2, reserved=True)
    handle = p.launch(o, launch_spec(nodes=2, market=MarketKind.RESERVED), request_id="h" * 32)
    assert {fake.launch_bodies[i["id"]]["capacityReservationId"]
            for i in fake.members(handle.id)} == {rid}
    with pytest.raises(CapacityError, match="has 0 of 1 nodes free"):
        p.launch(o, launch_spec("job-2", market=MarketKind.RESERVED), request_id="i" * 32)


def test_spot_launches_preemptible_and_only_where_the_shape_has_it(fake: FakeOCI) -> None:
    p = fake.provider()
    handle = p.launch(pick(p, V100), launch_spec(market=MarketKind.SPOT), request_id="j" * 32)
    body = fake.launch_bodies[fake.members(handle.id)[0]["id"]]
    assert body["preemptibleInstanceConfig"] == {
        "preemptionAction": {"type": "TERMINATE", "preserveBootVolume": False}
    }
    with pytest.raises(InvalidRequestError, match="no spot market"):
        p.launch(pick(p), launch_spec(market=MarketKind.SPOT), request_id="k" * 32)
    assert fake.count("POST", "/instances") == 1


def test_secrets_need_a_vault(fake: FakeOCI) -> None:
    p = fake.provider()
    with pytest.raises(InvalidRequestError, match="vault_id"):
        p.launch(pick(p), launch_spec(secrets=("HF_TOKEN",)), request_id="l" * 32)


def test_the_node_program_travels_as_base64_user_data(fake: FakeOCI) -> None:
    p = fake.provider(vault_id="ocid1.vault.oc1..v")
    handle = p.launch(pick(p), launch_spec(secrets=("HF_TOKEN",)), request_id="m" * 32)
    (inst,) = fake.members(handle.id)
    program = base64.b64decode(inst["metadata"]["user_data"]).decode()
    assert program.startswith("#!/bin/bash") and "ocid1.vault.oc1..v" in program
    assert "Authorization: Bearer Oracle" in program and "169.254.169.254/opc/v2" in program


# -- terminate and the sweep ---------------------------------------------------------------------


def test_terminate_is_idempotent_and_the_sweep_deletes_a_cluster_left_behind(
    fake: FakeOCI,
) -> None:
    fake.terminate_to = "TERMINATING"
    p = fake.provider()
    handle = p.launch(pick(p), launch_spec(nodes=2), request_id="n" * 32)
    p.terminate(handle, request_id="t1")
    p.terminate(handle, request_id="t2")
    (cluster,) = fake.clusters.values()
    assert cluster["lifecycleState"] == "ACTIVE"  # its instances are still terminating
    (left,) = p.owned("default")
    assert left.handle.id == handle.id and left.job_id == "job-1"
    fake.settle()
    p.terminate(left.handle, request_id="sweep")
    assert cluster["lifecycleState"] == "DELETED"
    assert p.owned("default") == []


# -- how a gang's status is read ---------------------------------------------------------------


def inst(rank: int, state: str = "RUNNING", name: str = "", preemptible: bool = False) -> Any:
    return SimpleNamespace(
        lifecycle_state=state,
        display_name=name or f"mc-x-{rank}",
        metadata={"multicloud_rank": str(rank)},
        preemptible_instance_config=object() if preemptible else None,
    )


@pytest.mark.parametrize(
    ("instances", "state", "exit_code"),
    [
        ([inst(0), inst(1)], WorkloadState.RUNNING, None),
        ([inst(0, "PROVISIONING"), inst(1)], WorkloadState.PROVISIONING, None),
        ([inst(0, "TERMINATED", "mc-x-0 exit=0"), inst(1, "TERMINATED", "mc-x-1 exit=0")],
         WorkloadState.SUCCEEDED, 0),
        ([inst(0, "RUNNING", "mc-x-0 exit=3"), inst(1)], WorkloadState.FAILED, 3),
        ([inst(0, "TERMINATED", preemptible=True), inst(1, preemptible=True)],
         WorkloadState.PREEMPTED, None),
        ([inst(0, "TERMINATED", "mc-x-0 exit=preempted", True), inst(1, "TERMINATED",
          "mc-x-1 exit=143", True)], WorkloadState.PREEMPTED, None),
        ([inst(0, "TERMINATED"), inst(1)], WorkloadState.TERMINATED, None),
        ([inst(0, "STOPPED"), inst(1)], WorkloadState.TERMINATED, None),
        ([inst(0)], WorkloadState.TERMINATED, None),  # node 1 is gone
        ([inst(0, "TERMINATED"), inst(0), inst(1)], WorkloadState.RUNNING, None),  # re-launched
        ([], WorkloadState.TERMINATED, None),
    ],
)
def test_gang_status(instances: list[Any], state: WorkloadState, exit_code: int | None) -> None:
    got = gang_status(2, instances)
    assert (got.state, got.exit_code) == (state, exit_code)


# -- the registry -------------------------------------------------------------------------------


def test_the_oci_adapter_is_registered_and_hinted(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from multicloud_oci import OCIProvider

    from multicloud import providers

    assert providers.resolve("oci") is OCIProvider
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    assert providers.available()["oci"] == "not installed: pip install multicloud-oci"
