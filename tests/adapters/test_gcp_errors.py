"""The GCP error table, row by row, through the real SDK clients against the fake.

Google's own rows (capacity, TPU capacity, global and regional quota, rate limiting) come
first, then the kit's one HTTP fallback (401/403 auth, 408/409/429/5xx/timeouts transient,
other 4xx invalid); each as an HTTP answer or inside a finished long-running operation
(docs/providers/gcp.md, "Errors").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from multicloud_gcp import GCPProvider
from multicloud_gcp import errors as gerr
from multicloud_gcp.testing import FakeGCP, block_external_network, serve_offline

from multicloud.adapterkit import ErrorBoundary
from multicloud.adapterkit.errors import HTTP_FALLBACK
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest, WorkloadState

REGION, ZONE = "us-central1", "us-central1-a"
AT_ZONE, AT_REGION, AT_GCP = f"gcp/{REGION}/{ZONE}", f"gcp/{REGION}", "gcp"
STOCKOUT = (
    "The zone 'projects/p/zones/us-central1-a' does not have enough resources available to "
    "fulfill the request. '(resource type:compute)'"
)
NO_TPU = 'There is no more capacity in the zone "us-central1-a"; you can try in another zone'


@pytest.fixture
def fake() -> Iterator[FakeGCP]:
    with serve_offline() as running:
        yield running


def offer(provider: GCPProvider, instance_type: str) -> Offer:
    return next(
        o
        for o in provider.offers(ResourceRequest())
        if o.instance_type == instance_type and o.zone == ZONE
    )


def spec() -> LaunchSpec:
    return LaunchSpec("err-job", "e", 1, 1, MarketKind.ON_DEMAND, image="busybox", command="true")


@dataclass(frozen=True)
class Case:
    """One injected Google error, the table row it exercises and what the adapter raises."""

    id: str
    api: str
    fault: dict[str, Any]
    error: type[ProviderError]
    scope: str
    rule: str


def op(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"in_operation": True, "status": status, "reason": reason, "message": message}


def http(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"status": status, "reason": reason, "message": message}


STOCK, TPU_CAP = "zone resource pool exhausted / stockout", "TPU: no more capacity in the zone"
GLOBAL, QUOTA, RATE = "global quota exceeded", "quota exceeded", "rate limited"
INSERT, QR = "instances.insert", "tpu.queuedResources.create"
GPU_CASES = [
    Case("op pool exhausted", INSERT, op(503, "ZONE_RESOURCE_POOL_EXHAUSTED", STOCKOUT),
         CapacityError, AT_ZONE, STOCK),
    Case("op pool exhausted with details", INSERT,
         op(503, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "a3-highgpu-8g is unavailable"),
         CapacityError, AT_ZONE, STOCK),
    Case("op STOCKOUT code", INSERT, op(503, "STOCKOUT", "no capacity"), CapacityError, AT_ZONE,
         STOCK),
    Case("op STOCKOUT in message", INSERT,
         op(503, "UNKNOWN_ERROR", "'NULL:0/NULL:0/NULL:0 (state:STOCKOUT, sub-state:none)'"),
         CapacityError, AT_ZONE, STOCK),
    Case("http 503 pool exhausted", INSERT, http(503, "ZONE_RESOURCE_POOL_EXHAUSTED", STOCKOUT),
         CapacityError, AT_ZONE, STOCK),
    # A project-wide GPU quota is exhausted in every region: the scope is the provider.
    Case("op GPUS_ALL_REGIONS", INSERT,
         op(403, "QUOTA_EXCEEDED", "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally."),
         QuotaError, AT_GCP, GLOBAL),
    Case("http quotaExceeded globally", INSERT,
         http(403, "quotaExceeded", "Quota 'PREEMPTIBLE_GPUS_ALL_REGIONS' exceeded. Limit: 0.0 "
              "globally."),
         QuotaError, AT_GCP, GLOBAL),
    Case("op QUOTA_EXCEEDED", INSERT,
         op(403, "QUOTA_EXCEEDED", "Quota 'NVIDIA_H100_GPUS' exceeded. Limit: 8.0 in region "
            "us-central1."),
         QuotaError, AT_REGION, QUOTA),
    Case("http quotaExceeded", INSERT, http(403, "quotaExceeded", "Quota 'CPUS' exceeded."),
         QuotaError, AT_REGION, QUOTA),
    # Compute throttles with 403 rateLimitExceeded: transient, never an auth problem.
    Case("http 403 rateLimitExceeded", INSERT, http(403, "rateLimitExceeded", "Rate Limit"),
         TransientError, AT_ZONE, RATE),
    Case("http 403 userRateLimitExceeded", INSERT,
         http(403, "userRateLimitExceeded", "User Rate Limit"), TransientError, AT_ZONE, RATE),
    # The kit's HTTP fallback.
    Case("http 401", INSERT, http(401, "required", "Login Required."), AuthError, AT_GCP,
         "unauthenticated (401)"),
    Case("http 403 forbidden", INSERT,
         http(403, "forbidden", "Required 'compute.instances.create' permission"), AuthError,
         AT_GCP, "permission denied (403)"),
    # (409 on an insert is "already created": the re-send adopts it.)
    Case("http 409 on the lookup", "instances.list", http(409, "resourceNotReady", "not ready"),
         TransientError, AT_REGION, "conflict (409)"),
    Case("http 429", INSERT, http(429, "tooManyRequests", "slow down"), TransientError,
         AT_REGION, "throttled (429)"),
    Case("http 500", INSERT, http(500, "backendError", "Internal error"), TransientError,
         AT_REGION, "server error (5xx)"),
    Case("http 503", INSERT, http(503, "backendError", "Service unavailable"), TransientError,
         AT_REGION, "server error (5xx)"),
    Case("http 400", INSERT, http(400, "invalid", "Invalid value for field"),
         InvalidRequestError, AT_REGION, "bad request (other 4xx)"),
    Case("op 400", INSERT, op(400, "INVALID_FIELD_VALUE", "Invalid value for field"),
         InvalidRequestError, AT_REGION, "bad request (other 4xx)"),
    # The quota read before the insert fails: no insert is sent.
    Case("regions.get 403", "regions.get", http(403, "forbidden", "compute.regions.get denied"),
         AuthError, AT_GCP, "permission denied (403)"),
]

TPU_CASES = [
    Case("tpu op no more capacity", QR, {"in_operation": True, "grpc_code": 8, "message": NO_TPU},
         CapacityError, AT_ZONE, TPU_CAP),
    Case("tpu node op no more capacity", "tpu.nodes.create",
         {"in_operation": True, "grpc_code": 8, "message": NO_TPU}, CapacityError, AT_ZONE,
         TPU_CAP),
    Case("tpu http 429 quota", QR,
         {"status": 429, "message": "Quota limit 'TPUV5sLitepodPerProjectPerZoneForTPUAPI' has "
          "been exceeded"}, QuotaError, AT_REGION, QUOTA),
    Case("tpu op invalid", QR, {"in_operation": True, "grpc_code": 3, "message": "no runtime"},
         InvalidRequestError, AT_REGION, "bad request (other 4xx)"),
    Case("tpu op unavailable", QR, {"in_operation": True, "grpc_code": 14, "message": "later"},
         TransientError, AT_REGION, "server error (5xx)"),
    Case("tpu http 429", QR, {"status": 429, "message": "Too many requests"}, TransientError,
         AT_REGION, "throttled (429)"),
    Case("tpu http 401", QR, {"status": 401, "message": "invalid authentication credentials"},
         AuthError, AT_GCP, "unauthenticated (401)"),
    Case("tpu http 403", QR, {"status": 403, "message": "'tpu.queuedResources.create' denied"},
         AuthError, AT_GCP, "permission denied (403)"),
    Case("tpu http 400", QR, {"status": 400, "message": "Invalid accelerator config"},
         InvalidRequestError, AT_REGION, "bad request (other 4xx)"),
]


@pytest.mark.parametrize("case", GPU_CASES, ids=[c.id for c in GPU_CASES])
def test_gpu_launch_errors(fake: FakeGCP, case: Case) -> None:
    provider = GCPProvider(regions=[REGION], **fake.options)
    target = offer(provider, "a3-highgpu-8g")
    fake.fail(case.api, **case.fault)
    with pytest.raises(case.error) as caught:
        provider.launch(target, spec(), request_id="r-1")
    assert type(caught.value) is case.error
    assert (caught.value.scope, caught.value.provider) == (case.scope, "gcp")
    # A failed launch leaves nothing behind.
    assert [i for i in fake.instances.values() if i["status"] != "STOPPING"] == []


@pytest.mark.parametrize("case", TPU_CASES, ids=[c.id for c in TPU_CASES])
def test_tpu_launch_errors(fake: FakeGCP, case: Case) -> None:
    fake.queued_resources = case.api.startswith("tpu.queuedResources")
    provider = GCPProvider(regions=[REGION], **fake.options)
    fake.fail(case.api, **case.fault)
    with pytest.raises(case.error) as caught:
        provider.launch(offer(provider, "tpu-v5litepod-8"), spec(), request_id="r-1")
    assert type(caught.value) is case.error and caught.value.scope == case.scope


def test_every_row_of_the_table_is_exercised_and_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "providers" / "gcp.md").read_text()
    exercised = {c.rule for c in GPU_CASES + TPU_CASES}
    for rule in gerr.RULES:
        assert rule.name in exercised and rule.name in doc, rule.name
    # The fallback is the kit's: the adapter adds no HTTP rows of its own.
    assert not {r.name for r in gerr.RULES} & {r.name for r in HTTP_FALLBACK}


@pytest.mark.parametrize(
    ("code", "message", "state", "blocked"),
    [
        (8, NO_TPU, WorkloadState.PREEMPTED, AT_ZONE),
        (8, "Quota limit 'TPUV5sLitepodPerProjectPerZoneForTPUAPI' has been exceeded",
         WorkloadState.PREEMPTED, AT_REGION),
        (14, "The service is currently unavailable", WorkloadState.TERMINATED, None),
        (3, "invalid runtime version", WorkloadState.FAILED, None),
    ],
    ids=["capacity-lost-blocks-zone", "quota-lost-blocks-region", "transient", "bad-request"],
)
def test_failed_queued_resource_status(
    fake: FakeGCP, code: int, message: str, state: WorkloadState, blocked: str | None
) -> None:
    provider = GCPProvider(regions=[REGION], **fake.options)
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
def test_sdk_exceptions_become_typed_errors(exc: BaseException, error: type[ProviderError]) -> None:
    boundary = ErrorBoundary("gcp", gerr.RULES, gerr.failure_from_exception)
    assert type(boundary.translate(exc, region=REGION, zone=ZONE)) is error


def test_our_own_bugs_are_not_translated() -> None:
    boundary = ErrorBoundary("gcp", gerr.RULES, gerr.failure_from_exception)
    bug = TypeError("a programming error")
    assert boundary.translate(bug, region=REGION) is bug


def test_unreachable_endpoint_is_transient() -> None:
    # Nothing listens on port 9: the connection is refused at once, no real host involved.
    provider = GCPProvider(
        regions=[REGION], project="p", api_endpoint="http://127.0.0.1:9", operation_timeout_s=1
    )
    target = Offer("gcp", REGION, ZONE, "a3-highgpu-8g", "H100", 8, price=1.0)
    with block_external_network() as refused, pytest.raises(TransientError):
        provider.launch(target, spec(), request_id="r-x")
    assert refused == []
