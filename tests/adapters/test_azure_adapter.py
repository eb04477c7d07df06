"""Behaviour of the Azure adapter against the fake Resource Manager on 127.0.0.1.

Every test drives the real ``azure-mgmt-compute`` client (serialisation, paging, LRO polling)
through the adapter; the fake records each request so the tests can count PUTs and listings.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_azure import AzureProvider
from multicloud_azure.testing import FakeArm, family_of, serve, vcpus_of
from multicloud_azure.workload import config_of

from multicloud import providers
from multicloud.catalog import load_catalog
from multicloud.errors import CapacityError, InvalidRequestError, QuotaError, SpecError
from multicloud.models import Fleet, ProviderConfig
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

# Sizes with known catalog rows in eastus: an H100 gang size without a spot price, and an
# A100 size with one.
H100 = "Standard_ND96isr_H100_v5"
A100 = "Standard_NC24ads_A100_v4"


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


# -- builders ---------------------------------------------------------------------------------


def make_provider(fake: FakeArm, **overrides: Any) -> AzureProvider:
    options: dict[str, Any] = {"regions": ["eastus"], **fake.options, **overrides}
    return AzureProvider(**options)


def find_offer(
    provider: AzureProvider, size: str, region: str = "eastus", zone: str | None = None
) -> Offer:
    for offer in provider.offers(ResourceRequest(regions=(region,))):
        if offer.instance_type == size and offer.zone == zone:
            return offer
    raise AssertionError(f"no offer {size} in {zone or region}")


def make_spec(job: str = "job-1", **overrides: Any) -> LaunchSpec:
    fields: dict[str, Any] = {
        "job_id": job,
        "job_name": "train",
        "attempt": 1,
        "nodes": 1,
        "market": MarketKind.ON_DEMAND,
        "install_id": "install-a",
        "image": "ghcr.io/acme/train:1",
        "command": "python train.py",
    }
    fields.update(overrides)
    return LaunchSpec(**fields)


def launch(provider: AzureProvider, offer: Offer, spec: LaunchSpec) -> Handle:
    return provider.launch(
        offer, spec, request_id=request_id(spec.job_id, spec.attempt, offer.region)
    )


# -- launch -----------------------------------------------------------------------------------


def test_relaunch_finds_the_same_vms_without_a_second_put(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, H100)
    spec = make_spec(nodes=2)
    first = launch(provider, offer, spec)
    # A restarted scheduler re-sends with a fresh adapter: nothing is remembered in-process.
    second = launch(make_provider(fake), offer, spec)
    assert second == first
    assert fake.count("PUT", "vm_put") == 2
    assert fake.vm_names() == [f"{first.id}-0", f"{first.id}-1"]


def test_reused_request_id_for_another_spec_is_refused(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, A100)
    key = request_id("job-1", 1, offer.region)
    provider.launch(offer, make_spec(), request_id=key)
    with pytest.raises(InvalidRequestError, match="already used"):
        provider.launch(offer, make_spec(command="other"), request_id=key)
    assert fake.count("PUT", "vm_put") == 1


def test_vms_carry_ownership_tags(fake: FakeArm) -> None:
    handle = launch(make_provider(fake), find_offer(make_provider(fake), A100), make_spec())
    tags = fake.vm(f"{handle.id}-0")["tags"]
    assert tags["multicloud:job"] == "job-1"
    assert tags["multicloud:attempt"] == "1"
    assert tags["multicloud:install"] == "install-a"
    assert tags["multicloud:request"] == handle.request_id
    assert tags["multicloud:fleet"] == "azure"


def test_custom_data_carries_the_workload_and_secret_names_only(fake: FakeArm) -> None:
    provider = make_provider(fake, key_vault="kv-acme")
    spec = make_spec(env={"EPOCHS": "3"}, secrets=("HF_TOKEN",), checkpoint="s3://ck")
    handle = launch(provider, find_offer(provider, A100), spec)
    body = fake.vm_body(f"{handle.id}-0")
    text = base64.b64decode(body["properties"]["osProfile"]["customData"]).decode()
    compile(text, "custom-data", "exec")  # the VM runs it with python3
    config = config_of(text)
    assert config["image"] == "ghcr.io/acme/train:1"
    assert config["command"] == "python train.py"
    assert config["secrets"] == ["HF_TOKEN"]
    assert config["key_vault"] == "kv-acme"
    env = config["env"]
    assert isinstance(env, dict)
    assert env["EPOCHS"] == "3"
    assert env["MULTICLOUD_CHECKPOINT"] == "s3://ck"
    assert "HF_TOKEN" not in env  # resolved on the host from Key Vault, never sent


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"secrets": ("HF_TOKEN",)}, "key_vault"),
        ({"image": None}, "no container image"),
        ({"env": {"BAD-NAME": "x"}}, "not valid environment variable names"),
        ({"command": "x" * 70_000}, "over Azure's"),
    ],
)
def test_unrunnable_gang_is_refused_before_anything_is_created(
    fake: FakeArm, overrides: dict[str, Any], match: str
) -> None:
    provider = make_provider(fake)
    with pytest.raises(InvalidRequestError, match=match):
        launch(provider, find_offer(provider, H100), make_spec(nodes=2, **overrides))
    assert fake.count("PUT", "vm_put") == fake.count("PUT", "ppg_put") == 0


@pytest.mark.parametrize(
    ("market", "priority", "eviction"),
    [(MarketKind.SPOT, "Spot", "Delete"), (MarketKind.ON_DEMAND, "Regular", None)],
)
def test_market_sets_priority_and_eviction_policy(
    fake: FakeArm, market: MarketKind, priority: str, eviction: str | None
) -> None:
    provider = make_provider(fake)
    handle = launch(provider, find_offer(provider, A100), make_spec(market=market))
    props = fake.vm_body(f"{handle.id}-0")["properties"]
    assert props["priority"] == priority
    assert props.get("evictionPolicy") == eviction
    assert handle.market is market


def test_spot_on_a_size_without_spot_market_is_invalid(fake: FakeArm) -> None:
    provider = make_provider(fake)
    with pytest.raises(InvalidRequestError, match="no spot market"):
        launch(provider, find_offer(provider, H100), make_spec(market=MarketKind.SPOT))


@pytest.mark.parametrize("zone", [None, "eastus-2"])
def test_gang_shares_one_proximity_placement_group(fake: FakeArm, zone: str | None) -> None:
    provider = make_provider(fake, zonal=zone is not None)
    handle = launch(provider, find_offer(provider, H100, zone=zone), make_spec(nodes=3))
    assert fake.placement_groups() == [f"{handle.id}-ppg"]
    bodies = [fake.vm_body(f"{handle.id}-{rank}") for rank in range(3)]
    groups = {b["properties"]["proximityPlacementGroup"]["id"] for b in bodies}
    assert len(groups) == 1 and groups.pop().endswith(f"/{handle.id}-ppg")
    assert {b["location"] for b in bodies} == {"eastus"}
    assert {tuple(b.get("zones") or ()) for b in bodies} == {("2",) if zone else ()}


def test_gang_in_an_availability_set_for_infiniband(fake: FakeArm) -> None:
    provider = make_provider(fake, availability_set=True)
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    assert fake.availability_sets() == [f"{handle.id}-avset"]
    for rank in range(2):
        props = fake.vm_body(f"{handle.id}-{rank}")["properties"]
        assert props["availabilitySet"]["id"].endswith(f"/{handle.id}-avset")
    provider.terminate(handle, request_id="t")
    assert fake.availability_sets() == [] and fake.placement_groups() == []


def test_single_node_needs_no_placement_group(fake: FakeArm) -> None:
    provider = make_provider(fake)
    launch(provider, find_offer(provider, A100), make_spec())
    assert fake.placement_groups() == []
    assert fake.count("PUT", "ppg_put") == 0


def test_failed_gang_is_cleaned_up_before_the_error(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, H100)
    fake.inject("vm_put", code="AllocationFailed", in_operation=True)
    with pytest.raises(CapacityError) as info:
        launch(provider, offer, make_spec(nodes=2))
    assert info.value.scope == "azure/eastus"
    assert fake.vm_names() == []


@pytest.mark.parametrize("availability_set", [False, True])
def test_failed_gang_leaves_no_placement_group_or_availability_set(
    fake: FakeArm, availability_set: bool
) -> None:
    # The sweep lists VMs only: a group left by a failed launch would never be found again.
    provider = make_provider(fake, availability_set=availability_set)
    fake.inject("vm_put", code="AllocationFailed", in_operation=True, times=2)
    with pytest.raises(CapacityError):
        launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    assert fake.vm_names() == []
    assert fake.placement_groups() == [] and fake.availability_sets() == []


def test_failed_availability_set_takes_its_placement_group_along(fake: FakeArm) -> None:
    provider = make_provider(fake, availability_set=True)
    fake.inject("avset_put", status=400, code="InvalidParameter")
    with pytest.raises(InvalidRequestError):
        launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    assert fake.count("PUT", "ppg_put") == 1
    assert fake.placement_groups() == [] and fake.vm_names() == []


def test_terminate_retries_groups_still_in_use(fake: FakeArm) -> None:
    # terminate_wait_s=0: the VMs are still deleting when the set and group are asked to go,
    # and ARM answers 409 "in use" until they are gone.
    fake.lro_polls = 5
    provider = make_provider(fake, availability_set=True, terminate_wait_s=0)
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    provider.terminate(handle, request_id="t")
    assert fake.vm_names() == []
    assert fake.availability_sets() == [] and fake.placement_groups() == []
    assert fake.count("DELETE", "avset_delete") > 1


def test_terminate_logs_groups_that_stay_in_use(
    fake: FakeArm, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(fake, availability_set=True)
    provider._in_use_retry_s = 0.5
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    busy = fake.inject("avset_delete", status=409, code="OperationNotAllowed", times=1000)
    provider.terminate(handle, request_id="t")  # does not raise
    assert fake.vm_names() == []
    assert fake.availability_sets() == [f"{handle.id}-avset"]
    assert fake.placement_groups() == [f"{handle.id}-ppg"]  # the set still refers to it
    assert f"{handle.id}-avset" in caplog.text and "left behind" in caplog.text
    # A later terminate of the same handle finishes the job.
    busy.times = 0
    provider.terminate(handle, request_id="t")
    assert fake.availability_sets() == [] and fake.placement_groups() == []


def test_launch_without_subnet_is_invalid(fake: FakeArm) -> None:
    provider = make_provider(fake, subnet_id=None)
    with pytest.raises(InvalidRequestError, match="subnet_id"):
        launch(provider, find_offer(provider, A100), make_spec())


# -- offers -----------------------------------------------------------------------------------


def offer_keys(provider: AzureProvider, size: str) -> set[str | None]:
    return {
        o.zone or o.region
        for o in provider.offers(ResourceRequest(regions=("eastus",)))
        if o.instance_type == size
    }


@pytest.mark.parametrize(
    ("zonal", "narrow", "expected"),
    [
        (False, lambda f: None, {"eastus"}),
        (False, lambda f: f.restrict("eastus", H100), set()),
        (False, lambda f: f.restrict("eastus", H100, reason="QuotaId"), set()),
        (False, lambda f: f.remove_sku("eastus", H100), set()),
        # A zone restriction leaves a regional offer (Azure picks an allowed zone).
        (False, lambda f: f.restrict("eastus", H100, kind="Zone", zones=["1"]), {"eastus"}),
        (True, lambda f: None, {"eastus-1", "eastus-2", "eastus-3"}),
        (
            True,
            lambda f: f.restrict("eastus", H100, kind="Zone", zones=["1"]),
            {"eastus-2", "eastus-3"},
        ),
        (True, lambda f: f.restrict("eastus", H100), set()),
    ],
)
def test_resource_sku_restrictions_narrow_offers(
    fake: FakeArm, zonal: bool, narrow: Any, expected: set[str]
) -> None:
    narrow(fake)
    assert offer_keys(make_provider(fake, zonal=zonal), H100) == expected


def test_offers_are_catalog_priced_and_cached(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offers = provider.offers(ResourceRequest())
    catalog = load_catalog()
    prices = {(r.region, r.instance_type): r.price for r in catalog.rows if r.provider == "azure"}
    assert offers and all(o.price == prices[(o.region, o.instance_type)] for o in offers)
    assert all(o.catalog_version == catalog.version for o in offers)
    provider.offers(ResourceRequest(accelerators=("H100",)))
    assert fake.count("GET", "skus") == 1  # one region, one listing, reused


def test_a_failing_region_does_not_hide_the_others(fake: FakeArm) -> None:
    fake.inject("skus", status=500, code="InternalServerError")
    provider = make_provider(fake, regions=["eastus", "eastus2"])
    assert {o.region for o in provider.offers(ResourceRequest())} == {"eastus2"}


def test_live_retail_prices_are_fetched_once_and_versioned(fake: FakeArm) -> None:
    fake.set_price("eastus", A100, 3.5, spot_price=0.42)
    fake.set_price("eastus", H100, 90.0)
    provider = make_provider(fake, live_pricing=True)
    first = find_offer(provider, A100)
    assert (first.price, first.spot_price) == (3.5, 0.42)
    assert find_offer(provider, H100).price == 90.0
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert first.catalog_version == f"{load_catalog().version}+azure-live-{today}"
    pages = fake.count("GET", "prices")
    assert pages > 1  # 7 meters over pages of 3: NextPageLink was followed
    provider.offers(ResourceRequest())
    assert fake.count("GET", "prices") == pages


def test_zero_retail_prices_fall_back_to_the_catalog(fake: FakeArm) -> None:
    # A $0 meter (promotion, placeholder) is no price: an offer at 0 would win every plan.
    fake.set_price("eastus", H100, 0.0, spot_price=0.0)
    fake.set_price("eastus", A100, 3.5, spot_price=-1.0)
    catalog = {
        r.instance_type: r
        for r in load_catalog().rows
        if (r.provider, r.region) == ("azure", "eastus")
    }
    provider = make_provider(fake, live_pricing=True)
    h100, a100 = find_offer(provider, H100), find_offer(provider, A100)
    assert (h100.price, h100.spot_price) == (catalog[H100].price, catalog[H100].spot_price)
    assert (a100.price, a100.spot_price) == (3.5, catalog[A100].spot_price)
    assert h100.price and a100.spot_price  # the catalog has real prices for both


def test_unreachable_retail_prices_fall_back_to_the_catalog(fake: FakeArm) -> None:
    provider = make_provider(fake, live_pricing=True, retail_prices_url="http://127.0.0.1:9/x")
    offer = find_offer(provider, A100)
    row = next(
        r
        for r in load_catalog().rows
        if (r.provider, r.region, r.instance_type) == ("azure", "eastus", A100)
    )
    assert (offer.price, offer.catalog_version) == (row.price, load_catalog().version)


# -- quota --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "usage"),
    [
        (MarketKind.ON_DEMAND, family_of(A100)),
        (MarketKind.ON_DEMAND, "cores"),
        (MarketKind.SPOT, "lowPriorityCores"),
    ],
)
def test_short_quota_skips_the_region_without_a_put(
    fake: FakeArm, market: MarketKind, usage: str
) -> None:
    fake.set_quota("eastus", usage, limit=vcpus_of(A100) * 2, current=vcpus_of(A100) * 2)
    provider = make_provider(fake)
    with pytest.raises(QuotaError) as info:
        launch(provider, find_offer(provider, A100), make_spec(market=market))
    assert info.value.scope == "azure/eastus"
    assert usage in str(info.value)
    assert fake.count("PUT", "vm_put") == 0


def test_quota_is_read_once_for_a_burst_of_launches(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, A100)
    for i in range(3):
        launch(provider, offer, make_spec(job=f"job-{i}"))
    assert fake.count("GET", "usages") == 1
    assert fake.usage("eastus", family_of(A100))[0] == 3 * vcpus_of(A100)


def test_quota_check_can_be_turned_off(fake: FakeArm) -> None:
    fake.set_quota("eastus", family_of(A100), limit=0)
    provider = make_provider(fake, quota_check=False)
    launch(provider, find_offer(provider, A100), make_spec())
    assert fake.count("GET", "usages") == 0


# -- status -------------------------------------------------------------------------------------


def test_status_is_one_listing_per_resource_group(fake: FakeArm) -> None:
    provider = make_provider(fake, regions=["eastus", "eastus2"], resource_group="rg-{region}")
    handles = [
        launch(provider, find_offer(provider, A100), make_spec(job=f"e-{i}")) for i in range(3)
    ]
    handles.append(
        launch(provider, find_offer(provider, A100, region="eastus2"), make_spec(job="w"))
    )
    fake.clear_log()
    statuses = provider.status(handles)
    assert set(statuses) == {h.id for h in handles}
    assert all(s.state is WorkloadState.RUNNING for s in statuses.values())
    assert fake.count("GET", "vm_list") == 2
    assert {r.path.split("/")[4] for r in fake.requests} == {"rg-eastus", "rg-eastus2"}
    assert all(r.query.get("$expand") == "instanceView" for r in fake.requests)


@pytest.mark.parametrize(
    ("act", "state", "exit_code"),
    [
        (lambda f, gang: f.finish(f"{gang}-0", 0), WorkloadState.SUCCEEDED, 0),
        (lambda f, gang: f.finish(f"{gang}-0", 3), WorkloadState.FAILED, 3),
        # Only node 0 reports the workload's end; a worker's exit alone changes nothing.
        (lambda f, gang: f.finish(f"{gang}-1", 0), WorkloadState.RUNNING, None),
        (lambda f, gang: f.finish(f"{gang}-1", 2), WorkloadState.FAILED, 2),
        (lambda f, gang: f.evict(f"{gang}-1"), WorkloadState.PREEMPTED, None),
        (lambda f, gang: f.evict(f"{gang}-0"), WorkloadState.PREEMPTED, None),
    ],
)
def test_gang_status_follows_its_vms(
    fake: FakeArm, act: Any, state: WorkloadState, exit_code: int | None
) -> None:
    provider = make_provider(fake)
    handle = launch(
        provider, find_offer(provider, A100), make_spec(nodes=2, market=MarketKind.SPOT)
    )
    act(fake, handle.id)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, exit_code), status.message


def test_spot_eviction_is_preempted_even_after_a_restart(fake: FakeArm) -> None:
    provider = make_provider(fake)
    handle = launch(provider, find_offer(provider, A100), make_spec(market=MarketKind.SPOT))
    fake.evict(f"{handle.id}-0")
    assert fake.evicted == [f"{handle.id}-0"]
    assert make_provider(fake).status([handle])[handle.id].state is WorkloadState.PREEMPTED


def test_vm_failed_after_launch_reports_failed(fake: FakeArm) -> None:
    # launch stops waiting at launch_wait_s; a failure after that shows in status instead.
    provider = make_provider(fake, launch_wait_s=0)
    fake.inject("vm_put", code="OSProvisioningTimedOut", message="agent", in_operation=True)
    handle = launch(provider, find_offer(provider, A100), make_spec())
    fake.complete_operations()
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.FAILED
    assert "OSProvisioningTimedOut" in status.message


@pytest.mark.parametrize(
    ("code", "message", "zone", "scope"),
    [
        ("AllocationFailed", "no room", None, "azure/eastus"),
        ("ZonalAllocationFailed", "no room", "eastus-2", "azure/eastus/eastus-2"),
        ("OverconstrainedAllocationRequest", "no room", "eastus-2", "azure/eastus/eastus-2"),
        ("QuotaExceeded", "cores", "eastus-2", "azure/eastus"),
        ("OperationNotAllowed", "exceeding approved quota", None, "azure/eastus"),
    ],
)
def test_capacity_lost_after_launch_is_preempted_with_a_blocked_scope(
    fake: FakeArm, code: str, message: str, zone: str | None, scope: str
) -> None:
    # Past launch_wait_s the handle is out; a later allocation (or quota) failure is lost
    # capacity, to be re-placed elsewhere, not the job's failure.
    provider = make_provider(fake, launch_wait_s=0, zonal=zone is not None)
    fake.inject("vm_put", code=code, message=message, in_operation=True)
    handle = launch(provider, find_offer(provider, H100, zone=zone), make_spec(nodes=2))
    fake.complete_operations()
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.PREEMPTED, status.message
    assert status.blocked_scope == scope
    assert code in status.message


def test_unrelated_operation_not_allowed_after_launch_stays_failed(fake: FakeArm) -> None:
    provider = make_provider(fake, launch_wait_s=0)
    fake.inject("vm_put", code="OperationNotAllowed", message="disk busy", in_operation=True)
    handle = launch(provider, find_offer(provider, A100), make_spec())
    fake.complete_operations()
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.FAILED and status.blocked_scope is None


# -- terminate and sweep ------------------------------------------------------------------------


def test_terminate_is_idempotent_and_removes_the_gang(fake: FakeArm) -> None:
    provider = make_provider(fake)
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    provider.terminate(handle, request_id="t-1")
    assert fake.vm_names() == [] and fake.placement_groups() == []
    provider.terminate(handle, request_id="t-1")
    assert provider.status([handle])[handle.id].state is WorkloadState.TERMINATED
    # Another process never saw the terminate: a vanished on-demand gang is just gone.
    assert make_provider(fake).status([handle])[handle.id].state is WorkloadState.UNKNOWN


def test_owned_lists_this_install_and_fleet_only(fake: FakeArm) -> None:
    provider = make_provider(fake)
    assert isinstance(make_provider(fake), SupportsSweep)
    offer = find_offer(provider, A100)
    mine = launch(provider, offer, make_spec(job="mine", nodes=2, attempt=4))
    launch(provider, offer, make_spec(job="theirs", install_id="install-b"))
    other_fleet = make_provider(fake, fleet_name="azure-b")
    launch(other_fleet, dataclasses.replace(offer, provider="azure-b"), make_spec(job="b"))
    owned = provider.owned("install-a")
    assert [(w.job_id, w.attempt) for w in owned] == [("mine", 4)]
    assert owned[0].handle == mine
    # The sweep's handle terminates what launch made.
    provider.terminate(owned[0].handle, request_id="sweep")
    assert provider.owned("install-a") == []


# -- wiring -------------------------------------------------------------------------------------


def test_registered_and_built_from_a_fleet_entry(fake: FakeArm) -> None:
    assert providers.available()["azure"] == "multicloud_azure:AzureProvider"
    fleet = Fleet(
        providers={"az": ProviderConfig(adapter="azure", regions=("eastus",), options=fake.options)}
    )
    built = providers.from_fleet(fleet, "az")
    assert isinstance(built, AzureProvider)
    assert {o.provider for o in built.offers(ResourceRequest())} == {"az"}


def test_a_misspelt_option_is_a_spec_error() -> None:
    fleet = Fleet(providers={"az": ProviderConfig(adapter="azure", options={"subnetid": "x"})})
    with pytest.raises(SpecError, match="did you mean 'subnet_id'"):
        providers.from_fleet(fleet, "az")


def test_static_credential_is_refused_for_real_endpoints() -> None:
    with pytest.raises(ValueError, match="loopback"):
        AzureProvider(credential="static", subscription_id="s")
    with pytest.raises(ValueError, match="loopback"):
        AzureProvider(credential="static", subscription_id="s", base_url="http://10.0.0.1:80")


def test_options_are_plain_json(fake: FakeArm) -> None:
    # Another process (the four-cloud integration test's scheduler) gets them as text.
    assert json.loads(json.dumps(fake.options)) == fake.options


def test_fake_controls_work_from_another_process() -> None:
    # A scheduler under test only has fake.options: VMs end by themselves, or over HTTP.
    import urllib.request

    with serve(auto_finish_s=0.0) as arm:
        provider = make_provider(arm)
        done = launch(provider, find_offer(provider, A100), make_spec(job="auto"))
        assert provider.status([done])[done.id].state is WorkloadState.SUCCEEDED
    with serve() as arm:
        provider = make_provider(arm)
        spot = launch(provider, find_offer(provider, A100), make_spec(market=MarketKind.SPOT))
        url = f"{arm.base_url}/_fake/evict/{spot.id}-0"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
            pass
        assert provider.status([spot])[spot.id].state is WorkloadState.PREEMPTED


@pytest.mark.parametrize(
    ("base_url", "replaced"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("https://127.0.0.1:8080", False),
        ("http://10.1.2.3:8080", False),
        ("http://management.azure.com", False),
        (None, False),
    ],
)
def test_token_goes_without_tls_only_to_loopback(base_url: str | None, replaced: bool) -> None:
    from azure.identity import DefaultAzureCredential
    from multicloud_azure.provider import _LoopbackBearerPolicy

    provider = AzureProvider(
        subscription_id="s", base_url=base_url, credential=DefaultAzureCredential()
    )
    policy = provider.compute._config.authentication_policy
    assert isinstance(policy, _LoopbackBearerPolicy) is replaced
