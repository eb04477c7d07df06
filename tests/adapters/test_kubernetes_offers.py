"""Offers of the generic Kubernetes adapter: GPU node pools by labels, priced, never a silent $0."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_kubernetes import KubernetesProvider, accelerator_of
from multicloud_kubernetes.nodes import catalog_accelerator
from multicloud_kubernetes.pricing import PRICE_CARD, parse_price_card
from multicloud_kubernetes.testing import FakeKube, serve

from multicloud.catalog import load_catalog
from multicloud.errors import SpecError
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest
from multicloud.providers import from_fleet, load
from multicloud.specs import parse_fleet

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
CARD = {"H100": 40.0, "A100-80GB": 20.0, "L40S": 10.0, "MI300X": 30.0}


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        yield k


def _provider(kube: FakeKube, **options: Any) -> KubernetesProvider:
    return KubernetesProvider(**{**kube.options, "price_card": CARD, **options})


def _by_type(offers: list[Offer]) -> dict[str, Offer]:
    return {o.instance_type: o for o in offers}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("H100_NVLINK_80GB", "H100"),
        ("H200_NVLINK_141GB", "H200"),
        ("A100_NVLINK_80GB", "A100-80GB"),
        ("A100_NVLINK", "A100"),
        (H100, "H100"),
        (A100, "A100-80GB"),
        ("NVIDIA-L40S", "L40S"),
        ("GB200", "GB200"),
        ("RTX_A6000", "A6000"),
        ("AMD_Instinct_MI300X_OAM", "MI300X"),
        ("nvidia-h100-80gb", "H100"),  # GKE's cloud.google.com/gke-accelerator
        ("nvidia-tesla-t4", "T4"),
        ("Quadro_RTX_4000", None),
        ("gd-8xh100ib-i128", None),
    ],
)
def test_gpu_labels_map_to_canonical_accelerators(label: str, expected: str | None) -> None:
    assert accelerator_of(label) == expected


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [("p5.48xlarge", "H100"), ("a3-highgpu-8g", "H100"), ("m5.large", None)],
)
def test_cloud_instance_types_are_read_through_the_catalog(
    instance_type: str, expected: str | None
) -> None:
    assert catalog_accelerator(instance_type) == expected


# Each row: the node's labels (besides its GPUs), the accelerator and the pool's label key.
LABELLED = [
    ("NVIDIA GPU feature discovery", {"product": H100}, "H100", "nvidia.com/gpu.product"),
    ("AMD's GPU node labeller", {"product": "AMD_Instinct_MI300X_OAM", "vendor": "amd"},
     "MI300X", "amd.com/gpu.product-name"),
    ("GKE's accelerator label", {"product": None, "labels": {
        "cloud.google.com/gke-accelerator": "nvidia-l40s"}}, "L40S",
     "cloud.google.com/gke-accelerator"),
    ("an EKS instance type", {"product": None, "labels": {
        "node.kubernetes.io/instance-type": "p5.48xlarge"}}, "H100",
     "node.kubernetes.io/instance-type"),
    ("GFD first, instance type second", {"product": A100, "labels": {
        "node.kubernetes.io/instance-type": "p5.48xlarge"}}, "A100-80GB",
     "nvidia.com/gpu.product"),
]


@pytest.mark.parametrize(("case", "node", "accelerator", "label"), LABELLED,
                         ids=[r[0] for r in LABELLED])
def test_nodes_are_typed_by_the_first_label_that_names_a_gpu(
    kube: FakeKube, case: str, node: dict[str, Any], accelerator: str, label: str
) -> None:
    kube.add_nodes(2, **node)
    (offer,) = _provider(kube).offers(ResourceRequest())
    (pool,) = _provider(kube).pools()
    assert (offer.accelerator, offer.count, offer.capacity, pool.label) == (
        accelerator, 8, 2, label)
    assert pool.selector()[label] == pool.value
    assert pool.resource == ("amd.com/gpu" if node.get("vendor") == "amd" else "nvidia.com/gpu")


def test_a_fleet_label_and_mapping_type_nodes_no_known_label_names(kube: FakeKube) -> None:
    kube.add_nodes(2, product=None, labels={"lab.example.com/pool": "hopper-a"})
    assert _provider(kube).offers(ResourceRequest()) == []
    provider = _provider(kube, type_labels=["lab.example.com/pool"],
                         gpu_classes={"hopper-a": "H100"})
    (offer,) = provider.offers(ResourceRequest())
    assert (offer.instance_type, offer.accelerator) == ("hopper-a", "H100")


def test_amd_pods_request_amd_gpus(kube: FakeKube) -> None:
    kube.add_nodes(1, product="AMD_Instinct_MI300X_OAM", vendor="amd")
    provider = _provider(kube)
    (offer,) = provider.offers(ResourceRequest())
    spec = LaunchSpec("j", "j", 1, 1, MarketKind.ON_DEMAND, image="rocm/pytorch", command="x")
    handle = provider.launch(offer, spec, request_id="amd")
    (pod,) = kube.pods_of(handle.id)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"amd.com/gpu": "8"}
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"]
    assert pod["spec"]["nodeName"]  # the fake scheduler found the AMD node


@pytest.mark.parametrize(
    ("labels", "gpus", "why"),
    [
        ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}, 56, "MIG partitions"),
        ({"nvidia.com/gpu.count": "8"}, 4, "4 of its 8 GPUs"),
    ],
)
def test_nodes_without_whole_gpus_are_left_out(
    kube: FakeKube, caplog: pytest.LogCaptureFixture, labels: dict[str, str], gpus: int, why: str
) -> None:
    """Regression guard: a MIG node would otherwise read as 56 × A100."""
    kube.add_node("mig", gpus=gpus, labels=labels)
    with caplog.at_level(logging.WARNING, logger="multicloud_kubernetes"):
        assert _provider(kube).offers(ResourceRequest()) == []
    assert why in caplog.text


def test_node_selector_narrows_the_nodes_offered(kube: FakeKube) -> None:
    kube.add_nodes(2, labels={"team": "research"})
    kube.add_nodes(3, product=A100, labels={"team": "prod"})
    (offer,) = _provider(kube, node_selector="team=research").offers(ResourceRequest())
    assert (offer.accelerator, offer.capacity) == ("H100", 2)
    assert "labelSelector=team%3Dresearch" in next(
        r.path for r in reversed(kube.requests) if r.path.startswith("/api/v1/nodes"))


def test_pools_group_by_type_and_region_with_capacity_in_free_nodes(kube: FakeKube) -> None:
    h100 = kube.add_nodes(3, region="us-east-1")
    kube.add_nodes(2, product=A100, region="us-west-2")
    # Someone else's pod holding 2 GPUs makes one whole node unusable for an 8-GPU gang.
    kube.add_pod("theirs", node=h100[0], gpus=2)
    # A finished pod holds nothing.
    kube.add_pod("done", node=h100[1], gpus=8, phase="Succeeded")
    offers = _by_type(_provider(kube).offers(ResourceRequest()))
    assert set(offers) == {H100, A100}
    h = offers[H100]
    assert (h.accelerator, h.count, h.region, h.capacity) == ("H100", 8, "us-east-1", 2)
    assert h.jurisdiction == "US"
    assert offers[A100].capacity == 2


@pytest.mark.parametrize(
    ("node", "offered"),
    [({}, True), ({"ready": False}, False), ({"unschedulable": True}, False),
     ({"gpus": 0}, False), ({"product": None}, False)],
)
def test_only_healthy_labelled_gpu_nodes_are_offered(
    kube: FakeKube, node: dict[str, Any], offered: bool
) -> None:
    kube.add_node("n0", **node)
    assert bool(_provider(kube).offers(ResourceRequest())) is offered


# ---------------------------------------------------------------------------- prices


@pytest.mark.parametrize(
    ("card", "price"),
    [
        ({H100: 31.5}, 31.5),  # by instance type (the label value)
        ({"H100": 40.0}, 40.0),  # by accelerator
        ({H100: 31.5, "H100": 40.0}, 31.5),  # the pool's own name first
        ({"H100": 0}, 0.0),  # owned capacity at an explicit $0
        # Owned: $250,000 a node over 4 years, plus $1.20 a node-hour to run.
        ({"H100": {"cost_usd": 250_000, "years": 4, "running_usd_per_hour": 1.2}},
         round(250_000 / (4 * 8760) + 1.2, 4)),
    ],
)
def test_the_price_card_prices_pools(kube: FakeKube, card: dict[str, Any], price: float) -> None:
    kube.add_nodes(1)
    (offer,) = _provider(kube, price_card=card).offers(ResourceRequest())
    assert offer.price == pytest.approx(price) and offer.catalog_version == PRICE_CARD


def test_an_unpriced_pool_is_left_out_with_a_reason_never_at_zero(
    kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    kube.add_nodes(1)
    kube.add_nodes(1, product=A100)
    with caplog.at_level(logging.WARNING, logger="multicloud_kubernetes"):
        offers = _provider(kube, price_card={"H100": 40.0}).offers(ResourceRequest())
    assert [o.accelerator for o in offers] == ["H100"]
    assert f"no price for {A100} (A100-80GB)" in caplog.text


def test_list_prices_of_a_catalog_cloud_can_price_a_generic_cluster(kube: FakeKube) -> None:
    kube.add_nodes(1)
    (offer,) = _provider(kube, price_card={}, list_prices="coreweave").offers(ResourceRequest())
    row = next(r for r in load_catalog().rows
               if r.provider == "coreweave" and r.accelerator == "H100" and r.price)
    assert row.price is not None
    assert offer.price == pytest.approx(8 * row.price / row.count)


@pytest.mark.parametrize(
    ("card", "match"),
    [
        ({"H100": -1.0}, "USD >= 0"),
        ({"H100": "free"}, "USD >= 0"),
        ({"H100": True}, "USD >= 0"),
        ({"H100": {"cost_usd": 1000}}, "takes cost_usd, years"),
        ({"H100": {"cost_usd": 1000, "years": 0}}, "years must be > 0"),
        ({"H100": {"cost_usd": 1000, "years": 3, "resale": 5}}, "takes cost_usd, years"),
    ],
)
def test_bad_price_cards_are_refused(card: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_price_card(card)
    with pytest.raises(ValueError, match="price_card"):
        KubernetesProvider(price_card=card)


# ---------------------------------------------------------------------------- where


def test_region_option_for_nodes_without_topology_label(kube: FakeKube) -> None:
    kube.add_nodes(1, region=None)
    assert _provider(kube).offers(ResourceRequest()) == []
    (offer,) = _provider(kube, region="on-prem-1").offers(ResourceRequest())
    assert offer.region == "on-prem-1"


def test_zone_label_splits_pools(kube: FakeKube) -> None:
    kube.add_nodes(2, zone="us-east-1a")
    kube.add_nodes(1, zone="us-east-1b")
    offers = _provider(kube).offers(ResourceRequest())
    assert [(o.zone, o.capacity) for o in offers] == [("us-east-1a", 2), ("us-east-1b", 1)]


def test_mixed_gpu_counts_of_one_type_are_separate_pools(kube: FakeKube) -> None:
    kube.add_nodes(1, gpus=8)
    kube.add_nodes(1, gpus=4)
    offers = _provider(kube).offers(ResourceRequest())
    assert sorted(o.instance_type for o in offers) == [f"{H100}.4gpu", f"{H100}.8gpu"]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ResourceRequest(), {"H100", "A100-80GB"}),
        (ResourceRequest(accelerators=("H100",)), {"H100"}),
        (ResourceRequest(count=9), set()),
        (ResourceRequest(regions=("us-west-*",)), {"A100-80GB"}),
    ],
)
def test_request_filters(kube: FakeKube, request_: ResourceRequest, expected: set[str]) -> None:
    kube.add_nodes(1, region="us-east-1")
    kube.add_nodes(1, product=A100, region="us-west-2")
    assert {o.accelerator for o in _provider(kube).offers(request_)} == expected


def test_fleet_regions_narrow_offers(kube: FakeKube) -> None:
    kube.add_nodes(1, region="us-east-1")
    kube.add_nodes(1, product=A100, region="us-west-2")
    offers = _provider(kube, regions=["us-east-*"]).offers(ResourceRequest())
    assert [o.region for o in offers] == ["us-east-1"]


# ---------------------------------------------------------------------------- building


def test_registered_entry_point_and_fleet_file(kube: FakeKube) -> None:
    kube.add_nodes(1)
    assert isinstance(load("kubernetes", **kube.options), KubernetesProvider)
    fleet = parse_fleet(
        f"""
