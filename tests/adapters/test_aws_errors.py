"""AWS errors become typed ProviderErrors, row by row of the table, and none leak.

Errors are injected server-side by the fake (``FakeAWS.fail_next``), so each one travels as a
real HTTP error response through botocore's own parser before the adapter's error boundary
(``multicloud_aws.errors.RULES`` first, then the kit's HTTP fallback) translates it. The
adapter runs with ``max_attempts=1`` (the fake's options) so botocore retries nothing first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, ProfileNotFound
from multicloud_aws import AWSProvider
from multicloud_aws.errors import RULES, boundary
from multicloud_aws.testing import FakeAWS, serve

from multicloud.adapterkit import Failure, codes
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest, request_id

REGION = "us-east-1"
ZONE_SCOPE = "aws/us-east-1/use1-az1"
REGION_SCOPE = "aws/us-east-1"
FLEET_SCOPE = "aws"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAWS]:
    with serve() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAWS) -> FakeAWS:
    server.reset()
    return server


def make(fake: FakeAWS, **options: Any) -> AWSProvider:
    merged: dict[str, Any] = {**fake.options, "regions": [REGION], **options}
    return AWSProvider(_session=fake.session(), **merged)


def offer_of(provider: AWSProvider) -> Offer:
    return next(
        o
        for o in provider.offers(ResourceRequest())
        if o.instance_type == "p5.48xlarge" and o.zone == "use1-az1"
    )


def try_launch(provider: AWSProvider, offer: Offer, market: MarketKind) -> None:
    spec = LaunchSpec(
        job_id="err", job_name="err", attempt=1, nodes=1, market=market, image="busybox"
    )
    provider.launch(offer, spec, request_id=request_id("err", 1, offer.region))


# One row per rule of AWS's table, then the kit's HTTP fallback as AWS reaches it:
# (AWS code, HTTP status, expected error, expected scope, market of the launch)
RUN_INSTANCES_CASES: list[tuple[str, int, type[ProviderError], str, MarketKind]] = [
    # no capacity in the zone (EC2 sends these with 500)
    ("InsufficientInstanceCapacity", 500, CapacityError, ZONE_SCOPE, MarketKind.ON_DEMAND),
    ("InsufficientCapacityOnHost", 500, CapacityError, ZONE_SCOPE, MarketKind.ON_DEMAND),
    ("InsufficientHostCapacity", 500, CapacityError, ZONE_SCOPE, MarketKind.ON_DEMAND),
    ("InsufficientReservedInstanceCapacity", 500, CapacityError, ZONE_SCOPE, MarketKind.ON_DEMAND),
    ("ReservationCapacityExceeded", 400, CapacityError, ZONE_SCOPE, MarketKind.ON_DEMAND),
    ("SpotMaxPriceTooLow", 400, CapacityError, ZONE_SCOPE, MarketKind.SPOT),
    # quota
    ("VcpuLimitExceeded", 400, QuotaError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("MaxSpotInstanceCountExceeded", 400, QuotaError, REGION_SCOPE, MarketKind.SPOT),
    ("InstanceLimitExceeded", 400, QuotaError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("PlacementGroupLimitExceeded", 400, QuotaError, REGION_SCOPE, MarketKind.ON_DEMAND),
    # region not enabled
    ("OptInRequired", 401, AuthError, REGION_SCOPE, MarketKind.ON_DEMAND),
    # credentials: the whole fleet entry
    ("AuthFailure", 401, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
    ("UnauthorizedOperation", 403, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
    ("RequestExpired", 400, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
    ("ExpiredToken", 400, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
    ("UnrecognizedClientException", 400, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
    # throttled, whatever the status
    ("RequestLimitExceeded", 503, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("Throttling", 400, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("ThrottlingException", 400, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    # the kit's HTTP fallback
    ("InvalidParameterValue", 400, InvalidRequestError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("InvalidParameterCombination", 400, InvalidRequestError, REGION_SCOPE, MarketKind.SPOT),
    ("IdempotentParameterMismatch", 400, InvalidRequestError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("ConcurrentTagAccess", 409, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("InternalError", 500, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("Unavailable", 503, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("SomeFutureServerFault", 502, TransientError, REGION_SCOPE, MarketKind.ON_DEMAND),
    ("SomeFutureRefusal", 403, AuthError, FLEET_SCOPE, MarketKind.ON_DEMAND),
]


def test_every_rule_of_the_table_has_a_row() -> None:
    rows = {code.upper() for code, *_ in RUN_INSTANCES_CASES}
    for rule in RULES[:-1]:  # the last one (no region) has no AWS code: see below
        assert any(rule.matches(_failure(code)) for code in rows), rule.name


def _failure(code: str) -> Failure:
    return Failure(400, codes(code))


@pytest.mark.parametrize(
    ("code", "status", "expected", "scope", "market"),
    RUN_INSTANCES_CASES,
    ids=[c[0] for c in RUN_INSTANCES_CASES],
)
def test_run_instances_errors_are_translated(
    fake: FakeAWS,
    code: str,
    status: int,
    expected: type[ProviderError],
    scope: str,
    market: MarketKind,
) -> None:
    provider = make(fake)
    offer = offer_of(provider)
    fake.fail_next("RunInstances", code, status=status)
    with pytest.raises(expected) as err:
        try_launch(provider, offer, market)
    assert type(err.value) is expected
    assert err.value.scope == scope and err.value.provider == "aws"
    assert code in str(err.value)
    # The SDK exception is kept as the cause, for logs, but never raised itself.
    assert isinstance(err.value.__cause__, ClientError)


@pytest.mark.parametrize(
    ("action", "code", "status", "expected", "call"),
    [
        ("DescribeInstanceTypeOfferings", "AuthFailure", 401, AuthError, "offers"),
        ("DescribeAvailabilityZones", "RequestLimitExceeded", 503, TransientError, "offers"),
        ("DescribeInstances", "RequestLimitExceeded", 503, TransientError, "status"),
        ("DescribeInstances", "UnauthorizedOperation", 403, AuthError, "owned"),
        ("TerminateInstances", "UnauthorizedOperation", 403, AuthError, "terminate"),
        ("GetCallerIdentity", "ExpiredToken", 403, AuthError, "check"),
    ],
)
def test_errors_of_the_other_calls_are_translated(
    fake: FakeAWS, action: str, code: str, status: int, expected: type[ProviderError], call: str
) -> None:
    provider = make(fake)
    handle = None
    if call in ("status", "terminate"):
        offer = offer_of(provider)
        spec = LaunchSpec(
            job_id="x",
            job_name="x",
            attempt=1,
            nodes=1,
            market=MarketKind.ON_DEMAND,
            image="busybox",
        )
        handle = provider.launch(offer, spec, request_id=request_id("x", 1, REGION))
    elif call == "check":
        provider = make(fake)  # a fresh adapter has not cached the account id yet
    fake.fail_next(action, code, status=status)
    with pytest.raises(expected):
        if call == "offers":
            provider.offers(ResourceRequest())
        elif call == "status":
            assert handle is not None
            provider.status([handle])
        elif call == "owned":
            provider.owned("anyone")
        elif call == "terminate":
            assert handle is not None
            provider.terminate(handle, request_id="t")
        else:
            provider.check()


def test_placement_group_limit_is_a_region_quota_error(fake: FakeAWS) -> None:
    # AWS allows a limited number of placement groups per region: no gang fits there.
    provider = make(fake)
    offer = offer_of(provider)
    fake.fail_next("CreatePlacementGroup", "PlacementGroupLimitExceeded")
    spec = LaunchSpec(
        job_id="pg", job_name="pg", attempt=1, nodes=2, market=MarketKind.ON_DEMAND, image="x"
    )
    with pytest.raises(QuotaError) as err:
        provider.launch(offer, spec, request_id=request_id("pg", 1, REGION))
    assert err.value.scope == REGION_SCOPE and "PlacementGroupLimitExceeded" in str(err.value)
    assert fake.calls("RunInstances") == []


def test_unreadable_quota_does_not_block_the_launch(fake: FakeAWS) -> None:
    # No permission for Service Quotas: EC2 still refuses over-quota launches by itself
    # (VcpuLimitExceeded → QuotaError), so the pre-check steps aside instead of failing.
    provider = make(fake)
    offer = offer_of(provider)
    fake.fail_next("GetServiceQuota", "AccessDeniedException", status=400)
    try_launch(provider, offer, MarketKind.ON_DEMAND)
    assert len(fake.calls("RunInstances")) == 1


def test_read_timeout_is_transient(fake: FakeAWS) -> None:
    provider = make(fake, read_timeout=0.3)
    fake.fail_next("DescribeAvailabilityZones", "Slow", status=500, delay=1.0)
    with pytest.raises(TransientError) as err:
        provider.offers(ResourceRequest())
    assert "timeout" in str(err.value).lower()


def test_unreachable_endpoint_is_transient(fake: FakeAWS) -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = AWSProvider(
        regions=[REGION],
        endpoint_url=f"http://127.0.0.1:{port}",
        max_attempts=1,
        connect_timeout=0.5,
        _session=fake.session(),
    )
    with pytest.raises(TransientError):
        provider.offers(ResourceRequest())


def test_missing_credentials_are_an_auth_error(
    fake: FakeAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # The fake keeps AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE empty and IMDS disabled, so
    # the standard chain finds nothing.
    provider = AWSProvider(regions=[REGION], endpoint_url=fake.endpoint_url, max_attempts=1)
    with pytest.raises(AuthError):
        provider.check()


@pytest.mark.parametrize("fleet_name", ["aws", "cloud-a"])
def test_mistyped_profile_is_an_auth_error_of_the_fleet(fake: FakeAWS, fleet_name: str) -> None:
    options = {**fake.options, "profile": "no-such-profile"}
    with pytest.raises(AuthError) as err:
        AWSProvider(fleet_name=fleet_name, regions=[REGION], **options)
    assert err.value.scope == fleet_name and err.value.provider == fleet_name
    assert "no-such-profile" in str(err.value)
    assert isinstance(err.value.__cause__, ProfileNotFound)
    # The right profile in the same file works.
    AWSProvider(fleet_name=fleet_name, regions=[REGION], **fake.options).check()


def test_an_exception_that_is_not_the_sdks_passes_unchanged(fake: FakeAWS) -> None:
    with pytest.raises(RuntimeError), boundary("aws")(region=REGION):
        raise RuntimeError("a programming error")
