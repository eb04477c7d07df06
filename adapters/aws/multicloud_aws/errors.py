"""What AWS's own error codes mean: one rule table on the kit's error boundary.

Every boto3 call of the adapter runs inside :func:`boundary`'s context manager. A botocore
failure is reduced to a :class:`~multicloud.adapterkit.Failure` (HTTP status, AWS error code,
message) and matched against :data:`RULES` first — only what AWS says differently from its HTTP
status — then against the kit's HTTP fallback, shared by every cloud (401/403 auth,
408/409/429/5xx and timeouts transient, other 4xx invalid). docs/providers/aws.md lists the
table.
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from multicloud.adapterkit import ErrorBoundary, Failure, Rule, codes
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)

__all__ = ["RULES", "aws_code", "boundary", "to_failure"]

_NO_CREDENTIALS = "MULTICLOUD.NO-CREDENTIALS"
_NO_REGION = "MULTICLOUD.NO-REGION"


def _any(*names: str) -> Callable[[Failure], bool]:
    return lambda f: f.has(*names)


RULES: tuple[Rule, ...] = (
    # EC2 answers these with HTTP 500: without a rule they would read as transient.
    Rule(
        "no capacity in the zone (InsufficientInstanceCapacity, InsufficientCapacityOnHost, "
        "InsufficientHostCapacity, InsufficientReservedInstanceCapacity, "
        "ReservationCapacityExceeded, SpotMaxPriceTooLow)",
        _any(
            "InsufficientInstanceCapacity",
            "InsufficientCapacityOnHost",
            "InsufficientHostCapacity",
            "InsufficientReservedInstanceCapacity",
            "ReservationCapacityExceeded",
            "SpotMaxPriceTooLow",
        ),
        CapacityError,
        "zone",
    ),
    Rule(
        "quota (VcpuLimitExceeded, MaxSpotInstanceCountExceeded, InstanceLimitExceeded, "
        "PlacementGroupLimitExceeded)",
        _any(
            "VcpuLimitExceeded",
            "MaxSpotInstanceCountExceeded",
            "InstanceLimitExceeded",
            "PlacementGroupLimitExceeded",
        ),
        QuotaError,
        "region",
    ),
    Rule("region not enabled for the account (OptInRequired)", _any("OptInRequired"), AuthError),
    # JSON services (Service Quotas, STS) answer refused credentials with HTTP 400.
    Rule(
        "credentials missing, expired or refused (AuthFailure, AccessDenied*, ExpiredToken*, "
        "UnrecognizedClientException, InvalidClientTokenId, SignatureDoesNotMatch)",
        _any(
            _NO_CREDENTIALS,
            "AuthFailure",
            "UnauthorizedOperation",
            "AccessDenied",
            "AccessDeniedException",
            "ExpiredToken",
            "ExpiredTokenException",
            "RequestExpired",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
        ),
        AuthError,
        "provider",
    ),
    # Query and JSON services throttle with HTTP 400 as often as with 429/503.
    Rule(
        "throttled (RequestLimitExceeded, Throttling, ThrottlingException, "
        "TooManyRequestsException)",
        _any(
            "RequestLimitExceeded",
            "Throttling",
            "ThrottlingException",
            "TooManyRequestsException",
        ),
        TransientError,
        "region",
    ),
    Rule("no region configured", _any(_NO_REGION), InvalidRequestError, "provider"),
)
"""AWS's rules, tried before the kit's HTTP fallback."""


def to_failure(exc: BaseException) -> Failure | None:
    """Reduce a botocore exception to what the rules look at.

    Args:
        exc: What boto3 raised.

    Returns:
        The failure; None for an exception that is not the SDK's (it passes unchanged).
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "")
        message = f"{exc.operation_name} failed: {code}: {error.get('Message') or exc}"
        return Failure(int(status) if status else None, codes(code), message)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Failure(None, codes(_NO_CREDENTIALS), f"no usable AWS credentials: {exc}")
    if isinstance(exc, NoRegionError):
        return Failure(None, codes(_NO_REGION), f"no AWS region: {exc}")
    if isinstance(
        exc, (EndpointConnectionError, ConnectionError, ReadTimeoutError, ConnectTimeoutError)
    ):
        return Failure(None, message=f"AWS unreachable: {exc}", timeout=True)
    if isinstance(exc, (BotoCoreError, ResponseParserError)):
        # An HTML page from a proxy or a cut body says nothing about the request: retried.
        return Failure(None, message=f"AWS SDK error: {exc}")
    return None


def boundary(fleet_name: str) -> ErrorBoundary:
    """Return the adapter's error boundary.

    Args:
        fleet_name: Fleet provider name (stamped on every error).

    Returns:
        The boundary; use it as ``with errors(region=..., zone=...): ...``.
    """
    return ErrorBoundary(
        fleet_name, RULES, to_failure, catch=(BotoCoreError, ClientError, ResponseParserError)
    )


def aws_code(exc: ProviderError) -> str:
    """Return the AWS error code behind a translated error ("" when it had none)."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        return str((cause.response.get("Error") or {}).get("Code") or "")
    return ""
