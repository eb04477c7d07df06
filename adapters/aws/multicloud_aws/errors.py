"""The table that turns AWS SDK errors into multicloud's typed ``ProviderError`` family.

DESIGN.md §3 says SDK exceptions never leak past an adapter; every boto3 call of
``AWSProvider`` goes through :func:`aws_errors`, which looks the AWS error code up in
:data:`ERROR_TABLE` (exact codes first, then prefixes such as ``InvalidParameter``), falls back
on the HTTP status (5xx and 429 are transient, 401/403 are auth problems, other 4xx are invalid
requests) and turns botocore's own connection and timeout failures into ``TransientError``.

The *scope* of the error says how far the scheduler should fail over: a capacity error applies
to one zone (``aws/us-east-1/use1-az4``), a quota error to a whole region (``aws/us-east-1``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
    error_scope,
)

__all__ = ["ERROR_TABLE", "PREFIX_TABLE", "aws_errors", "error_class", "translate"]

ERROR_TABLE: dict[str, tuple[type[ProviderError], str]] = {
    # Capacity: fail over to another zone.
    "InsufficientInstanceCapacity": (CapacityError, "zone"),
    "InsufficientCapacityOnHost": (CapacityError, "zone"),
    "InsufficientHostCapacity": (CapacityError, "zone"),
    "InsufficientReservedInstanceCapacity": (CapacityError, "zone"),
    "ReservationCapacityExceeded": (CapacityError, "zone"),
    "SpotMaxPriceTooLow": (CapacityError, "zone"),
    # Quota: the whole region is out for this family.
    "VcpuLimitExceeded": (QuotaError, "region"),
    "MaxSpotInstanceCountExceeded": (QuotaError, "region"),
    "InstanceLimitExceeded": (QuotaError, "region"),
    "PlacementGroupLimitExceeded": (QuotaError, "region"),  # 500 groups per region
    # Credentials and permissions.
    "AuthFailure": (AuthError, "region"),
    "UnauthorizedOperation": (AuthError, "region"),
    "OptInRequired": (AuthError, "region"),
    "AccessDenied": (AuthError, "region"),
    "AccessDeniedException": (AuthError, "region"),
    "UnrecognizedClientException": (AuthError, "region"),
    "InvalidClientTokenId": (AuthError, "region"),
    "ExpiredToken": (AuthError, "region"),
    "ExpiredTokenException": (AuthError, "region"),
    "SignatureDoesNotMatch": (AuthError, "region"),
    # The request itself is wrong; no failover helps.
    "IdempotentParameterMismatch": (InvalidRequestError, "region"),
    "MissingParameter": (InvalidRequestError, "region"),
    "InvalidAMIID.NotFound": (InvalidRequestError, "region"),
    "InvalidAMIID.Malformed": (InvalidRequestError, "region"),
    "InvalidSubnetID.NotFound": (InvalidRequestError, "region"),
    "InvalidGroup.NotFound": (InvalidRequestError, "region"),
    "InvalidKeyPair.NotFound": (InvalidRequestError, "region"),
    "Unsupported": (InvalidRequestError, "zone"),
    "ValidationException": (InvalidRequestError, "region"),
    "ParameterNotFound": (InvalidRequestError, "region"),
    # Passing trouble: retry the same offer with backoff.
    "RequestLimitExceeded": (TransientError, "region"),
    "Throttling": (TransientError, "region"),
    "ThrottlingException": (TransientError, "region"),
    "TooManyRequestsException": (TransientError, "region"),
    "InternalError": (TransientError, "region"),
    "InternalFailure": (TransientError, "region"),
    "ServiceUnavailable": (TransientError, "region"),
    "ServiceUnavailableException": (TransientError, "region"),
    "Unavailable": (TransientError, "region"),
}
"""AWS error code → (multicloud error class, scope: ``zone`` or ``region``)."""

PREFIX_TABLE: tuple[tuple[str, type[ProviderError], str], ...] = (
    ("InvalidParameter", InvalidRequestError, "region"),
    ("InvalidInstanceType", InvalidRequestError, "region"),
    ("InvalidPlacementGroup", InvalidRequestError, "region"),
    ("InvalidCapacityReservation", InvalidRequestError, "region"),
    ("InvalidUserData", InvalidRequestError, "region"),
)
"""Code prefixes (e.g. ``InvalidParameterValue``, ``InvalidParameterCombination``)."""


def error_class(code: str, http_status: int | None = None) -> tuple[type[ProviderError], str]:
    """Look an AWS error code up.

    Args:
        code: The AWS error code (``Error.Code`` of the response).
        http_status: HTTP status of the response, used when the code is not in the tables.

    Returns:
        The error class and its scope level (``"zone"`` or ``"region"``).
    """
    if code in ERROR_TABLE:
        return ERROR_TABLE[code]
    for prefix, cls, level in PREFIX_TABLE:
        if code.startswith(prefix):
            return cls, level
    if http_status is not None:
        if http_status >= 500 or http_status == 429:
            return TransientError, "region"
        if http_status in (401, 403):
            return AuthError, "region"
    if code.startswith("Invalid") or (http_status is not None and 400 <= http_status < 500):
        return InvalidRequestError, "region"
    # An unknown code with no status to go by: failing over is the safest default.
    return TransientError, "region"


def _scope(provider: str, region: str, zone: str | None, level: str) -> str:
    return error_scope(provider, region, zone if level == "zone" else None)


def translate(
    exc: BaseException, *, provider: str, region: str = "", zone: str | None = None
) -> ProviderError:
    """Turn a botocore exception into the matching ``ProviderError``.

    Args:
        exc: What boto3 raised.
        provider: Fleet provider name (stamped on the error and its scope).
        region: Region of the call.
        zone: Zone of the call, for zone-scoped errors.

    Returns:
        The typed error; the caller raises it ``from exc``.
    """
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        error: dict[str, Any] = exc.response.get("Error", {}) or {}
        meta: dict[str, Any] = exc.response.get("ResponseMetadata", {}) or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or exc)
        status = meta.get("HTTPStatusCode")
        cls, level = error_class(code, int(status) if status is not None else None)
        op = getattr(exc, "operation_name", "") or "call"
        return cls(
            f"{op} failed: {code}: {message}",
            provider=provider,
            scope=_scope(provider, region, zone, level),
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AuthError(f"no usable AWS credentials: {exc}", provider=provider, scope=provider)
    if isinstance(exc, NoRegionError):
        return InvalidRequestError(f"no AWS region: {exc}", provider=provider, scope=provider)
    if isinstance(exc, (EndpointConnectionError, ConnectionError, ReadTimeoutError)):
        return TransientError(
            f"AWS unreachable: {exc}", provider=provider, scope=_scope(provider, region, None, "")
        )
    if isinstance(exc, BotoCoreError):
        return TransientError(
            f"AWS SDK error: {exc}", provider=provider, scope=_scope(provider, region, None, "")
        )
    return TransientError(
        f"unexpected error talking to AWS: {type(exc).__name__}: {exc}",
        provider=provider,
        scope=_scope(provider, region, None, ""),
    )


@contextlib.contextmanager
def aws_errors(provider: str, region: str = "", zone: str | None = None) -> Iterator[None]:
    """Translate every botocore exception raised inside the block.

    Args:
        provider: Fleet provider name.
        region: Region of the calls in the block.
        zone: Zone of the calls, for zone-scoped errors.

    Yields:
        Nothing; the block runs as is.

    Raises:
        ProviderError: The translation of any ``BotoCoreError``, ``ClientError`` or
            ``ResponseParserError``.
    """
    try:
        yield
    except (BotoCoreError, ClientError, ResponseParserError) as exc:
        # ResponseParserError (an HTML error page from a proxy, a truncated body) is not a
        # BotoCoreError; it says nothing about the request, so it is retried as transient.
        raise translate(exc, provider=provider, region=region, zone=zone) from exc
