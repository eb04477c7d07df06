"""Azure's error table, row by row, through the real SDK client against the fake ARM.

Each case makes the fake answer with an ARM error — in the HTTP answer, or inside the
long-running operation (where Azure reports allocation failures: the poller raises with the
last poll's body and HTTP 200) — and checks the exact ``ProviderError`` class, its scope, and
which row of the table (Azure's rules, then the kit's HTTP fallback) decided it.
"""

from __future__ import annotations

import pickle
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
from multicloud_azure.errors import RULES, boundary, to_failure
from multicloud_azure.testing import FakeArm, serve

from multicloud.adapterkit.errors import HTTP_FALLBACK
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest

SIZE = "Standard_NC24ads_A100_v4"
QUOTA = "Operation results in exceeding approved standardNCADSA100v4Family Cores quota."
ERRORS = boundary("azure")


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


@dataclass(frozen=True)
class Case:
    """One ARM error on the VM PUT, and what the adapter must raise for it."""

    code: str
    expected: type[ProviderError]
    rule: str  # the start of the deciding row's name
    status: int | None = None  # None: as Azure usually shows the code
    in_operation: bool | None = None
    message: str = "injected"
    details: tuple[dict[str, Any], ...] = field(default=())
    zonal: bool = False

    @property
    def scope(self) -> str:
        if self.expected is AuthError:
            return "azure"  # a credential problem disables the whole provider
        if self.expected is CapacityError and self.zonal:
            return "azure/eastus/eastus-1"
        return "azure/eastus"


def nested(code: str, message: str = "nested") -> tuple[dict[str, Any], ...]:
    return ({"code": code, "message": message},)


CASES: list[Case] = [
    # Capacity: in the operation (where Azure reports allocation) and in the answer.
    Case("AllocationFailed", CapacityError, "capacity"),
    Case("AllocationFailed", CapacityError, "capacity", status=409),
    Case("ZonalAllocationFailed", CapacityError, "capacity", zonal=True),
    Case("SkuNotAvailable", CapacityError, "capacity"),
    Case("SkuNotAvailable", CapacityError, "capacity", in_operation=True),
    Case("OverconstrainedAllocationRequest", CapacityError, "capacity"),
    Case(
        "OverconstrainedZonalAllocationRequest", CapacityError, "capacity", status=409, zonal=True
    ),
    Case("InvalidTemplateDeployment", CapacityError, "capacity", details=nested("SkuNotAvailable")),
    # Quota, direct and nested, in the answer or the operation; regional even when zonal.
    Case("QuotaExceeded", QuotaError, "quota"),
    Case("QuotaExceeded", QuotaError, "quota", zonal=True),
    Case("OperationNotAllowed", QuotaError, "quota", message=QUOTA),
    Case("OperationNotAllowed", QuotaError, "quota", message=QUOTA, in_operation=True),
    Case("InvalidTemplateDeployment", QuotaError, "quota", details=nested("QuotaExceeded")),
    Case(
        "InvalidTemplateDeployment",
        QuotaError,
        "quota",
        details=nested("OperationNotAllowed", QUOTA),
    ),
    Case(
        "InvalidTemplateDeployment",
        QuotaError,
        "quota",
        details=nested("QuotaExceeded"),
        in_operation=True,
    ),
    # An OperationNotAllowed that is not about quota is the request's own problem.
    Case("OperationNotAllowed", TransientError, "conflict", message="disk busy"),
    # An Azure Policy denial is a 403, but a regional refusal (fail over), not a credential one.
    Case("RequestDisallowedByPolicy", QuotaError, "Azure Policy"),
    Case("RequestDisallowedByPolicy", QuotaError, "Azure Policy", zonal=True),
    Case("RequestDisallowedByPolicy", QuotaError, "Azure Policy", in_operation=True),
    Case(
        "InvalidTemplateDeployment",
        QuotaError,
        "Azure Policy",
        details=nested("RequestDisallowedByPolicy"),
    ),
    # Credentials and permissions: ARM's codes, then the fallback's 401 / 403.
    Case("AuthorizationFailed", AuthError, "authorization"),
    Case("LinkedAuthorizationFailed", AuthError, "authorization"),
    Case("InvalidAuthenticationToken", AuthError, "authorization"),
    Case("Unauthorized", AuthError, "unauthenticated", status=401),
    Case("Forbidden", AuthError, "permission denied", status=403),
    # The request itself: the fallback's 4xx, or a known code in a failed operation.
    Case("InvalidParameter", InvalidRequestError, "bad request"),
    Case("NotFound", InvalidRequestError, "bad request", status=404),
    Case(
        "InvalidTemplateDeployment",
        InvalidRequestError,
        "bad request",
        details=nested("InvalidParameter"),
    ),
    Case(
        "InvalidParameter",
        InvalidRequestError,
        "invalid request in a failed operation",
        in_operation=True,
    ),
    # Passing trouble.
    Case("RequestTimeout", TransientError, "request timeout", status=408),
    Case("Conflict", TransientError, "conflict"),
    Case("TooManyRequests", TransientError, "throttled"),
    Case("InternalServerError", TransientError, "server error"),
    Case("ServiceUnavailable", TransientError, "server error"),
    Case("GatewayTimeout", TransientError, "server error"),
]


def case_id(case: Case) -> str:
    where = "lro" if case.in_operation else str(case.status or "as-azure")
    inner = f"[{case.details[0]['code']}]" if case.details else ""
    return f"{case.code}{inner}-{where}{'-zonal' if case.zonal else ''}"


def make_provider(fake: FakeArm, **overrides: Any) -> AzureProvider:
    return AzureProvider(**{"regions": ["eastus"], **fake.options, **overrides})


