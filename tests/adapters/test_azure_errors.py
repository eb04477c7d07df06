"""Error translation of the Azure adapter: every ARM code of issue 5, where Azure reports it.

Errors are injected into the fake ARM and travel through the real SDK client, so the tests
cover both the HTTP answer and a long-running operation that ends ``Failed`` (the poller raises
with the last poll's body, status 200).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from multicloud_azure import AzureProvider
from multicloud_azure.errors import translate
from multicloud_azure.testing import FakeArm, serve

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest, request_id

SIZE = "Standard_NC24ads_A100_v4"
QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved "
    "standardNCADSA100v4Family Cores quota."
)


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


@dataclass(frozen=True)
class Case:
    """One injected error and what the adapter must raise for it."""

    code: str
    expected: type[ProviderError]
    status: int = 400
    in_operation: bool = False
    message: str = "injected"
    details: tuple[dict[str, Any], ...] = field(default=())
    zonal: bool = False

    @property
    def scope(self) -> str:
        if self.expected is CapacityError and self.zonal:
            return "azure/eastus/eastus-1"
        return "azure/eastus"


def nested(code: str, message: str = "nested") -> tuple[dict[str, Any], ...]:
    return ({"code": code, "message": message},)


LAUNCH_CASES: list[Case] = [
    # Capacity: in the operation (where Azure reports allocation) and in the answer.
    Case("AllocationFailed", CapacityError, in_operation=True),
    Case("AllocationFailed", CapacityError, status=409),
    Case("ZonalAllocationFailed", CapacityError, in_operation=True, zonal=True),
    Case("SkuNotAvailable", CapacityError, status=409),
    Case("SkuNotAvailable", CapacityError, in_operation=True),
    Case("OverconstrainedAllocationRequest", CapacityError, in_operation=True),
    Case("OverconstrainedAllocationRequest", CapacityError, status=409, zonal=True),
    # Quota, direct and nested in InvalidTemplateDeployment, in the answer or the operation.
    Case("QuotaExceeded", QuotaError, status=409),
    Case("OperationNotAllowed", QuotaError, status=409, message=QUOTA_MESSAGE),
    Case("InvalidTemplateDeployment", QuotaError, details=nested("QuotaExceeded")),
    Case(
        "InvalidTemplateDeployment",
        QuotaError,
        details=nested("OperationNotAllowed", QUOTA_MESSAGE),
    ),
    Case(
        "InvalidTemplateDeployment",
        QuotaError,
        in_operation=True,
        details=nested("QuotaExceeded"),
    ),
    Case("InvalidTemplateDeployment", CapacityError, details=nested("SkuNotAvailable")),
    Case("OperationNotAllowed", QuotaError, in_operation=True, message=QUOTA_MESSAGE),
    # An Azure Policy denial is a 403, but a regional refusal (fail over), not a credential one.
    Case("RequestDisallowedByPolicy", QuotaError, status=403),
    Case("RequestDisallowedByPolicy", QuotaError, status=403, zonal=True),
    Case("RequestDisallowedByPolicy", QuotaError, in_operation=True),
    Case("InvalidTemplateDeployment", QuotaError, details=nested("RequestDisallowedByPolicy")),
    # Credentials and permissions.
    Case("AuthenticationFailed", AuthError, status=401),
    Case("InvalidAuthenticationToken", AuthError, status=401),
    Case("AuthorizationFailed", AuthError, status=403),
    Case("LinkedAuthorizationFailed", AuthError, status=403),
    # The request itself.
    Case("InvalidParameter", InvalidRequestError, status=400),
    Case("BadRequest", InvalidRequestError, status=400),
    Case("InvalidTemplateDeployment", InvalidRequestError, details=nested("InvalidParameter")),
    Case("InvalidParameter", InvalidRequestError, in_operation=True),
    # Passing trouble.
    Case("TooManyRequests", TransientError, status=429),
    Case("InternalServerError", TransientError, status=500),
    Case("ServiceUnavailable", TransientError, status=503),
    Case("GatewayTimeout", TransientError, status=504),
    Case("InternalExecutionError", TransientError, in_operation=True),
    Case("Conflict", TransientError, status=409),
]


def case_id(case: Case) -> str:
    where = "lro" if case.in_operation else str(case.status)
    inner = f"[{case.details[0]['code']}]" if case.details else ""
    return f"{case.code}{inner}-{where}{'-zonal' if case.zonal else ''}"


def make_provider(fake: FakeArm, **overrides: Any) -> AzureProvider:
    return AzureProvider(**{"regions": ["eastus"], **fake.options, **overrides})


def pick(provider: AzureProvider, zonal: bool) -> Offer:
    zone = "eastus-1" if zonal else None
    for offer in provider.offers(ResourceRequest()):
        if offer.instance_type == SIZE and offer.zone == zone:
            return offer
    raise AssertionError("offer missing")


def spec(job: str = "job-e", nodes: int = 1) -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name="e",
        attempt=1,
        nodes=nodes,
        market=MarketKind.ON_DEMAND,
        image="busybox",
        command="true",
    )


@pytest.mark.parametrize("case", LAUNCH_CASES, ids=case_id)
def test_launch_errors_are_translated(fake: FakeArm, case: Case) -> None:
    provider = make_provider(fake, zonal=case.zonal)
    offer = pick(provider, case.zonal)
    fake.inject(
        "vm_put",
        status=case.status,
        code=case.code,
        message=case.message,
        details=case.details,
        in_operation=case.in_operation,
    )
    with pytest.raises(ProviderError) as info:
        provider.launch(offer, spec(), request_id=request_id("job-e", 1, "eastus"))
    assert type(info.value) is case.expected, str(info.value)
    assert info.value.scope == case.scope
    assert info.value.provider == "azure"
    assert case.code in str(info.value)
    # Nothing of a failed launch is left behind.
    assert fake.vm_names() == []


@dataclass(frozen=True)
class CallCase:
    """An error on another call than the VM PUT."""

    name: str
    op: str
    status: int
    code: str
    expected: type[ProviderError]
    call: Callable[[AzureProvider, FakeArm], object]


def _offers(provider: AzureProvider, fake: FakeArm) -> object:
    return provider.offers(ResourceRequest())


def _launch(provider: AzureProvider, fake: FakeArm) -> object:
    return provider.launch(pick(provider, False), spec(), request_id="r-other")


def _launch_gang(provider: AzureProvider, fake: FakeArm) -> object:
    return provider.launch(pick(provider, False), spec(nodes=2), request_id="r-gang")


def _status(provider: AzureProvider, fake: FakeArm) -> object:
    handle = provider.launch(pick(provider, False), spec(), request_id="r-status")
    fake.inject("vm_list", status=429, code="TooManyRequests")
    return provider.status([handle])


def _terminate(provider: AzureProvider, fake: FakeArm) -> object:
    handle = provider.launch(pick(provider, False), spec(), request_id="r-term")
    fake.inject("vm_delete", status=500, code="InternalServerError")
    return provider.terminate(handle, request_id="t")


def _terminate_lro(provider: AzureProvider, fake: FakeArm) -> object:
    handle = provider.launch(pick(provider, False), spec(), request_id="r-term")
    fake.inject("vm_delete", code="InternalExecutionError", in_operation=True)
    return provider.terminate(handle, request_id="t")


def _owned(provider: AzureProvider, fake: FakeArm) -> object:
    return provider.owned("x")


def _check(provider: AzureProvider, fake: FakeArm) -> object:
    provider.check()
    return None


CALL_CASES: list[CallCase] = [
    CallCase("skus-5xx", "skus", 500, "InternalServerError", TransientError, _offers),
    CallCase("skus-403", "skus", 403, "AuthorizationFailed", AuthError, _offers),
    CallCase("usages-403", "usages", 403, "AuthorizationFailed", AuthError, _launch),
    CallCase("check-401", "usages", 401, "InvalidAuthenticationToken", AuthError, _check),
    CallCase("get-503", "vm_get", 503, "ServiceUnavailable", TransientError, _launch),
    CallCase("ppg-409", "ppg_put", 409, "AllocationFailed", CapacityError, _launch_gang),
    CallCase("list-429", "vm_list", 0, "", TransientError, _status),
    CallCase("delete-500", "vm_delete", 0, "", TransientError, _terminate),
    CallCase("delete-lro", "vm_delete", 0, "", TransientError, _terminate_lro),
    CallCase("list-all-403", "vm_list_all", 403, "AuthorizationFailed", AuthError, _owned),
]


@pytest.mark.parametrize("case", CALL_CASES, ids=lambda c: c.name)
def test_errors_of_other_calls_are_translated(fake: FakeArm, case: CallCase) -> None:
    provider = make_provider(fake)
    if case.status:
        fake.inject(case.op, status=case.status, code=case.code)
    with pytest.raises(ProviderError) as info:
        case.call(provider, fake)
    assert type(info.value) is case.expected, str(info.value)


def test_unreachable_endpoint_is_transient() -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    provider = AzureProvider(
        regions=["eastus"],
        subscription_id="s",
        base_url="http://127.0.0.1:9",
        credential="static",
        retries=0,
    )
    with pytest.raises(TransientError):
        provider.offers(ResourceRequest())


class _FailingCredential:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        CredentialUnavailableError("no credential in the chain"),
        ClientAuthenticationError("token request refused"),
    ],
    ids=["unavailable", "refused"],
)
def test_credential_failures_are_auth_errors(fake: FakeArm, exc: Exception) -> None:
    provider = make_provider(fake, credential=_FailingCredential(exc))
    with pytest.raises(AuthError):
        provider.check()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ServiceRequestError("connection refused"), TransientError),
        (ServiceResponseError("connection reset"), TransientError),
        (TimeoutError("read timed out"), TransientError),
        (HttpResponseError("no body"), TransientError),
    ],
    ids=["request", "response", "timeout", "bare"],
)
def test_transport_errors_are_transient(exc: Exception, expected: type[ProviderError]) -> None:
    assert type(translate(exc, provider="azure", region="eastus")) is expected


def test_quota_error_is_scoped_to_the_region_even_when_zonal(fake: FakeArm) -> None:
    provider = make_provider(fake, zonal=True)
    fake.inject("vm_put", status=409, code="QuotaExceeded")
    with pytest.raises(QuotaError) as info:
        provider.launch(pick(provider, True), spec(), request_id="r-q")
    assert info.value.scope == "azure/eastus"


def test_policy_denial_says_so_and_blocks_only_the_region(fake: FakeArm) -> None:
    provider = make_provider(fake, zonal=True)
    fake.inject(
        "vm_put",
        status=403,
        code="RequestDisallowedByPolicy",
        message="Resource 'x' was disallowed by policy.",
    )
    with pytest.raises(ProviderError) as info:
        provider.launch(pick(provider, True), spec(), request_id="r-p")
    assert type(info.value) is QuotaError
    assert info.value.scope == "azure/eastus"
    assert "Azure Policy" in str(info.value)
    # Nothing about the credential: the provider stays usable elsewhere.
    fake.clear_log()
    provider.check()


def test_translated_errors_pickle_with_their_scope() -> None:
    # Errors cross the Ray boundary by pickling.
    import pickle

    err = translate(HttpResponseError("x"), provider="azure", region="eastus", zone="eastus-1")
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.scope) == (type(err), err.scope)
