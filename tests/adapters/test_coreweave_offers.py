"""Offers of the CoreWeave adapter: node pools read from the cluster, priced, never at $0."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_coreweave import CoreWeaveProvider, accelerator_of, instance_type_of
from multicloud_coreweave.testing import FakeKube, serve

from multicloud.catalog import load_catalog
from multicloud.errors import SpecError
from multicloud.provider import Offer, ResourceRequest
from multicloud.providers import from_fleet, load
from multicloud.specs import parse_fleet


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        yield k


def _provider(kube: FakeKube, **options: Any) -> CoreWeaveProvider:
    return CoreWeaveProvider(**{**kube.options, **options})


def _by_type(offers: list[Offer]) -> dict[str, Offer]:
    return {o.instance_type: o for o in offers}


def _list_price(accelerator: str) -> float:
    row = next(
        r
        for r in load_catalog().rows
        if r.provider == "coreweave" and r.accelerator == accelerator and r.price
    )
    assert row.price is not None
    return row.price / row.count


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("H100_NVLINK_80GB", "H100"),
        ("H200_NVLINK_141GB", "H200"),
        ("A100_NVLINK_80GB", "A100-80GB"),
        ("A100_NVLINK", "A100"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("L40S", "L40S"),
        ("GB200", "GB200"),
        ("RTX_A6000", "A6000"),
        ("Quadro_RTX_4000", None),
        ("gd-8xh100ib-i128", None),
    ],
)
def test_gpu_class_labels_map_to_canonical_accelerators(label: str, expected: str | None) -> None:
    assert accelerator_of(label) == expected


@pytest.mark.parametrize(
    ("instance_id", "expected"),
    [
        ("gd-8xh100ib-i128", ("H100", 8, True)),
        ("gd-8xh200ib-i128", ("H200", 8, True)),
        ("gd-8xl40s-i128", ("L40S", 8, False)),
        ("gd-8xa100-i128", ("A100-80GB", 8, False)),
        ("gb200-4x", ("GB200", 4, False)),
        ("cd-gp-i64-erapids", None),
        ("gd-8xq9000-i128", None),
    ],
)
def test_cks_instance_ids_name_gpu_count_and_infiniband(
    instance_id: str, expected: tuple[str, int, bool] | None
) -> None:
    assert instance_type_of(instance_id) == expected


@pytest.mark.parametrize(
    ("instance_id", "gpus", "accelerator", "list_price_of"),
    [
        ("gd-8xh100ib-i128", 8, "H100", "H100"),
        ("gd-8xa100-i128", 8, "A100-80GB", "A100-80GB"),
        ("gb200-4x", 4, "GB200", "GB200"),
    ],
)
def test_nodes_labelled_only_with_the_cks_instance_id_are_offered(
    kube: FakeKube, instance_id: str, gpus: int, accelerator: str, list_price_of: str
) -> None:
    """Regression: without gpu_classes such a cluster had no offers at all."""
    kube.add_nodes(2, gpu_class=None, instance_type=instance_id, gpus=gpus)
    (offer,) = _provider(kube).offers(ResourceRequest())
    assert (offer.instance_type, offer.accelerator, offer.count, offer.capacity) == (
        instance_id, accelerator, gpus, 2
    )
    assert offer.price == pytest.approx(gpus * _list_price(list_price_of))
    (pool,) = _provider(kube).pools()
    assert pool.selector()["node.kubernetes.io/instance-type"] == instance_id
    assert pool.rdma is instance_id.endswith("ib-i128")


def test_gpu_feature_discovery_product_label_is_the_last_resort(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class=None, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    (offer,) = _provider(kube).offers(ResourceRequest())
    assert (offer.instance_type, offer.accelerator) == ("NVIDIA-H100-80GB-HBM3", "H100")


def test_gpu_classes_option_maps_unknown_labels() -> None:
    assert accelerator_of("gd-8xh100ib-i128", {"gd-8xh100ib-i128": "h100-sxm"}) == "H100"


def test_pools_group_by_class_and_region_with_capacity_in_free_nodes(kube: FakeKube) -> None:
    h100 = kube.add_nodes(3, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
    kube.add_nodes(2, gpu_class="A100_NVLINK_80GB", region="US-WEST-01")
    # Someone else's pod holding 2 GPUs makes one whole node unusable for an 8-GPU gang.
    kube.add_pod("theirs", node=h100[0], gpus=2)
    # A finished pod holds nothing.
    kube.add_pod("done", node=h100[1], gpus=8, phase="Succeeded")

    offers = _by_type(_provider(kube).offers(ResourceRequest()))

    assert set(offers) == {"H100_NVLINK_80GB", "A100_NVLINK_80GB"}
    h = offers["H100_NVLINK_80GB"]
    assert (h.accelerator, h.count, h.region, h.capacity) == ("H100", 8, "US-EAST-04", 2)
    assert h.jurisdiction == "US"
    assert offers["A100_NVLINK_80GB"].capacity == 2


@pytest.mark.parametrize(
    ("node", "offered"),
    [
        ({}, True),
        ({"ready": False}, False),
        ({"unschedulable": True}, False),
        ({"labels": {"node.coreweave.cloud/state": "triage"}}, False),
        ({"gpus": 0}, False),
        ({"gpu_class": None}, False),
        ({"gpu_class": None, "labels": {"node.kubernetes.io/instance-type": "H100_8x"}}, True),
        ({"gpu_class": None, "instance_type": "gd-8xh100ib-i128"}, True),
        ({"gpu_class": None, "instance_type": "cd-gp-i64-erapids"}, False),
    ],
)
def test_only_healthy_labelled_gpu_nodes_are_offered(
    kube: FakeKube, node: dict[str, Any], offered: bool
) -> None:
    kube.add_node("n0", **{"gpu_class": "H100_NVLINK_80GB", **node})
    assert bool(_provider(kube).offers(ResourceRequest())) is offered


def test_price_card_wins_over_list_prices(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB")
    kube.add_nodes(1, gpu_class="A100_NVLINK_80GB")
    offers = _by_type(
        _provider(kube, price_card={"H100_NVLINK_80GB": 31.5}).offers(ResourceRequest())
    )
    assert offers["H100_NVLINK_80GB"].price == 31.5
    assert offers["H100_NVLINK_80GB"].catalog_version == "price-card"
    # Not on the card: the shipped CoreWeave list price, versioned as the catalog.
    a100 = offers["A100_NVLINK_80GB"]
    assert a100.price == pytest.approx(8 * _list_price("A100-80GB"))
    assert a100.catalog_version == load_catalog().version


def test_price_card_by_accelerator_name(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB")
    (offer,) = _provider(kube, price_card={"H100": 40.0}).offers(ResourceRequest())
    assert offer.price == 40.0


def test_list_price_scales_with_gpus_per_node(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", gpus=4)
    (offer,) = _provider(kube).offers(ResourceRequest())
    assert offer.price == pytest.approx(4 * _list_price("H100"))


def test_unpriced_class_is_left_out_with_a_reason_never_at_zero(
    kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB")
    # The catalog sells B300 at CoreWeave on spot only: no on-demand list price.
    kube.add_nodes(1, gpu_class="B300")
    # V100 has no CoreWeave row at all.
    kube.add_nodes(1, gpu_class="Tesla_V100")
    with caplog.at_level(logging.WARNING, logger="multicloud_coreweave"):
        offers = _provider(kube).offers(ResourceRequest())
    assert [o.accelerator for o in offers] == ["H100"]
    assert all(o.price and o.price > 0 for o in offers)
    assert "no price for B300 (B300)" in caplog.text
    assert "no price for Tesla_V100 (V100)" in caplog.text


@pytest.mark.parametrize("bad", [0, -1.0, "free", True])
def test_price_card_refuses_non_positive_prices(bad: Any) -> None:
    with pytest.raises(ValueError, match="price_card"):
        CoreWeaveProvider(price_card={"H100": bad})


def test_region_option_for_nodes_without_topology_label(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", region=None)
    assert _provider(kube).offers(ResourceRequest()) == []
    (offer,) = _provider(kube, region="US-CENTRAL-03").offers(ResourceRequest())
    assert offer.region == "US-CENTRAL-03"


def test_zone_label_splits_pools(kube: FakeKube) -> None:
    kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", zone="US-EAST-04A")
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", zone="US-EAST-04B")
    offers = _provider(kube).offers(ResourceRequest())
    assert [(o.zone, o.capacity) for o in offers] == [("US-EAST-04A", 2), ("US-EAST-04B", 1)]


def test_mixed_gpu_counts_of_one_class_are_separate_pools(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", gpus=8)
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", gpus=4)
    offers = _provider(kube).offers(ResourceRequest())
    assert sorted(o.instance_type for o in offers) == [
        "H100_NVLINK_80GB.4gpu",
        "H100_NVLINK_80GB.8gpu",
    ]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ResourceRequest(), {"H100", "A100-80GB"}),
        (ResourceRequest(accelerators=("H100",)), {"H100"}),
        (ResourceRequest(count=9), set()),
        (ResourceRequest(regions=("US-WEST-*",)), {"A100-80GB"}),
    ],
)
def test_request_filters(kube: FakeKube, request_: ResourceRequest, expected: set[str]) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
    kube.add_nodes(1, gpu_class="A100_NVLINK_80GB", region="US-WEST-01")
    assert {o.accelerator for o in _provider(kube).offers(request_)} == expected


def test_fleet_regions_narrow_offers(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
    kube.add_nodes(1, gpu_class="A100_NVLINK_80GB", region="US-WEST-01")
    offers = _provider(kube, regions=["US-EAST-*"]).offers(ResourceRequest())
    assert [o.region for o in offers] == ["US-EAST-04"]


def test_registered_entry_point_and_fleet_file(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB")
    assert isinstance(load("coreweave", **kube.options), CoreWeaveProvider)
    fleet = parse_fleet(
        f"""
