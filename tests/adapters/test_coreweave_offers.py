"""What the CoreWeave preset adds to the generic Kubernetes adapter: CKS's node labels,
InfiniBand, node states and list prices (the rest: tests/adapters/test_kubernetes_*.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_coreweave import CoreWeaveProvider, instance_type_of
from multicloud_coreweave.testing import FakeKube, serve

from multicloud.catalog import load_catalog
from multicloud.errors import SpecError
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest, WorkloadState
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


def test_gpu_classes_option_maps_unknown_labels(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class=None, instance_type="gd-8xq9000-i128")
    assert _provider(kube).offers(ResourceRequest()) == []
    (offer,) = _provider(kube, gpu_classes={"gd-8xq9000-i128": "h100-sxm"}).offers(
        ResourceRequest())
    assert offer.accelerator == "H100"


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
    with caplog.at_level(logging.WARNING, logger="multicloud_kubernetes"):
        offers = _provider(kube).offers(ResourceRequest())
    assert [o.accelerator for o in offers] == ["H100"]
    assert all(o.price and o.price > 0 for o in offers)
    assert "no price for B300 (B300)" in caplog.text
    assert "no price for Tesla_V100 (V100)" in caplog.text


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


def test_list_prices_can_be_turned_off(kube: FakeKube) -> None:
    kube.add_nodes(1, gpu_class="H100_NVLINK_80GB")
    kube.add_nodes(1, gpu_class="A100_NVLINK_80GB")
    offers = _provider(kube, list_prices=None, price_card={"H100": 30.0}).offers(
        ResourceRequest())
    assert [(o.accelerator, o.price) for o in offers] == [("H100", 30.0)]


def test_fleet_file_option_typo_names_the_field() -> None:
    fleet = parse_fleet("providers:\n  cw:\n    adapter: coreweave\n    options: {namespce: x}\n")
    with pytest.raises(SpecError, match=r"providers\.cw\.options\.namespce.*namespace"):
        from_fleet(fleet, "cw")


@pytest.mark.parametrize(
    ("node", "rdma"),
    [
        ({"gpu_class": "H100_NVLINK_80GB"}, False),
        ({"gpu_class": None, "instance_type": "gd-8xh100ib-i128"}, True),
        ({"gpu_class": None, "instance_type": "gd-8xl40s-i128"}, False),
        ({"gpu_class": "H100_NVLINK_80GB", "labels": {"ib.coreweave.cloud/fabric": "fab1"},
          "rdma": True}, True),
    ],
)
def test_infiniband_pools_get_rdma_ib_and_ipc_lock(node: dict[str, Any], rdma: bool) -> None:
    """Regression: no rdma/ib on InfiniBand pools (CKS instance ids, the fabric label)."""
    with serve() as kube:
        kube.add_nodes(2, region="US-EAST-04", **node)
        provider = _provider(kube)
        (offer,) = provider.offers(ResourceRequest())
        spec = LaunchSpec("ib", "ib", 1, 2, MarketKind.ON_DEMAND, image="i", command="true")
        handle = provider.launch(offer, spec, request_id="ib")
        (container,) = (kube.object("jobs", handle.id) or {})["spec"]["template"]["spec"][
            "containers"]
        limits = container["resources"]["limits"]
        assert ("rdma/ib" in limits, "securityContext" in container) == (rdma, rdma)
        if rdma:
            assert limits["rdma/ib"] == container["resources"]["requests"]["rdma/ib"] == "1"
            assert container["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}
        # The fake scheduler binds them only where rdma/ib is advertised.
        assert provider.status([handle])[handle.id].state is WorkloadState.RUNNING
