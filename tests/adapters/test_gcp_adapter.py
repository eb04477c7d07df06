"""GCP adapter behaviour against the fake Compute + TPU REST APIs on 127.0.0.1.

Every test goes through the real ``google-cloud-compute`` / ``google-cloud-tpu`` clients (REST
transport, anonymous credentials), so request shapes, operations and error payloads are the
SDK's own; the fake only plays Google's side.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_gcp import GCPProvider
from multicloud_gcp.compute import REQUEST_NAMESPACE
from multicloud_gcp.testing import FakeGCP, block_external_network, serve_offline
from multicloud_gcp.workload import label_value

import multicloud.providers as registry
from multicloud.errors import CapacityError, InvalidRequestError, QuotaError, TransientError
from multicloud.fleet import plan_fleet
from multicloud.models import Job
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    WorkloadState,
    request_id,
)
from multicloud.specs import parse_fleet

REGION = "us-central1"
ZONE = "us-central1-a"


@pytest.fixture
def fake() -> Iterator[FakeGCP]:
    with serve_offline() as running:
        yield running


def make(fake: FakeGCP, **options: Any) -> GCPProvider:
    return GCPProvider(regions=[REGION], **{**fake.options, **options})


def offer_of(provider: GCPProvider, instance_type: str, zone: str = ZONE) -> Offer:
    return next(
        o
        for o in provider.offers(ResourceRequest())
        if (o.instance_type, o.zone) == (instance_type, zone)
    )


def spec(
    job: str = "job-1",
    *,
    nodes: int = 1,
    market: MarketKind = MarketKind.ON_DEMAND,
    install: str = "inst-a",
    **fields: Any,
) -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name="train",
        attempt=1,
        nodes=nodes,
        market=market,
        install_id=install,
        image="ghcr.io/acme/train:1",
        command=("python", "train.py"),
        **fields,
    )


def launch(provider: GCPProvider, offer: Offer, s: LaunchSpec) -> Handle:
    return provider.launch(offer, s, request_id=request_id(s.job_id, s.attempt, offer.region))


def instances_of(fake: FakeGCP, handle: Handle) -> list[dict[str, Any]]:
    return [i for i in fake.instances.values() if i["labels"].get("multicloud-handle") == handle.id]


def metadata_of(instance: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in instance["metadata"]["items"]}


# -- registry and fleet files ----------------------------------------------------------------


def test_registered_under_gcp_entry_point(fake: FakeGCP) -> None:
    provider = registry.load("gcp", regions=[REGION], **fake.options)
    assert isinstance(provider, GCPProvider)
    assert provider.offers(ResourceRequest(accelerators=("H100",)))


def test_job_planned_on_sim_replans_on_gcp_unchanged(fake: FakeGCP) -> None:
    job = Job.model_validate(
        {
            "name": "llm-train",
            "kind": "training",
            "resources": {"accelerator": ["H100"], "count": 8, "nodes": 2},
            "market": "on-demand",
            "duration_hours": 4,
        }
    )
    sim = parse_fleet(
        f"providers:\n  gcp:\n    adapter: sim\n    catalog: builtin\n    regions: [{REGION}]\n"
    )
    real = parse_fleet(
        f"providers:\n  gcp:\n    adapter: gcp\n    regions: [{REGION}]\n"
        f"    options: {json.dumps(fake.options)}\n"
    )
    on_sim, on_gcp = plan_fleet([job], sim), plan_fleet([job], real)
    assert [p.offer.instance_type for p in on_gcp.placements] == [
        p.offer.instance_type for p in on_sim.placements
    ]
    assert on_gcp.placements[0].nodes == 2


def test_unknown_fleet_option_is_a_spec_error(fake: FakeGCP) -> None:
    from multicloud.errors import SpecError

    fleet = parse_fleet("providers:\n  gcp:\n    adapter: gcp\n    options: {projekt: p}\n")
    with pytest.raises(SpecError, match="did you mean 'project'"):
        registry.from_fleet(fleet, "gcp")


# -- offers ------------------------------------------------------------------------------------


def test_offers_are_catalog_rows_narrowed_by_live_listings(fake: FakeGCP) -> None:
    full = {(o.zone, o.instance_type) for o in make(fake).offers(ResourceRequest())}
    assert (ZONE, "a3-highgpu-8g") in full
    assert any(t.startswith("tpu-v5litepod") for _, t in full)
    # The zone stops listing the machine type; TPU listing of one zone disappears (404).
    fake.machine_types[ZONE].discard("a3-highgpu-8g")
    tpu_zone = next(z for z, t in full if t == "tpu-v5p-8")
    del fake.tpu_types[tpu_zone]
    narrowed = {(o.zone, o.instance_type) for o in make(fake).offers(ResourceRequest())}
    assert (ZONE, "a3-highgpu-8g") not in narrowed
    assert not any(z == tpu_zone and t.startswith("tpu-") for z, t in narrowed)
    assert narrowed < full


def test_offers_use_one_listing_per_api_and_zone_and_are_cached(fake: FakeGCP) -> None:
    provider = make(fake)
    provider.offers(ResourceRequest())
    provider.offers(ResourceRequest(accelerators=("A100",)))
    assert len(fake.calls_to("machineTypes.aggregatedList")) == 1
    tpu_calls = fake.calls_to("tpu.acceleratorTypes.list")
    assert len(tpu_calls) == len({c.path for c in tpu_calls})


def test_tpu_offers_carry_zones_even_for_regional_catalog_rows(fake: FakeGCP) -> None:
    tpus = [o for o in make(fake).offers(ResourceRequest()) if o.instance_type.startswith("tpu-")]
    assert tpus and all(o.zone and o.zone.startswith(f"{REGION}-") for o in tpus)


# -- GPU VM launch -------------------------------------------------------------------------------


def test_gpu_launch_is_idempotent_with_uuid5_request_ids(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    s = spec(nodes=2)
    first = launch(provider, offer, s)
    # A second provider has no cache: like a scheduler restarted between insert and record.
    again = launch(make(fake), offer, s)
    assert again == first
    assert len(instances_of(fake, first)) == 2
    inserts = fake.calls_to("instances.insert")
    assert len(inserts) == 2
    key = request_id(s.job_id, s.attempt, REGION)
    for node, call in enumerate(inserts):
        sent = uuid.UUID(call.query["requestId"])
        assert sent.version == 5
        assert sent == uuid.uuid5(REQUEST_NAMESPACE, f"{key}/{ZONE}/{node}")


def test_repeated_request_id_reaching_google_creates_nothing_new(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    handle = launch(provider, offer, spec())
    # Google de-duplicates by requestId: re-sending the same insert returns the first
    # operation, so even a lost list result cannot double the VMs.
    call = fake.calls_to("instances.insert")[0]
    status, reply = fake.handle(
        "POST", f"{call.path}?requestId={call.query['requestId']}", call.body
    )
    assert status == 200 and reply["operationType"] == "insert"
    assert len(instances_of(fake, handle)) == 1


def test_gpu_vms_carry_ownership_labels_and_exact_ids_in_metadata(fake: FakeGCP) -> None:
    provider = make(fake)
    job = "Team-A/LLM_pretrain-" + "x" * 80
    s = spec(job, env={"EPOCHS": "3"}, secrets=("HF_TOKEN",))
    handle = launch(provider, offer_of(provider, "a3-highgpu-8g"), s)
    (instance,) = instances_of(fake, handle)
    labels = instance["labels"]
    assert labels["multicloud-job"] == label_value(job) != job
    assert (labels["multicloud-attempt"], labels["multicloud-install"]) == ("1", "inst-a")
    assert labels["multicloud-fleet"] == "gcp" and labels["multicloud-handle"] == handle.id
    for key, value in labels.items():
        # GCP label rules: lowercase letters, digits, '-' and '_', at most 63 characters.
        assert len(key) <= 63 and len(value) <= 63
        assert value == value.lower() and all(c.isalnum() or c in "-_" for c in value)
    meta = metadata_of(instance)
    # Labels are lossy: the exact ownership travels in metadata for the orphan sweep.
    assert (meta["multicloud-job"], meta["multicloud-request"]) == (job, handle.request_id)
    program = meta["startup-script"]
    assert "ghcr.io/acme/train:1" in program and "train.py" in program and "EPOCHS" in program
    # A secret travels by name only.
    assert "secret HF_TOKEN HF_TOKEN" in program


@pytest.mark.parametrize(
    ("value", "expected"),
    [("job-1", "job-1"), ("Job_1", None), ("a" * 64, None), ("x/y", None)],
)
def test_label_value_rules(value: str, expected: str | None) -> None:
    got = label_value(value)
    assert len(got) <= 63 and got == got.lower()
    if expected is not None:
        assert got == expected
    else:
        # Changed values keep a hash suffix so two job ids never collide.
        assert got != label_value(value + "2")


def test_spot_launch_uses_spot_provisioning_and_preemptible_quota(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    # On-demand quota is gone but spot quota is there: a spot launch must still go.
    fake.set_quota(REGION, "NVIDIA_H100_GPUS", 0)
    handle = launch(provider, offer, spec(market=MarketKind.SPOT))
    (instance,) = instances_of(fake, handle)
    scheduling = instance["scheduling"]
    assert scheduling["provisioningModel"] == "SPOT"
    assert scheduling["instanceTerminationAction"] == "STOP"
    assert scheduling["onHostMaintenance"] == "TERMINATE"


def test_gang_is_n_vms_in_the_offer_zone(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g", "us-central1-b")
    handle = launch(provider, offer, spec(nodes=4))
    instances = instances_of(fake, handle)
    assert sorted(i["name"] for i in instances) == [f"{handle.id}-{n}" for n in range(4)]
    assert {i["zone"].rsplit("/", 1)[-1] for i in instances} == {"us-central1-b"}
    program = metadata_of(instances[0])["startup-script"]
    # Rank 0 is found by name through the VPC's internal DNS; NNODES is the gang's size.
    assert f"BASE={handle.id}" in program and 'getent hosts "$BASE-0"' in program
    assert "put NNODES 4" in program


def test_partial_gang_is_deleted_and_capacity_error_raised(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    fake.fail(
        "instances.insert",
        in_operation=True,
        status=503,
        reason="ZONE_RESOURCE_POOL_EXHAUSTED",
        message="The zone does not have enough resources available",
        after=2,
    )
    with pytest.raises(CapacityError) as caught:
        launch(provider, offer, spec(nodes=4))
    assert caught.value.scope == f"gcp/{REGION}/{ZONE}"
    # Nothing of the gang is left: not its VMs, not its placement policy.
    assert fake.instances == {} and fake.policies == {}


def test_capacity_answered_to_a_later_insert_still_undoes_the_gang(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    # Node 1's insert call itself is refused (HTTP), after node 0's went out.
    fake.fail(
        "instances.insert",
        status=503,
        reason="ZONE_RESOURCE_POOL_EXHAUSTED",
        message="no capacity",
        after=1,
    )
    with pytest.raises(CapacityError):
        launch(provider, offer, spec(nodes=2))
    assert fake.instances == {} and fake.policies == {}


def test_resend_after_an_undone_gang_builds_it_again(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    s = spec(nodes=2)
    fake.fail(
        "instances.insert",
        in_operation=True,
        status=503,
        reason="ZONE_RESOURCE_POOL_EXHAUSTED",
        message="no capacity",
        after=1,
    )
    with pytest.raises(CapacityError):
        launch(provider, offer, s)
    assert fake.instances == {} and fake.policies == {}
    # Capacity is back and the same request id comes again (the block expired): every
    # requestId of the first send (policy, both VMs) now only answers an old operation.
    handle = launch(provider, offer, s)
    assert len(instances_of(fake, handle)) == 2 and len(fake.policies) == 1


def test_resend_after_transient_failure_completes_the_same_gang(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    s = spec(nodes=2)
    # Node 1's insert fails inside its operation with a passing error; node 0 comes up.
    fake.fail(
        "instances.insert",
        in_operation=True,
        status=503,
        reason="INTERNAL_ERROR",
        message="Internal error",
        after=1,
    )
    with pytest.raises(TransientError):
        launch(provider, offer, s)
    # Nothing is undone: the scheduler re-sends the same request id and adopts node 0.
    assert len(fake.instances) == 1
    handle = launch(provider, offer, s)
    names = sorted(i["name"] for i in instances_of(fake, handle))
    assert names == [f"{handle.id}-0", f"{handle.id}-1"] and len(fake.instances) == 2
    # Node 1 went out again under a fresh requestId (its first one only ever answers the
    # failed operation); node 0 was not inserted twice.
    inserted = [(c.body["name"], c.query["requestId"]) for c in fake.calls_to("instances.insert")]
    assert [n for n, _ in inserted].count(f"{handle.id}-0") == 1
    node1 = [rid for n, rid in inserted if n == f"{handle.id}-1"]
    assert len(set(node1)) == 2
    assert provider.status([handle])[handle.id].state in (
        WorkloadState.PROVISIONING,
        WorkloadState.RUNNING,
    )
    fake.finish(handle.id, 0)
    assert provider.status([handle])[handle.id].state is WorkloadState.SUCCEEDED


def test_resend_never_adopts_vms_being_deleted(fake: FakeGCP) -> None:
    provider = make(fake, compact_placement=False)
    offer = offer_of(provider, "a3-highgpu-8g")
    s = spec(nodes=2)
    fake.fail(
        "instances.insert",
        in_operation=True,
        status=503,
        reason="ZONE_RESOURCE_POOL_EXHAUSTED",
        message="no capacity",
        after=1,
    )
    # The undo's delete of node 0 does not finish: node 0 is left STOPPING.
    fake.fail("instances.delete", in_operation=True, status=503, message="still deleting")
    with pytest.raises(CapacityError):
        launch(provider, offer, s)
    [(key, dying)] = list(fake.instances.items())
    assert dying["status"] == "STOPPING"
    # A re-send now must not hand back a workload made of a dying VM.
    with pytest.raises(TransientError):
        launch(provider, offer, s)
    # Once it is gone, the re-send builds the whole gang again (fresh requestIds: the first
    # ones only ever answer the old operations).
    del fake.instances[key]
    handle = launch(provider, offer, s)
    instances = instances_of(fake, handle)
    assert len(instances) == 2 and all(i["status"] != "STOPPING" for i in instances)
    assert provider.status([handle])[handle.id].state is not WorkloadState.FAILED


def test_resend_replaces_a_vm_stopped_without_reporting(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    s = spec(nodes=2)
    first = launch(provider, offer, s)
    # Node 0 stopped (host error) before the scheduler recorded the launch.
    stopped = next(i for i in instances_of(fake, first) if i["name"].endswith("-0"))
    stopped["status"] = "TERMINATED"
    again = launch(make(fake), offer, s)
    assert again == first
    assert len(fake.calls_to("instances.delete")) == 1
    assert len(instances_of(fake, again)) == 2
    assert provider.status([again])[again.id].state is not WorkloadState.FAILED


def test_foreign_and_reserved_offers_are_invalid(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    for bad in (
        Offer(**{**_fields(offer), "provider": "other"}),
        Offer(**{**_fields(offer), "region": "europe-west4", "zone": "europe-west4-a"}),
        Offer(**{**_fields(offer), "reservation": "my-reservation"}),
    ):
        with pytest.raises(InvalidRequestError):
            launch(provider, bad, spec())
    assert fake.calls_to("instances.insert") == []
    # The planned offer is trusted, not looked up again: Google itself refuses a machine
    # type its zone does not have.
    with pytest.raises(InvalidRequestError, match="does not exist in zone"):
        launch(provider, Offer(**{**_fields(offer), "instance_type": "a3-nosuch-8g"}), spec())


def _fields(offer: Offer) -> dict[str, Any]:
    return {f: getattr(offer, f) for f in offer.__dataclass_fields__}


# -- quota -------------------------------------------------------------------------------------


def test_region_without_quota_fails_fast_without_insert(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    fake.set_quota(REGION, "NVIDIA_H100_GPUS", limit=16, usage=12)
    started = time.monotonic()
    with pytest.raises(QuotaError) as caught:
        launch(provider, offer, spec(nodes=1))
    assert time.monotonic() - started < 1.0
    assert caught.value.scope == f"gcp/{REGION}"
    assert fake.calls_to("instances.insert") == []


def test_quota_is_cached_briefly(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "g2-standard-4")
    launch(provider, offer, spec("a"))
    launch(provider, offer, spec("b"))
    assert len(fake.calls_to("regions.get")) == 1
    expired = make(fake, quota_ttl_s=0.0)
    launch(expired, offer, spec("c"))
    launch(expired, offer, spec("d"))
    assert len(fake.calls_to("regions.get")) == 3


# -- status ------------------------------------------------------------------------------------


def test_status_is_one_list_call_per_zone(fake: FakeGCP) -> None:
    provider = make(fake)
    handles = [
        launch(provider, offer_of(provider, "a3-highgpu-8g", zone), spec(f"job-{zone}-{n}"))
        for zone in ("us-central1-a", "us-central1-b")
        for n in range(3)
    ]
    before = len(fake.calls_to("instances.list"))
    statuses = provider.status(handles)
    assert set(statuses) == {h.id for h in handles}
    lists = fake.calls_to("instances.list")[before:]
    assert len(lists) == 2
    assert all(c.query["filter"] == 'labels.multicloud-install = "inst-a"' for c in lists)


def test_vm_status_lifecycle_and_exit_codes(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    ok, bad = launch(provider, offer, spec("ok", nodes=2)), launch(provider, offer, spec("bad"))
    seen = [provider.status([ok])[ok.id].state for _ in range(3)]
    assert seen[0] is WorkloadState.PROVISIONING and seen[-1] is WorkloadState.RUNNING
    fake.finish(ok.id, 0)
    fake.finish(bad.id, 3)
    got = provider.status([ok, bad])
    assert (got[ok.id].state, got[ok.id].exit_code) == (WorkloadState.SUCCEEDED, 0)
    assert (got[bad.id].state, got[bad.id].exit_code) == (WorkloadState.FAILED, 3)


def test_spot_preemption_is_reported(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    spot = launch(provider, offer, spec("spot", market=MarketKind.SPOT))
    fake.preempt(spot.id)
    status = provider.status([spot])[spot.id]
    assert status.state is WorkloadState.PREEMPTED
    assert fake.calls_to("zoneOperations.list")[-1].query["filter"] == (
        'operationType = "compute.instances.preempted"'
    )


def test_vm_stopped_without_exit_code_and_not_preempted_failed(fake: FakeGCP) -> None:
    provider = make(fake)
    handle = launch(provider, offer_of(provider, "a3-highgpu-8g"), spec())
    for instance in instances_of(fake, handle):
        instance["status"] = "TERMINATED"
    assert provider.status([handle])[handle.id].state is WorkloadState.FAILED


# -- terminate and the orphan sweep ----------------------------------------------------------------


def test_terminate_is_idempotent_and_tolerates_404(fake: FakeGCP) -> None:
    provider = make(fake)
    handle = launch(provider, offer_of(provider, "a3-highgpu-8g"), spec(nodes=2))
    # The VM vanishes between our list and our delete: Google answers 404, a no-op.
    fake.fail("instances.delete", status=404, reason="notFound", message="gone")
    provider.terminate(handle, request_id="t-1")
    provider.terminate(handle, request_id="t-1")
    assert instances_of(fake, handle) == []
    assert provider.status([handle])[handle.id].state is WorkloadState.UNKNOWN


def test_owned_lists_this_install_and_fleet_only(fake: FakeGCP) -> None:
    provider = make(fake)
    other_fleet = GCPProvider(fleet_name="gcp-eu", regions=[REGION], **fake.options)
    offer = offer_of(provider, "a3-highgpu-8g")
    mine = launch(provider, offer, spec("Job-Mine", nodes=2))
    launch(provider, offer, spec("theirs", install="inst-b"))
    other_offer = offer_of(other_fleet, "a3-highgpu-8g")
    launch(other_fleet, other_offer, spec("other-fleet"))
    tpu = launch(provider, offer_of(provider, "tpu-v5litepod-8"), spec("tpu-job"))
    owned = provider.owned("inst-a")
    assert sorted((o.job_id, o.attempt, o.handle.id) for o in owned) == sorted(
        [("Job-Mine", 1, mine.id), ("tpu-job", 1, tpu.id)]
    )
    gang = next(o for o in owned if o.handle.id == mine.id)
    assert gang.handle.nodes == 2 and gang.handle.instance_type == "a3-highgpu-8g"
    # What owned() returns can be terminated like any handle.
    provider.terminate(gang.handle, request_id="sweep")
    assert instances_of(fake, mine) == []


# -- TPU ---------------------------------------------------------------------------------------


def test_tpu_launch_uses_queued_resource_with_topology(fake: FakeGCP) -> None:
    from google.cloud import tpu_v2

    provider = make(fake)
    offer = offer_of(provider, "tpu-v5litepod-8")
    s = spec("tpu-job")
    handle = launch(provider, offer, s)
    again = launch(make(fake), offer, s)
    assert again == handle and dict(handle.extra)["kind"] == "tpu-qr"
    (create,) = fake.calls_to("tpu.queuedResources.create")
    assert uuid.UUID(create.query["requestId"]).version == 5
    node = create.body["tpu"]["nodeSpec"][0]["node"]
    # The TPU REST transport sends enums as numbers; 9 is V5LITE_POD.
    config = node["acceleratorConfig"]
    assert tpu_v2.AcceleratorConfig.Type(config["type"]).name == "V5LITE_POD"
    assert config["topology"] == "2x4"
    assert node["labels"]["multicloud-job"] == "tpu-job"
    assert "startup-script" in node["metadata"]
    states = [provider.status([handle])[handle.id].state for _ in range(4)]
    assert states[0] is WorkloadState.PROVISIONING and states[-1] is WorkloadState.RUNNING
    fake.finish(handle.id, 0)
    assert provider.status([handle])[handle.id].state is WorkloadState.SUCCEEDED
    provider.terminate(handle, request_id="t")
    provider.terminate(handle, request_id="t")
    assert fake.tpu_queued == {} and fake.tpu_nodes == {}


@pytest.mark.parametrize(
    ("fake_offers_queued", "option"),
    [(False, True), (True, False)],
    ids=["api-without-queued-resources", "option-off"],
)
def test_tpu_falls_back_to_nodes(fake: FakeGCP, fake_offers_queued: bool, option: bool) -> None:
    fake.queued_resources = fake_offers_queued
    provider = make(fake, tpu_queued_resources=option)
    handle = launch(provider, offer_of(provider, "tpu-v5p-8"), spec("tpu-node"))
    assert dict(handle.extra)["kind"] == "tpu-node"
    assert len(fake.calls_to("tpu.nodes.create")) == 1
    assert provider.status([handle])[handle.id].state is WorkloadState.RUNNING
    provider.terminate(handle, request_id="t")
    assert provider.status([handle])[handle.id].state is WorkloadState.UNKNOWN


def test_tpu_resend_after_transient_failure_creates_the_queued_resource(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "tpu-v5litepod-8")
    s = spec("tpu-retry")
    fake.fail("tpu.queuedResources.create", in_operation=True, grpc_code=14, message="unavailable")
    with pytest.raises(TransientError):
        launch(provider, offer, s)
    assert fake.tpu_queued == {}
    # The re-send's first requestId only answers the failed operation: it goes out again
    # under a fresh one.
    handle = launch(provider, offer, s)
    assert list(fake.tpu_queued) == [(offer.zone, handle.id)]
    sent = [c.query["requestId"] for c in fake.calls_to("tpu.queuedResources.create")]
    assert len(sent) == 3 and sent[0] == sent[1] != sent[2]
    assert provider.status([handle])[handle.id].state is WorkloadState.PROVISIONING


def test_tpu_spot_preemption(fake: FakeGCP) -> None:
    # us-central1's TPU rows have no spot price; asia-northeast1-b sells spot v6e.
    provider = GCPProvider(regions=["asia-northeast1"], **fake.options)
    tpu = offer_of(provider, "tpu-v6e-8", "asia-northeast1-b")
    handle = launch(provider, tpu, spec("tpu-spot", market=MarketKind.SPOT))
    create = fake.calls_to("tpu.queuedResources.create")[-1]
    assert "spot" in create.body
    for _ in range(3):
        provider.status([handle])
    fake.preempt(handle.id)
    assert provider.status([handle])[handle.id].state is WorkloadState.PREEMPTED


# -- the extended-operation trap -------------------------------------------------------------------


def test_extended_operation_poller_uses_our_endpoint(fake: FakeGCP) -> None:
    from google.cloud import compute_v1

    provider = make(fake)
    offer = offer_of(provider, "g2-standard-4")
    launch(provider, offer, spec())
    body = compute_v1.Instance(
        name="poller-probe", machine_type=f"zones/{ZONE}/machineTypes/g2-standard-4"
    )
    # ``insert`` (not ``insert_unary``) returns an ExtendedOperation whose ``.result()`` polls
    # through the transport's own ZoneOperationsClient: it must be ours, on 127.0.0.1.
    op = provider.clients.instances.insert(project=fake.project, zone=ZONE, instance_resource=body)
    op.result(timeout=10)
    assert fake.calls_to("zoneOperations.get")


def test_example_plans_on_sim_without_credentials(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    # An empty config dir: no gcloud application-default credentials either.
    env.update(CLOUDSDK_CONFIG=str(tmp_path), NO_GCE_CHECK="True")
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "gcp_plan.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "planning on the sim provider" in done.stdout
    assert "Total: $" in done.stdout


@pytest.mark.parametrize(("nodes", "policy"), [(1, False), (3, True)], ids=["single", "gang"])
def test_multi_node_gang_gets_compact_placement(fake: FakeGCP, nodes: int, policy: bool) -> None:
    provider = make(fake)
    handle = launch(provider, offer_of(provider, "a3-highgpu-8g"), spec(nodes=nodes))
    assert bool(fake.policies) is policy
    if policy:
        ((region, name), body) = next(iter(fake.policies.items()))
        assert (region, name) == (REGION, f"{handle.id}-pp")
        placement = body["groupPlacementPolicy"]
        assert placement["collocation"] == "COLLOCATED" and placement["vmCount"] == nodes
        assert all(
            i["resourcePolicies"][0].endswith(f"/resourcePolicies/{name}")
            for i in instances_of(fake, handle)
        )
    provider.terminate(handle, request_id="t")
    # The policy goes with the gang (after its VMs, which use it).
    assert fake.policies == {}


def test_missing_credentials_are_an_auth_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from multicloud.errors import AuthError

    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    provider = GCPProvider(regions=[REGION])  # ADC, the default
    with block_external_network() as refused, pytest.raises(AuthError) as caught:
        provider.check()
    # ADC's only network step is probing the GCE metadata server (refused here).
    assert set(refused) <= {"169.254.169.254"}
    assert caught.value.scope == "gcp"


# -- issue 10: what Google requires and how it ends a node ------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "nic_type"),
    [
        ("a3-highgpu-8g", "GVNIC"),
        ("a3-megagpu-8g", "GVNIC"),
        ("a3-ultragpu-8g", "GVNIC"),
        ("a4-highgpu-8g", "GVNIC"),
        ("a2-highgpu-8g", None),
        ("g2-standard-4", None),
    ],
)
def test_gvnic_only_machine_series_are_inserted_with_a_gvnic(
    fake: FakeGCP, instance_type: str, nic_type: str | None
) -> None:
    provider = make(fake)
    offer = next(o for o in provider.offers(ResourceRequest()) if o.instance_type == instance_type)
    handle = launch(provider, offer, spec())
    (instance,) = instances_of(fake, handle)
    assert instance["networkInterfaces"][0].get("nicType") == nic_type


def test_the_fake_refuses_a_gvnic_only_type_without_a_gvnic_as_compute_does(fake: FakeGCP) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    client = make(fake).clients.instances

    def insert(name: str, machine: str, nic: compute_v1.NetworkInterface) -> None:
        body = compute_v1.Instance(
            name=name, machine_type=f"zones/{ZONE}/machineTypes/{machine}", network_interfaces=[nic]
        )
        client.insert_unary(project=fake.project, zone=ZONE, instance_resource=body)

    with pytest.raises(gexc.BadRequest, match="nicType"):
        insert("no-gvnic", "a3-highgpu-8g", compute_v1.NetworkInterface(network="default"))
    with pytest.raises(gexc.BadRequest, match="MRDMA"):
        insert("rdma-on-a2", "a2-highgpu-8g", compute_v1.NetworkInterface(nic_type="MRDMA"))
    insert("gvnic", "a3-highgpu-8g", compute_v1.NetworkInterface(nic_type="GVNIC"))
    insert("plain-a2", "a2-highgpu-8g", compute_v1.NetworkInterface(network="default"))
    assert sorted(name for _, name in fake.instances) == ["gvnic", "plain-a2"]


def test_boot_image_and_tpu_runtime_per_family_still_overridable(fake: FakeGCP) -> None:
    from multicloud_gcp.workload import DEFAULT_GPU_IMAGE

    def image(provider: GCPProvider, job: str) -> str:
        handle = launch(provider, offer_of(provider, "a3-highgpu-8g"), spec(job))
        (instance,) = instances_of(fake, handle)
        return str(instance["disks"][0]["initializeParams"]["sourceImage"])

    assert "common-cu128-ubuntu-2204-nvidia-570" in DEFAULT_GPU_IMAGE
    assert image(make(fake), "default-image") == DEFAULT_GPU_IMAGE
    assert image(make(fake, image="projects/p/global/images/mine"), "own-image") == (
        "projects/p/global/images/mine"
    )

    def runtime(provider: GCPProvider, slice_: str) -> str:
        tpu = next(o for o in provider.offers(ResourceRequest()) if o.instance_type == slice_)
        launch(provider, tpu, spec(f"job-{slice_}-{provider.regions}"))
        create = fake.calls_to("tpu.queuedResources.create")[-1]
        return str(create.body["tpu"]["nodeSpec"][0]["node"]["runtimeVersion"])

    provider = make(fake)
    assert runtime(provider, "tpu-v5litepod-8") == "v2-alpha-tpuv5-lite"
    assert runtime(provider, "tpu-v5p-8") == "v2-alpha-tpuv5"
    assert runtime(make(fake, tpu_runtime_version="v2-alpha-tpuv5-lite-pinned"),
                   "tpu-v5litepod-4") == "v2-alpha-tpuv5-lite-pinned"
    v6e = GCPProvider(regions=["asia-northeast1"], **fake.options)
    assert runtime(v6e, "tpu-v6e-8") == "v2-alpha-tpuv6e"


@pytest.mark.parametrize(
    ("preemptible", "standard", "market", "goes"),
    [
        # No preemptible quota granted (limit 0): spot VMs fall back to the standard quota.
        ((0, 0), (16, 0), MarketKind.SPOT, True),
        ((0, 0), (16, 16), MarketKind.SPOT, False),
        # Granted: spot VMs use it, and only it.
        ((8, 0), (0, 0), MarketKind.SPOT, True),
        ((8, 8), (16, 0), MarketKind.SPOT, False),
        # On demand never touches the preemptible quota.
        ((64, 0), (0, 0), MarketKind.ON_DEMAND, False),
    ],
    ids=["fallback", "fallback-exhausted", "granted", "granted-exhausted", "on-demand"],
)
@pytest.mark.parametrize("checked_by", ["adapter", "google"])
def test_spot_vms_use_preemptible_quota_only_where_granted(
    fake: FakeGCP,
    preemptible: tuple[int, int],
    standard: tuple[int, int],
    market: MarketKind,
    goes: bool,
    checked_by: str,
) -> None:
    fake.set_quota(REGION, "PREEMPTIBLE_NVIDIA_H100_GPUS", *preemptible)
    fake.set_quota(REGION, "NVIDIA_H100_GPUS", *standard)
    # With the adapter's check off, the insert reaches the fake, which counts like Compute.
    provider = make(fake, quota_check=checked_by == "adapter")
    s = spec(market=market)
    if goes:
        launch(provider, offer_of(provider, "a3-highgpu-8g"), s)
        assert fake.launches["instances.insert"] == 1
        return
    with pytest.raises(QuotaError) as caught:
        launch(provider, offer_of(provider, "a3-highgpu-8g"), s)
    assert caught.value.scope == f"gcp/{REGION}"
    assert fake.launches["instances.insert"] == 0
    sent = len(fake.calls_to("instances.insert"))
    assert sent == (0 if checked_by == "adapter" else 1)


def test_a_reclaimed_gang_reads_preempted_though_its_command_exited_143(fake: FakeGCP) -> None:
    provider = make(fake)
    handle = launch(provider, offer_of(provider, "a3-highgpu-8g"),
                    spec(nodes=2, market=MarketKind.SPOT))
    # The reclaim's shutdown killed the containers; their 143 reached the labels.
    fake.preempt(handle.id)
    fake.finish(handle.id, 143)
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.PREEMPTED and status.exit_code is None


def test_a_reclaimed_tpu_slice_reads_preempted_though_worker_0_reported_143(fake: FakeGCP) -> None:
    provider = GCPProvider(regions=["asia-northeast1"], **fake.options)
    tpu = offer_of(provider, "tpu-v6e-8", "asia-northeast1-b")
    handle = launch(provider, tpu, spec("tpu-spot-143", market=MarketKind.SPOT))
    for _ in range(3):
        provider.status([handle])
    fake.preempt(handle.id)
    fake.finish(handle.id, 143)
    assert provider.status([handle])[handle.id].state is WorkloadState.PREEMPTED


def test_the_shared_fake_vocabulary(fake: FakeGCP) -> None:
    provider = make(fake)
    offer = offer_of(provider, "a3-highgpu-8g")
    fake.fail_next("instances.insert", "ZONE_RESOURCE_POOL_EXHAUSTED")
    with pytest.raises(CapacityError) as caught:
        launch(provider, offer, spec("stockout"))
    assert caught.value.scope == f"gcp/{REGION}/{ZONE}"
    handle = launch(provider, offer, spec("ok"))
    launch(provider, offer, spec("ok"))  # the same request id: nothing new
    assert fake.launches["instances.insert"] == 1
    fake.finish(handle.id, 3)
    got = provider.status([handle])[handle.id]
    assert (got.state, got.exit_code) == (WorkloadState.FAILED, 3)