providers:
  cw:
    adapter: coreweave
    regions: [US-EAST-*]
    options:
      kubeconfig: {kube.kubeconfig}
      namespace: {kube.namespace}
      price_card: {{H100_NVLINK_80GB: 33.0}}
"""
    )
    provider = from_fleet(fleet, "cw")
    (offer,) = provider.offers(ResourceRequest())
    assert (offer.provider, offer.price) == ("cw", 33.0)


def test_fleet_file_option_typo_names_the_field(kube: FakeKube) -> None:
    fleet = parse_fleet("providers:\n  cw:\n    adapter: coreweave\n    options: {namespce: x}\n")
    with pytest.raises(SpecError, match=r"providers\.cw\.options\.namespce.*namespace"):
        from_fleet(fleet, "cw")


def test_building_the_provider_touches_nothing(tmp_path: Any) -> None:
    # Planning code builds providers eagerly; a missing kubeconfig only matters on use.
    provider = CoreWeaveProvider(kubeconfig=str(tmp_path / "missing"))
    assert provider.fleet_name == "coreweave"


def test_two_clusters_in_one_process_never_touch_the_default_config() -> None:
    from kubernetes import client

    default_host = client.Configuration.get_default_copy().host
    with serve() as east, serve() as west:
        east.add_nodes(1, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        west.add_nodes(2, gpu_class="A100_NVLINK_80GB", region="US-WEST-01")
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

    kube.add_nodes(1, gpu_class="L40S")
    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    provider = CoreWeaveProvider(namespace=kube.namespace, api_client=client.ApiClient(cfg))
    (offer,) = provider.offers(ResourceRequest())
    assert offer.accelerator == "L40S"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gpu_classes": {"gd-8xh100ib-i128": "H10O"}}, "did you mean"),
        ({"rayjob": "sometimes"}, "rayjob"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"unschedulable_grace_s": -1}, "unschedulable_grace_s"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoreWeaveProvider(**options)
