"""Table-driven error translation of the GCP adapter: every code of issue 4, both as an HTTP
answer and inside a finished long-running operation, through the real SDK clients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from multicloud_gcp import GCPProvider
from multicloud_gcp import errors as gerr
from multicloud_gcp.testing import FakeGCP, block_external_network, serve

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest, WorkloadState

REGION = "us-central1"
ZONE = "us-central1-a"
ZONE_SCOPE = f"gcp/{REGION}/{ZONE}"
REGION_SCOPE = f"gcp/{REGION}"


@pytest.fixture
def fake() -> Iterator[FakeGCP]:
    with block_external_network() as refused, serve() as running:
        yield running
    assert refused == []


def provider_for(fake: FakeGCP) -> GCPProvider:
    return GCPProvider(regions=[REGION], **fake.options)


def offer(provider: GCPProvider, instance_type: str) -> Offer:
    return next(
        o
        for o in provider.offers(ResourceRequest())
        if o.instance_type == instance_type and o.zone == ZONE
    )


def spec(job: str = "err-job") -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name="e",
        attempt=1,
        nodes=1,
        market=MarketKind.ON_DEMAND,
        image="busybox",
        command="true",
    )


@dataclass(frozen=True)
class Case:
    """One injected Google error and what the adapter must raise."""

    id: str
    api: str
    fault: dict[str, Any]
    error: type[ProviderError]
    scope: str


_STOCKOUT_MSG = (
    "The zone 'projects/p/zones/us-central1-a' does not have enough resources available to "
    "fulfill the request. '(resource type:compute)'"
)

GPU_CASES = [
    # Inside the insert operation (the way Compute reports capacity and quota).
    Case(
        "op ZONE_RESOURCE_POOL_EXHAUSTED",
        "instances.insert",
        {
            "in_operation": True,
            "status": 503,
            "reason": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": _STOCKOUT_MSG,
        },
        CapacityError,
        ZONE_SCOPE,
    ),
    Case(
        "op ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "instances.insert",
        {
            "in_operation": True,
            "status": 503,
            "reason": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            "message": "A a3-highgpu-8g VM instance is currently unavailable",
        },
        CapacityError,
        ZONE_SCOPE,
    ),
    Case(
        "op STOCKOUT code",
        "instances.insert",
        {"in_operation": True, "status": 503, "reason": "STOCKOUT", "message": "no capacity"},
        CapacityError,
        ZONE_SCOPE,
    ),
    Case(
        "op STOCKOUT in message",
        "instances.insert",
        {
            "in_operation": True,
            "status": 503,
            "reason": "UNKNOWN_ERROR",
            "message": "'NULL:0/NULL:0/NULL:0 (state:STOCKOUT, sub-state:none)'",
        },
        CapacityError,
        ZONE_SCOPE,
    ),
    Case(
        "op QUOTA_EXCEEDED",
        "instances.insert",
        {
            "in_operation": True,
            "status": 403,
            "reason": "QUOTA_EXCEEDED",
            "message": "Quota 'NVIDIA_H100_GPUS' exceeded. Limit: 8.0 in region us-central1.",
        },
        QuotaError,
        REGION_SCOPE,
    ),
    Case(
        "op 400 in operation",
        "instances.insert",
        {
            "in_operation": True,
            "status": 400,
            "reason": "INVALID_FIELD_VALUE",
            "message": "Invalid value for field 'resource.machineType'",
        },
        InvalidRequestError,
        ZONE_SCOPE,
    ),
    # A project-wide GPU quota is exhausted in every region: the scope is the provider.
    Case(
        "op QUOTA_EXCEEDED GPUS_ALL_REGIONS",
        "instances.insert",
        {
            "in_operation": True,
            "status": 403,
            "reason": "QUOTA_EXCEEDED",
            "message": "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.",
        },
        QuotaError,
        "gcp",
    ),
    Case(
        "http 403 quotaExceeded globally",
        "instances.insert",
        {
            "status": 403,
            "reason": "quotaExceeded",
            "message": "Quota 'PREEMPTIBLE_GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally.",
        },
        QuotaError,
        "gcp",
    ),
    # HTTP answers to the insert itself.
    Case(
        "http 403 quotaExceeded",
        "instances.insert",
        {"status": 403, "reason": "quotaExceeded", "message": "Quota 'CPUS' exceeded."},
        QuotaError,
        REGION_SCOPE,
    ),
    Case(
        "http 401",
        "instances.insert",
        {"status": 401, "reason": "required", "message": "Login Required."},
        AuthError,
        "gcp",
    ),
    Case(
        "http 403 forbidden",
        "instances.insert",
        {
            "status": 403,
            "reason": "forbidden",
            "message": "Required 'compute.instances.create' permission",
        },
        AuthError,
        "gcp",
    ),
    Case(
        "http 400",
        "instances.insert",
        {"status": 400, "reason": "invalid", "message": "Invalid value for field"},
        InvalidRequestError,
        ZONE_SCOPE,
    ),
    Case(
        "http 429 rateLimitExceeded",
        "instances.insert",
        {"status": 429, "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "http 500",
        "instances.insert",
        {"status": 500, "reason": "backendError", "message": "Internal error"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "http 503",
        "instances.insert",
        {"status": 503, "reason": "backendError", "message": "Service unavailable"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "http 503 pool exhausted",
        "instances.insert",
        {"status": 503, "reason": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": _STOCKOUT_MSG},
        CapacityError,
        ZONE_SCOPE,
    ),
    # The quota read before the insert fails: no insert is sent.
    Case(
        "regions.get 403",
        "regions.get",
        {"status": 403, "reason": "forbidden", "message": "compute.regions.get denied"},
        AuthError,
        "gcp",
    ),
]

TPU_CASES = [
    Case(
        "tpu op no more capacity",
        "tpu.queuedResources.create",
        {
            "in_operation": True,
            "grpc_code": 8,
            "message": 'There is no more capacity in the zone "us-central1-a"; you can try in '
            "another zone where Cloud TPU Nodes are offered",
        },
        CapacityError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu op invalid",
        "tpu.queuedResources.create",
        {"in_operation": True, "grpc_code": 3, "message": "runtime version not found"},
        InvalidRequestError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu op unavailable",
        "tpu.queuedResources.create",
        {"in_operation": True, "grpc_code": 14, "message": "try again"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu http 429 quota",
        "tpu.queuedResources.create",
        {
            "status": 429,
            "message": "Quota limit 'TPUV5sLitepodPerProjectPerZoneForTPUAPI' has been exceeded",
        },
        QuotaError,
        REGION_SCOPE,
    ),
    Case(
        "tpu http 429 throttled",
        "tpu.queuedResources.create",
        {"status": 429, "message": "Too many requests"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu http 401",
        "tpu.queuedResources.create",
        {"status": 401, "message": "Request had invalid authentication credentials"},
        AuthError,
        "gcp",
    ),
    Case(
        "tpu http 403",
        "tpu.queuedResources.create",
        {"status": 403, "message": "Permission 'tpu.queuedResources.create' denied"},
        AuthError,
        "gcp",
    ),
    Case(
        "tpu http 400",
        "tpu.queuedResources.create",
        {"status": 400, "message": "Invalid accelerator config"},
        InvalidRequestError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu http 500",
        "tpu.queuedResources.create",
        {"status": 500, "message": "internal"},
        TransientError,
        ZONE_SCOPE,
    ),
    Case(
        "tpu node op no more capacity",
        "tpu.nodes.create",
        {
            "in_operation": True,
            "grpc_code": 8,
            "message": 'There is no more capacity in the zone "us-central1-a"',
        },
        CapacityError,
        ZONE_SCOPE,
    ),
]


@pytest.mark.parametrize("case", GPU_CASES, ids=[c.id for c in GPU_CASES])
def test_gpu_launch_errors(fake: FakeGCP, case: Case) -> None:
    provider = provider_for(fake)
    target = offer(provider, "a3-highgpu-8g")
    fake.fail(case.api, **case.fault)
    with pytest.raises(case.error) as caught:
        provider.launch(target, spec(), request_id="r-1")
    assert caught.value.scope == case.scope
    assert caught.value.provider == "gcp"
    # Never the SDK's own exception, not even as the visible type.
    assert not isinstance(caught.value, gexc.GoogleAPICallError)
    # A failed launch leaves nothing behind.
    assert [i for i in fake.instances.values() if i["status"] != "STOPPING"] == []


@pytest.mark.parametrize("case", TPU_CASES, ids=[c.id for c in TPU_CASES])
def test_tpu_launch_errors(fake: FakeGCP, case: Case) -> None:
    fake.queued_resources = case.api.startswith("tpu.queuedResources")
    provider = provider_for(fake)
    target = offer(provider, "tpu-v5litepod-8")
    fake.fail(case.api, **case.fault)
    with pytest.raises(case.error) as caught:
        provider.launch(target, spec(), request_id="r-1")
    assert caught.value.scope == case.scope


@pytest.mark.parametrize(
    ("code", "message", "state", "blocked"),
    [
        (
            8,
            'There is no more capacity in the zone "us-central1-a"',
            WorkloadState.PREEMPTED,
            ZONE_SCOPE,
        ),
        (
            8,
            "Quota limit 'TPUV5sLitepodPerProjectPerZoneForTPUAPI' has been exceeded",
            WorkloadState.PREEMPTED,
            REGION_SCOPE,
        ),
        (14, "The service is currently unavailable", WorkloadState.TERMINATED, None),
        (3, "invalid runtime version", WorkloadState.FAILED, None),
    ],
    ids=[
        "capacity-is-lost-and-blocks-the-zone",
        "quota-is-lost-and-blocks-the-region",
        "transient-loses-the-attempt",
        "bad-request-fails-the-job",
    ],
)
def test_failed_queued_resource_status(
    fake: FakeGCP, code: int, message: str, state: WorkloadState, blocked: str | None
) -> None:
    provider = provider_for(fake)
    handle = provider.launch(offer(provider, "tpu-v5litepod-8"), spec(), request_id="r-q")
    fake.fail_queued(handle.id, code, message)
    status = provider.status([handle])[handle.id]
    assert status.state is state and message in status.message
    # The scheduler blocks this scope, as after a CapacityError / QuotaError at launch.
    assert status.blocked_scope == blocked


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (requests.Timeout("read timed out"), TransientError),
        (requests.ConnectionError("reset"), TransientError),
        (gexc.DeadlineExceeded("deadline"), TransientError),
        (gexc.RetryError("gave up", cause=None), TransientError),
        (gexc.ServiceUnavailable("down"), TransientError),
        (gexc.Unauthenticated("expired"), AuthError),
        (gexc.PermissionDenied("denied"), AuthError),
        (gexc.BadRequest("bad"), InvalidRequestError),
        (gexc.TooManyRequests("slow down"), TransientError),
        (gexc.InternalServerError("oops"), TransientError),
        (ValueError("unexpected payload"), TransientError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_exception_table(exc: BaseException, error: type[ProviderError]) -> None:
    got = gerr.translate(gerr.failure_from_exception(exc), provider="gcp", region=REGION, zone=ZONE)
    assert type(got) is error


def test_unreachable_endpoint_is_transient() -> None:
    # Nothing listens on port 9: the connection is refused at once, no real host involved.
    provider = GCPProvider(
        regions=[REGION], project="p", api_endpoint="http://127.0.0.1:9", operation_timeout_s=1
    )
    with block_external_network() as refused, pytest.raises(TransientError):
        provider.launch(_any_offer(), spec(), request_id="r-x")
    assert refused == []


def _any_offer() -> Offer:
    return Offer(
        provider="gcp",
        region=REGION,
        zone=ZONE,
        instance_type="a3-highgpu-8g",
        accelerator="H100",
        count=8,
        price=1.0,
    )


def test_rule_table_is_documented() -> None:
    # Every rule of the table appears in the adapter's docs, so the two cannot drift.
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "providers" / "gcp.md").read_text()
    for rule in gerr.RULES:
        assert rule.name in doc, rule.name