def pick(provider: AzureProvider, zonal: bool = False) -> Offer:
    zone = "eastus-1" if zonal else None
    return next(
        o for o in provider.offers(ResourceRequest()) if (o.instance_type, o.zone) == (SIZE, zone)
    )


def spec(nodes: int = 1) -> LaunchSpec:
    return LaunchSpec("job-e", "e", 1, nodes, MarketKind.ON_DEMAND, image="busybox", command="true")


def deciding_rule(error: ProviderError) -> str:
    failure = to_failure(error.__cause__) if error.__cause__ else None
    rule = ERRORS.rule_for(failure) if failure else None
    return rule.name if rule else "(default: transient)"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_launch_errors_follow_the_table(fake: FakeArm, case: Case) -> None:
    provider = make_provider(fake, zonal=case.zonal)
    offer = pick(provider, case.zonal)
    fake.fail_next(
        "virtualMachines.createOrUpdate",
        case.code,
        status=case.status,
        in_operation=case.in_operation,
        message=case.message,
        details=case.details,
    )
    with pytest.raises(ProviderError) as info:
        provider.launch(offer, spec(), request_id="r-e")
    assert type(info.value) is case.expected, str(info.value)
    assert (info.value.scope, info.value.provider) == (case.scope, "azure")
    assert case.code in str(info.value)
    assert deciding_rule(info.value).startswith(case.rule)
    assert fake.vm_names() == []  # nothing of a failed launch is left behind


def test_every_row_of_the_table_is_exercised() -> None:
    exercised = {case.rule for case in CASES} | {"timeout"}  # the unreachable endpoint below
    for rule in (*RULES, *HTTP_FALLBACK):
        assert any(rule.name.startswith(prefix) for prefix in exercised), rule.name


@dataclass(frozen=True)
class CallCase:
    """An error on another call than the VM PUT."""

    name: str
    op: str
    code: str
    expected: type[ProviderError]
    call: Callable[[AzureProvider], object]


def _launched(provider: AzureProvider) -> Any:
    return provider.launch(pick(provider), spec(), request_id="r-call")


CALL_CASES: list[CallCase] = [
    CallCase(
        "skus-5xx",
        "resourceSkus.list",
        "InternalServerError",
        TransientError,
        lambda p: p.offers(ResourceRequest()),
    ),
    CallCase(
        "skus-403",
        "resourceSkus.list",
        "AuthorizationFailed",
        AuthError,
        lambda p: p.offers(ResourceRequest()),
    ),
    CallCase("usages-403", "usage.list", "AuthorizationFailed", AuthError, _launched),
    CallCase(
        "check-401", "usage.list", "InvalidAuthenticationToken", AuthError, lambda p: p.check()
    ),
    CallCase("get-503", "virtualMachines.get", "ServiceUnavailable", TransientError, _launched),
    CallCase(
        "ppg-409",
        "proximityPlacementGroups.createOrUpdate",
        "AllocationFailed",
        CapacityError,
        lambda p: p.launch(pick(p), spec(nodes=2), request_id="r-gang"),
    ),
    CallCase(
        "list-429",
        "virtualMachines.list",
        "TooManyRequests",
        TransientError,
        lambda p: p.status([_launched(p)]),
    ),
    CallCase(
        "list-all-403",
        "virtualMachines.listAll",
        "AuthorizationFailed",
        AuthError,
        lambda p: p.owned("x"),
    ),
]


@pytest.mark.parametrize("case", CALL_CASES, ids=lambda c: c.name)
def test_errors_of_other_calls_are_translated(fake: FakeArm, case: CallCase) -> None:
    provider = make_provider(fake)
    fake.fail_next(case.op, case.code, status=409 if case.code == "AllocationFailed" else None)
    with pytest.raises(ProviderError) as info:
        case.call(provider)
    assert type(info.value) is case.expected, str(info.value)


@pytest.mark.parametrize("in_operation", [False, True], ids=["answer", "lro"])
def test_a_failed_delete_is_transient(fake: FakeArm, in_operation: bool) -> None:
    provider = make_provider(fake)
    handle = _launched(provider)
    fake.fail_next(
        "virtualMachines.delete",
        "InternalExecutionError",
        status=None if in_operation else 500,
        in_operation=in_operation,
    )
    with pytest.raises(TransientError):
        provider.terminate(handle, request_id="t")


def test_unreachable_endpoint_is_transient(fake: FakeArm) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    provider = make_provider(fake, base_url="http://127.0.0.1:9")
    with pytest.raises(TransientError) as info:
        provider.offers(ResourceRequest())
    assert deciding_rule(info.value).startswith("timeout")


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
    "exc",
    [
        ServiceRequestError("connection refused"),
        ServiceResponseError("connection reset"),
        TimeoutError("read timed out"),
        HttpResponseError("no body"),
    ],
    ids=["request", "response", "timeout", "bare"],
)
def test_transport_errors_are_transient(exc: Exception) -> None:
    assert type(ERRORS.translate(exc, region="eastus")) is TransientError


def test_policy_denial_leaves_the_provider_usable(fake: FakeArm) -> None:
    provider = make_provider(fake, zonal=True)
    fake.fail_next("virtualMachines.createOrUpdate", "RequestDisallowedByPolicy")
    with pytest.raises(QuotaError, match="RequestDisallowedByPolicy"):
        provider.launch(pick(provider, True), spec(), request_id="r-p")
    provider.check()  # nothing about the credential


def test_translated_errors_pickle_with_their_scope() -> None:
    # Errors cross the Ray boundary by pickling.
    err = ERRORS.translate(HttpResponseError("x"), region="eastus", zone="eastus-1")
    assert isinstance(err, ProviderError)
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.scope) == (type(err), err.scope)
