"""Live GCP prices from the (fake) Cloud Billing Catalog API: off by default, exercised once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from multicloud_gcp import GCPProvider
from multicloud_gcp.pricing import parse_skus
from multicloud_gcp.testing import FakeGCP, serve_offline

from multicloud.catalog import load_catalog
from multicloud.provider import Offer, ResourceRequest

REGION = "us-central1"


def sku(description: str, group: str, usage: str, price: float) -> dict[str, Any]:
    units, nanos = int(price), round((price - int(price)) * 1e9)
    return {
        "description": description,
        "category": {"resourceFamily": "Compute", "resourceGroup": group, "usageType": usage},
        "serviceRegions": [REGION],
        "pricingInfo": [
            {
                "pricingExpression": {
                    "usageUnit": "h",
                    "tieredRates": [
                        {"startUsageAmount": 0, "unitPrice": {"units": str(units), "nanos": nanos}}
                    ],
                }
            }
        ],
    }


A3_SKUS = [
    sku("Nvidia H100 80GB GPU running in Americas", "GPU", "OnDemand", 9.5),
    sku("A3 Instance Core running in Americas", "CPU", "OnDemand", 0.03),
    sku("A3 Instance Ram running in Americas", "RAM", "OnDemand", 0.004),
    sku("Spot Preemptible Nvidia H100 80GB GPU running in Americas", "GPU", "Preemptible", 2.5),
    sku("Spot Preemptible A3 Instance Core running in Americas", "CPU", "Preemptible", 0.01),
    sku("Spot Preemptible A3 Instance Ram running in Americas", "RAM", "Preemptible", 0.001),
    # Mega is its own SKU and must not be mistaken for the plain H100.
    sku("Nvidia H100 80GB Mega GPU running in Americas", "GPU", "OnDemand", 11.0),
]


@pytest.fixture
def fake() -> Iterator[FakeGCP]:
    with serve_offline() as running:
        running.skus = A3_SKUS
        yield running


def a3(offers: list[Offer]) -> Offer:
    return next(o for o in offers if o.instance_type == "a3-highgpu-8g")


def test_live_pricing_is_off_by_default(fake: FakeGCP) -> None:
    offers = GCPProvider(regions=[REGION], **fake.options).offers(ResourceRequest())
    assert fake.calls_to("billing.skus.list") == []
    assert {o.catalog_version for o in offers} == {load_catalog().version}


def test_live_pricing_reprices_gpu_vms_and_records_the_version(fake: FakeGCP) -> None:
    provider = GCPProvider(regions=[REGION], live_pricing=True, **fake.options)
    offers = provider.offers(ResourceRequest())
    provider.offers(ResourceRequest(accelerators=("H100",)))
    assert len(fake.calls_to("billing.skus.list")) == 1
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert {o.catalog_version for o in offers} == {f"{load_catalog().version}+gcp-live-{today}"}
    # a3-highgpu-8g: 8 GPUs, 208 vCPUs, 1872 GiB (from the live machine-type listing).
    offer = a3(offers)
    assert offer.price == pytest.approx(8 * 9.5 + 208 * 0.03 + 1872 * 0.004)
    assert offer.spot_price == pytest.approx(8 * 2.5 + 208 * 0.01 + 1872 * 0.001)
    # Families without SKUs keep their catalog prices.
    catalog = {o.key: o.price for o in load_catalog().offers("gcp")}
    a2 = next(o for o in offers if o.instance_type == "a2-highgpu-1g")
    assert a2.price == catalog[a2.key]


def test_pricing_outage_falls_back_to_catalog(fake: FakeGCP) -> None:
    fake.fail("billing.skus.list", status=503, reason="backendError")
    offers = GCPProvider(regions=[REGION], live_pricing=True, **fake.options).offers(
        ResourceRequest()
    )
    catalog = {o.key: o.price for o in load_catalog().offers("gcp")}
    assert a3(offers).price == catalog[a3(offers).key]


def test_parse_skus_keeps_mega_apart() -> None:
    prices = parse_skus(A3_SKUS, "2026-01-01")
    assert prices.units[(REGION, "H100", False)] == pytest.approx(9.5)
    assert prices.units[(REGION, "H100-MEGA", False)] == pytest.approx(11.0)
    assert prices.units[(REGION, "A3-core", True)] == pytest.approx(0.01)
