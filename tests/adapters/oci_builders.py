"""Small builders the OCI adapter tests share (not a test module)."""

from __future__ import annotations

from typing import Any

from multicloud_oci import OCIProvider
from multicloud_oci.testing import FakeOCI

from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest

REGION = "us-ashburn-1"
AD1, AD2, AD3 = (f"FAKE:US-ASHBURN-1-AD-{i}" for i in (1, 2, 3))


def provider(fake: FakeOCI, **options: Any) -> OCIProvider:
    return OCIProvider(**{"fleet_name": "oci", "regions": [REGION], **fake.options, **options})


def offer(
    p: OCIProvider, shape: str = "BM.GPU.H100.8", zone: str = AD1, reserved: bool = False
) -> Offer:
    return next(
        o
        for o in p.offers(ResourceRequest())
        if o.instance_type == shape and o.zone == zone and (o.reservation is not None) == reserved
    )


def spec(job: str = "job-1", *, nodes: int = 1, market: MarketKind = MarketKind.ON_DEMAND,
         **fields: Any) -> LaunchSpec:
    values: dict[str, Any] = {"image": "ghcr.io/acme/train:1", "command": "python train.py"}
    values.update(fields)
    return LaunchSpec(job_id=job, job_name=job, attempt=1, nodes=nodes, market=market, **values)


def calls(fake: FakeOCI, method: str, path_part: str) -> int:
    return sum(1 for c in fake.calls if c.method == method and path_part in c.path)
