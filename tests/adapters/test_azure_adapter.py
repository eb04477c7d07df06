"""Behaviour of the Azure adapter against the fake Resource Manager on 127.0.0.1.

Every test drives the real ``azure-mgmt-compute`` client (serialisation, paging, LRO polling)
through the adapter; the fake records each request so the tests can count PUTs and listings.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import VirtualMachine
from multicloud_azure import AzureProvider
from multicloud_azure.arm import Vm
from multicloud_azure.errors import boundary
from multicloud_azure.node import has_infiniband
from multicloud_azure.status import gang_status
from multicloud_azure.testing import FakeArm, family_of, serve, vcpus_of

from multicloud import providers
from multicloud.adapterkit import AZURE_TAGS, PREEMPTED, Ownership
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

H100 = "Standard_ND96isr_H100_v5"  # gang size, no spot price in the catalog
A100 = "Standard_NC24ads_A100_v4"  # sold as Spot too
PUT = ("PUT", "virtualMachines.createOrUpdate")


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


# -- builders ---------------------------------------------------------------------------------


def make_provider(fake: FakeArm, **overrides: Any) -> AzureProvider:
    return AzureProvider(**{"regions": ["eastus"], **fake.options, **overrides})


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
    return LaunchSpec(**{**fields, **overrides})


def launch(provider: AzureProvider, offer: Offer, spec: LaunchSpec) -> Handle:
    return provider.launch(
        offer, spec, request_id=request_id(spec.job_id, spec.attempt, offer.region)
    )


# -- launch -----------------------------------------------------------------------------------


def test_relaunch_finds_the_same_vms_and_puts_only_a_missing_one(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer, spec = find_offer(provider, H100), make_spec(nodes=2)
    first = launch(provider, offer, spec)
    # A restarted scheduler re-sends with a fresh adapter: nothing is remembered in-process.
    assert launch(make_provider(fake), offer, spec) == first
    assert fake.count(*PUT) == 2
    fake._vms.pop((fake.resource_group.lower(), f"{first.id}-1"))  # one node never made it
    assert launch(make_provider(fake), offer, spec) == first
    assert fake.count(*PUT) == 3
    assert fake.vm_names() == [f"{first.id}-0", f"{first.id}-1"]


def test_the_fake_keeps_deterministic_name_puts_idempotent(fake: FakeArm) -> None:
    # ARM: a PUT to an existing name updates that VM; customData cannot change on it.
    provider = make_provider(fake)
    handle = launch(provider, find_offer(provider, A100), make_spec())
    name = f"{handle.id}-0"
    body = fake.vm_body(name)
    compute = provider.compute.virtual_machines
    compute.begin_create_or_update(fake.resource_group, name, VirtualMachine(body)).result()
    assert fake.launches[name] == 1 and fake.vm_names() == [name]
    body["properties"]["osProfile"]["customData"] = base64.b64encode(b"echo other").decode()
    with pytest.raises(HttpResponseError) as info:
        compute.begin_create_or_update(fake.resource_group, name, VirtualMachine(body))
    assert info.value.status_code == 409 and "PropertyChangeNotAllowed" in str(info.value)


def test_reused_request_id_for_another_spec_is_refused(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, A100)
    key = request_id("job-1", 1, offer.region)
    provider.launch(offer, make_spec(), request_id=key)
    with pytest.raises(InvalidRequestError, match="already used"):
        provider.launch(offer, make_spec(command="other"), request_id=key)
    assert fake.count(*PUT) == 1


def test_vms_carry_the_kits_ownership_tags(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer, spec = find_offer(provider, A100), make_spec()
    handle = launch(provider, offer, spec)
    tags = fake.vm(f"{handle.id}-0")["tags"]
    assert Ownership.parse(tags, AZURE_TAGS) == Ownership.of(spec, offer, handle.request_id)
    assert tags["multicloud:job"] == "job-1" and tags["multicloud:install"] == "install-a"


@pytest.mark.parametrize(
    ("overrides", "options", "match"),
    [
        ({"secrets": ("HF_TOKEN",)}, {}, "key_vault"),
        ({"secrets": ("prod/hf-token",)}, {"key_vault": "kv-acme"}, "Key Vault secret names"),
        ({"env": {"BAD-NAME": "x"}}, {}, "not a shell name"),
        ({"env": {"KEY": "a\nb"}}, {}, "spans lines"),
        ({"command": "x" * 70_000}, {}, "over Azure's 65535"),
        ({"image": None, "command": None}, {}, "neither an image nor a command"),
    ],
)
def test_unrunnable_gang_is_refused_before_anything_is_created(
    fake: FakeArm, overrides: dict[str, Any], options: dict[str, Any], match: str
) -> None:
    provider = make_provider(fake, **options)
    with pytest.raises(InvalidRequestError, match=match):
        launch(provider, find_offer(provider, H100), make_spec(nodes=2, **overrides))
    assert fake.count(*PUT) == fake.count("PUT", "proximityPlacementGroups.createOrUpdate") == 0


def test_a_foreign_zone_is_refused(fake: FakeArm) -> None:
    provider = make_provider(fake, zonal=True)
    offer = dataclasses.replace(find_offer(provider, A100, zone="eastus-1"), zone="westus-1")
    with pytest.raises(InvalidRequestError, match="not a zone of eastus"):
        launch(provider, offer, make_spec())


@pytest.mark.parametrize(
    ("market", "priority", "eviction"),
    [(MarketKind.SPOT, "Spot", "Delete"), (MarketKind.ON_DEMAND, "Regular", None)],
)
def test_market_sets_priority_and_eviction_policy(
    fake: FakeArm, market: MarketKind, priority: str, eviction: str | None
) -> None:
    provider = make_provider(fake)
    handle = launch(provider, find_offer(provider, A100), make_spec(market=market))
    body = fake.vm_body(f"{handle.id}-0")
    assert body["properties"]["priority"] == priority
    assert body["properties"].get("evictionPolicy") == eviction
    assert list(body["identity"]["userAssignedIdentities"]) == [fake.identity_id]


@pytest.mark.parametrize("zone", [None, "eastus-2"])
def test_gang_shares_one_proximity_placement_group(fake: FakeArm, zone: str | None) -> None:
    provider = make_provider(fake, zonal=zone is not None)
    handle = launch(provider, find_offer(provider, H100, zone=zone), make_spec(nodes=3))
    assert fake.placement_groups() == [f"{handle.id}-ppg"]
    bodies = [fake.vm_body(f"{handle.id}-{rank}") for rank in range(3)]
    groups = {b["properties"]["proximityPlacementGroup"]["id"] for b in bodies}
    assert len(groups) == 1 and groups.pop().endswith(f"/{handle.id}-ppg")
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


@pytest.mark.parametrize("availability_set", [False, True])
def test_a_failed_gang_leaves_nothing_behind(fake: FakeArm, availability_set: bool) -> None:
    # The sweep lists VMs only: a group left by a failed launch would never be found again.
    provider = make_provider(fake, availability_set=availability_set)
    fake.fail_next("virtualMachines.createOrUpdate", "AllocationFailed", times=2)
    with pytest.raises(CapacityError) as info:
        launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    assert info.value.scope == "azure/eastus"
    assert fake.vm_names() == [] and fake.placement_groups() == []
    assert fake.availability_sets() == []


def test_failed_availability_set_takes_its_placement_group_along(fake: FakeArm) -> None:
    provider = make_provider(fake, availability_set=True)
    fake.fail_next("availabilitySets.createOrUpdate", "InvalidParameter")
    with pytest.raises(InvalidRequestError):
        launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    assert fake.placement_groups() == [] and fake.vm_names() == []


def test_terminate_retries_groups_still_in_use(fake: FakeArm) -> None:
    # terminate_wait_s=0: the VMs are still deleting when the set and group are asked to go,
    # and ARM answers 409 "in use" until they are gone.
    fake.lro_polls = 5
    provider = make_provider(fake, availability_set=True, terminate_wait_s=0)
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    provider.terminate(handle, request_id="t")
    assert fake.vm_names() == [] and fake.availability_sets() == [] == fake.placement_groups()
    assert fake.count("DELETE", "availabilitySets.delete") > 1


def test_terminate_logs_groups_that_stay_in_use(
    fake: FakeArm, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(fake, availability_set=True)
    provider._gangs.in_use_retry_s = 0.5
    handle = launch(provider, find_offer(provider, H100), make_spec(nodes=2))
    fake.fail_next("availabilitySets.delete", "OperationNotAllowed", times=1000)
    provider.terminate(handle, request_id="t")  # does not raise
    assert fake.availability_sets() == [f"{handle.id}-avset"]
    assert fake.placement_groups() == [f"{handle.id}-ppg"]  # the set still refers to it
    assert f"{handle.id}-avset" in caplog.text and "left behind" in caplog.text
    fake.faults.clear()  # a later terminate of the same handle finishes the job
    provider.terminate(handle, request_id="t")
    assert fake.availability_sets() == [] and fake.placement_groups() == []


# -- offers -----------------------------------------------------------------------------------


def restricted(**kw: Any) -> Callable[[FakeArm], None]:
    return lambda f: f.restrict("eastus", H100, **kw)


@pytest.mark.parametrize(
    ("zonal", "narrow", "expected"),
    [
        (False, lambda f: None, {"eastus"}),
        (False, restricted(), set()),
        (False, restricted(reason="QuotaId"), set()),
        (False, lambda f: f.remove_sku("eastus", H100), set()),
        # A zone restriction leaves a regional offer (Azure picks an allowed zone).
        (False, restricted(kind="Zone", zones=["1"]), {"eastus"}),
        (True, lambda f: None, {"eastus-1", "eastus-2", "eastus-3"}),
        (True, restricted(kind="Zone", zones=["1"]), {"eastus-2", "eastus-3"}),
        (True, restricted(), set()),
    ],
)
def test_resource_sku_restrictions_narrow_offers(
    fake: FakeArm, zonal: bool, narrow: Callable[[FakeArm], None], expected: set[str]
) -> None:
    narrow(fake)
    offers = make_provider(fake, zonal=zonal).offers(ResourceRequest(regions=("eastus",)))
    assert {o.zone or o.region for o in offers if o.instance_type == H100} == expected


def test_offers_are_catalog_priced_and_cached(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offers = provider.offers(ResourceRequest())
    catalog = load_catalog()
    prices = {(r.region, r.instance_type): r.price for r in catalog.rows if r.provider == "azure"}
    assert offers and all(o.price == prices[(o.region, o.instance_type)] for o in offers)
    assert all(o.catalog_version == catalog.version for o in offers)
    provider.offers(ResourceRequest(accelerators=("H100",)))
    assert fake.count("GET", "resourceSkus.list") == 1  # one region, one listing, reused


def test_a_failing_region_does_not_hide_the_others(fake: FakeArm) -> None:
    fake.fail_next("resourceSkus.list", "InternalServerError")
    provider = make_provider(fake, regions=["eastus", "eastus2"])
    assert {o.region for o in provider.offers(ResourceRequest())} == {"eastus2"}


def catalog_row(size: str) -> Any:
    return next(
        r
        for r in load_catalog().rows
        if (r.provider, r.region, r.instance_type) == ("azure", "eastus", size)
    )


def test_live_retail_prices_are_fetched_once_and_versioned(fake: FakeArm) -> None:
    fake.set_price("eastus", A100, 3.5, spot_price=0.42)
    fake.set_price("eastus", H100, 90.0)
    fake.set_price("eastus", "Standard_NC48ads_A100_v4", 0.0, spot_price=-1.0)  # no price
    provider = make_provider(fake, live_pricing=True)
    first = find_offer(provider, A100)
    assert (first.price, first.spot_price) == (3.5, 0.42)
    assert find_offer(provider, H100).price == 90.0
    # A $0 meter (a promotion, a placeholder) is no price: the catalog's stays.
    zero = find_offer(provider, "Standard_NC48ads_A100_v4")
    row = catalog_row("Standard_NC48ads_A100_v4")
    assert (zero.price, zero.spot_price) == (row.price, row.spot_price)
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert first.catalog_version == f"{load_catalog().version}+azure-live-{today}"
    pages = fake.count("GET", "retailPrices.list")
    assert pages > 1  # meters over pages of 3: NextPageLink was followed
    provider.offers(ResourceRequest())
    assert fake.count("GET", "retailPrices.list") == pages


def test_unreachable_retail_prices_fall_back_to_the_catalog(fake: FakeArm) -> None:
    provider = make_provider(fake, live_pricing=True, retail_prices_url="http://127.0.0.1:9/x")
    offer = find_offer(provider, A100)
    assert (offer.price, offer.catalog_version) == (catalog_row(A100).price, load_catalog().version)


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
    assert info.value.scope == "azure/eastus" and usage in str(info.value)
    assert fake.count(*PUT) == 0


def test_quota_is_read_once_for_a_burst_of_launches(fake: FakeArm) -> None:
    provider = make_provider(fake)
    offer = find_offer(provider, A100)
    for i in range(3):
        launch(provider, offer, make_spec(job=f"job-{i}"))
    assert fake.count("GET", "usage.list") == 1
    assert fake.usage("eastus", family_of(A100))[0] == 3 * vcpus_of(A100)


def test_quota_check_can_be_turned_off(fake: FakeArm) -> None:
    fake.set_quota("eastus", family_of(A100), limit=0)
    provider = make_provider(fake, quota_check=False)
    launch(provider, find_offer(provider, A100), make_spec())
    assert fake.count("GET", "usage.list") == 0


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
    assert fake.count("GET", "virtualMachines.list") == 2
    assert {r.path.split("/")[4] for r in fake.requests} == {"rg-eastus", "rg-eastus2"}
    assert all(r.query.get("$expand") == "instanceView" for r in fake.requests)


@pytest.mark.parametrize(
    ("act", "state", "exit_code"),
    [
        (lambda f, gang: f.finish(gang, 0), WorkloadState.SUCCEEDED, 0),
        (lambda f, gang: f.finish(gang, 3), WorkloadState.FAILED, 3),
        # Every node reports; one that is done while another runs keeps the gang running.
        (lambda f, gang: f.finish(f"{gang}-1", 0), WorkloadState.RUNNING, None),
        (lambda f, gang: f.finish(f"{gang}-1", 2), WorkloadState.FAILED, 2),
        (lambda f, gang: f.preempt(f"{gang}-1"), WorkloadState.PREEMPTED, None),
        (lambda f, gang: f.preempt(gang), WorkloadState.PREEMPTED, None),
    ],
)
def test_gang_status_follows_its_vms(
    fake: FakeArm, act: Callable[[FakeArm, str], None], state: WorkloadState, exit_code: int | None
) -> None:
    provider = make_provider(fake)
    handle = launch(
        provider, find_offer(provider, A100), make_spec(nodes=2, market=MarketKind.SPOT)
    )
    act(fake, handle.id)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, exit_code), status.message


def vm(name: str, exit_tag: str | None = None, provisioning: str = "succeeded") -> Vm:
    tags = {} if exit_tag is None else {"multicloud:exit": exit_tag}
    return Vm(name, "rg", "eastus", None, A100, True, tags, provisioning, "running")


SPOT_GANG = Handle("azure", "g", "r", "eastus", None, A100, 2, MarketKind.SPOT, "j")


@pytest.mark.parametrize(
    ("vms", "state", "exit_code"),
    [
        # Azure's eviction signal wins over the exit code the killed container reported.
        ([vm("g-0", "143"), None], WorkloadState.PREEMPTED, None),
        (
            [vm("g-0", "143", "deleting"), vm("g-1")],
            WorkloadState.PREEMPTED,
            None,
        ),
        ([vm("g-0", PREEMPTED), vm("g-1")], WorkloadState.PREEMPTED, None),
        ([vm("g-0", "143"), vm("g-1")], WorkloadState.FAILED, 143),
        (
            [vm("g-0", "0"), vm("g-1", "0")],
            WorkloadState.SUCCEEDED,
            0,
        ),
        ([None, None], WorkloadState.PREEMPTED, None),
    ],
)
def test_eviction_is_read_before_the_exit_tag(
    vms: list[Vm | None], state: WorkloadState, exit_code: int | None
) -> None:
    by_name = {v.name: v for v in vms if v is not None}
    status = gang_status(SPOT_GANG, by_name, terminated=False, errors=boundary("azure"))
    assert (status.state, status.exit_code) == (state, exit_code), status.message


@pytest.mark.parametrize(
    ("code", "message", "zone", "scope"),
    [
        ("AllocationFailed", "no room", None, "azure/eastus"),
        ("ZonalAllocationFailed", "no room", "eastus-2", "azure/eastus/eastus-2"),
        ("OverconstrainedAllocationRequest", "no room", "eastus-2", "azure/eastus/eastus-2"),
        ("QuotaExceeded", "cores", "eastus-2", "azure/eastus"),
        ("OperationNotAllowed", "exceeding approved quota", None, "azure/eastus"),
        ("OperationNotAllowed", "disk busy", None, None),
        ("OSProvisioningTimedOut", "agent", None, None),
    ],
)
def test_a_failure_after_launch_is_lost_capacity_or_a_failure(
    fake: FakeArm, code: str, message: str, zone: str | None, scope: str | None
) -> None:
    # Past launch_wait_s the handle is out; a later allocation (or quota) failure is lost
    # capacity, to be re-placed elsewhere, not the job's failure.
    fake.lro_polls = 1000  # the SDK's own polling cannot end the operation before launch does
    provider = make_provider(fake, launch_wait_s=0, zonal=zone is not None)
    fake.fail_next("virtualMachines.createOrUpdate", code, in_operation=True, message=message)
    handle = launch(provider, find_offer(provider, H100, zone=zone), make_spec(nodes=2))
    fake.complete_operations()
    status = provider.status([handle])[handle.id]
    want = WorkloadState.FAILED if scope is None else WorkloadState.PREEMPTED
    assert (status.state, status.blocked_scope) == (want, scope), status.message
    assert code in status.message


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


@pytest.mark.parametrize(
    ("change", "option", "says"),
    [
        ({"identity_id": None}, "identity_id", "allocated and billed"),
        ({"identity_id": "/subscriptions/s/resourceGroups/r"}, "identity_id", "must be"),
        ({"subnet_id": None}, "subnet_id", "required"),
        ({"subscription_id": ""}, "subscription_id", "required"),
        ({"credential": "password"}, "credential", "must be one of"),
        ({"base_url": "http://10.0.0.1:80"}, "credential", "loopback"),
        ({"key_vault": "kv_acme"}, "key_vault", "Key Vault name"),
        ({"image": "ubuntu"}, "image", "publisher:offer:sku:version"),
        ({"zonal": True, "availability_set": True}, "availability_set", "zonal"),
        ({"os_disk_gb": 10}, "os_disk_gb", "at least 30"),
    ],
)
def test_a_fleet_entry_that_cannot_run_jobs_is_refused_naming_the_option(
    fake: FakeArm, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], option: str, says: str
) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    options = {k: v for k, v in {**fake.options, **change}.items() if v is not None}
    with pytest.raises(SpecError) as info:
        AzureProvider(fleet_name="gpu", **options)
    [(path, message)] = info.value.problems
    assert path == f"providers.gpu.options.{option}" and says in message


def test_options_are_plain_json(fake: FakeArm) -> None:
    # Another process (the six-provider service test's scheduler) gets them as text.
    assert json.loads(json.dumps(fake.options)) == fake.options


@pytest.mark.parametrize(
    ("base_url", "replaced"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("https://127.0.0.1:8080", False),
        ("http://10.1.2.3:8080", False),
        (None, False),
    ],
)
def test_token_goes_without_tls_only_to_loopback(
    fake: FakeArm, base_url: str | None, replaced: bool
) -> None:
    from azure.identity import DefaultAzureCredential
    from multicloud_azure.arm import _LoopbackBearerPolicy

    options = {**fake.options, "base_url": base_url, "credential": DefaultAzureCredential()}
    policy = AzureProvider(**options).compute._config.authentication_policy
    assert isinstance(policy, _LoopbackBearerPolicy) is replaced


@pytest.mark.parametrize(
    ("size", "infiniband"),
    [
        ("Standard_ND96isr_H100_v5", True),
        ("Standard_ND96isr_H200_v5", True),
        ("Standard_ND96isr_MI300X_v5", True),
        ("Standard_ND96amsr_A100_v4", True),
        ("Standard_ND96asr_v4", True),
        ("Standard_ND40rs_v2", True),
        ("Standard_NC24rs_v3", True),
        ("Standard_NC24ads_A100_v4", False),
        ("Standard_NC80adis_H100_v5", False),
        ("Standard_NC40ads_H100_v5", False),
        ("Standard_NV36ads_A10_v5", False),
    ],
)
def test_infiniband_sizes_follow_azures_naming_convention(size: str, infiniband: bool) -> None:
    assert has_infiniband(size) is infiniband