providers:
  lab:
    adapter: kubernetes
    options:
      kubeconfig: {kube.kubeconfig}
      namespace: {kube.namespace}
      price_card: {{H100: {{cost_usd: 300000, years: 5}}}}
"""
    )
    (offer,) = from_fleet(fleet, "lab").offers(ResourceRequest())
    assert offer.provider == "lab"
    assert offer.price == pytest.approx(300000 / (5 * 8760), abs=1e-4)


def test_fleet_file_option_typo_names_the_field() -> None:
    fleet = parse_fleet("providers:\n  lab:\n    adapter: kubernetes\n"
                        "    options: {local_queu: x}\n")
    with pytest.raises(SpecError, match=r"providers\.lab\.options\.local_queu.*local_queue"):
        from_fleet(fleet, "lab")


def test_building_the_provider_touches_nothing(tmp_path: Any) -> None:
    # Planning code builds providers eagerly; a missing kubeconfig only matters on use.
    provider = KubernetesProvider(kubeconfig=str(tmp_path / "missing"))
    assert provider.fleet_name == "kubernetes"


def test_two_clusters_in_one_process_never_touch_the_default_config() -> None:
    from kubernetes import client

    default_host = client.Configuration.get_default_copy().host
    with serve() as east, serve() as west:
        east.add_nodes(1, region="us-east-1")
        west.add_nodes(2, product=A100, region="us-west-2")
        a, b = _provider(east, fleet_name="east"), _provider(west, fleet_name="west")
        assert [(o.provider, o.accelerator) for o in a.offers(ResourceRequest())] == [
            ("east", "H100")
        ]
        assert [(o.provider, o.capacity) for o in b.offers(ResourceRequest())] == [("west", 2)]
        a.close()
        b.close()
    assert client.Configuration.get_default_copy().host == default_host


def test_a_ready_api_client_can_be_passed_in(kube: FakeKube) -> None:
    from kubernetes import client, config

    kube.add_nodes(1, product="NVIDIA-L40S")
    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    provider = KubernetesProvider(namespace=kube.namespace, api_client=client.ApiClient(cfg),
                                  price_card=CARD)
    (offer,) = provider.offers(ResourceRequest())
    assert offer.accelerator == "L40S"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gpu_classes": {"pool-a": "H10O"}}, "did you mean"),
        ({"rayjob": "sometimes"}, "rayjob"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"unschedulable_grace_s": -1}, "unschedulable_grace_s"),
        ({"queue_grace_s": -1}, "queue_grace_s"),
        ({"local_queue": "Team_A"}, "local_queue"),
        ({"gpu_resources": []}, "gpu_resources"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KubernetesProvider(**options)
