"""Translation of Google Cloud errors into the multicloud ``ProviderError`` family.

Google reports failures in three shapes, and all three go through the same table:

* an HTTP error answered by the REST API (``google.api_core.exceptions.GoogleAPICallError``
  with ``code`` = HTTP status and ``errors`` = the Compute ``error.errors[]`` list of
  ``{reason, message}``, or the ``status`` / ``details`` of the TPU API's ``google.rpc.Status``);
* an error inside a finished Compute long-running operation (``Operation.error.errors[].code``
  such as ``ZONE_RESOURCE_POOL_EXHAUSTED`` plus ``httpErrorStatusCode``);
* an error inside a finished TPU operation or a FAILED queued resource (a ``google.rpc.Status``
  with a numeric gRPC code and a message such as "There is no more capacity in the zone").

Each is reduced to a :class:`Failure` (HTTP-ish status, symbolic codes, message) and matched
against :data:`RULES`, first match wins. Nothing in here imports a cloud SDK at module level,
so the table can be read and tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
    error_scope,
)

__all__ = [
    "GRPC_TO_HTTP",
    "RULES",
    "Failure",
    "Rule",
    "classify",
    "failure_from_exception",
    "failure_from_operation",
    "failure_from_status",
    "translate",
]

# gRPC canonical codes (google.rpc.Code) to the HTTP status the REST mapping uses for them.
GRPC_TO_HTTP: dict[int, int] = {
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


@dataclass(frozen=True)
class Failure:
    """A Google Cloud failure reduced to what the rules look at.

    Attributes:
        status: HTTP status (or the HTTP equivalent of a gRPC code); None for network errors.
        codes: Symbolic codes and reasons, upper-cased (``ZONE_RESOURCE_POOL_EXHAUSTED``,
            ``QUOTAEXCEEDED``, ``RESOURCE_EXHAUSTED`` ...).
        message: Human message.
        timeout: True for a timeout or a dropped connection.
    """

    status: int | None
    codes: frozenset[str] = field(default_factory=frozenset)
    message: str = ""
    timeout: bool = False

    def has(self, *codes: str) -> bool:
        """Return True if any of ``codes`` (case-insensitive) is among the failure's codes."""
        return any(c.upper() in self.codes for c in codes)

    def says(self, pattern: str) -> bool:
        """Return True if the message matches ``pattern`` (case-insensitive regex)."""
        return re.search(pattern, self.message, re.IGNORECASE) is not None


Scope = str
"""``"zone"``, ``"region"`` or ``"provider"``: how wide the error's scope is."""


@dataclass(frozen=True)
class Rule:
    """One row of the translation table.

    Attributes:
        name: What the row recognises (for docs and test ids).
        matches: Predicate over a failure.
        error: ProviderError subclass raised.
        scope: Width of the error's scope.
    """

    name: str
    matches: Callable[[Failure], bool]
    error: type[ProviderError]
    scope: Scope


_CAPACITY_CODES = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "STOCKOUT",
    "RESOURCE_AVAILABILITY",
)
_QUOTA_CODES = ("QUOTA_EXCEEDED", "QUOTAEXCEEDED")
_RATE_CODES = ("RATELIMITEXCEEDED", "USERRATELIMITEXCEEDED", "RATE_LIMIT_EXCEEDED")


def _is_quota(f: Failure) -> bool:
    return f.has(*_QUOTA_CODES) or (f.status in (403, 429) and f.says(r"\bquota\b"))


RULES: tuple[Rule, ...] = (
    # Capacity first: a stockout can arrive with HTTP 403/429/503 or inside an operation, and
    # it must fail over to another zone, never look like an auth or throttling problem.
    Rule(
        "zone resource pool exhausted / stockout",
        lambda f: f.has(*_CAPACITY_CODES) or f.says(r"\bSTOCKOUT\b"),
        CapacityError,
        "zone",
    ),
    Rule(
        "TPU: no more capacity in the zone",
        lambda f: f.says(r"no more capacity in the zone|does not have enough resources"),
        CapacityError,
        "zone",
    ),
    # Compute answers an exhausted quota with 403 quotaExceeded (or QUOTA_EXCEEDED inside
    # the operation); the TPU API with 429 RESOURCE_EXHAUSTED naming a quota limit. A
    # project-wide quota (GPUS_ALL_REGIONS, "Limit: 0.0 globally") is exhausted in every
    # region at once: its scope is the whole provider, or the scheduler walks region by region.
    Rule(
        "global quota exceeded",
        lambda f: _is_quota(f) and f.says(r"_ALL_REGIONS\b|\bglobally\b"),
        QuotaError,
        "provider",
    ),
    Rule("quota exceeded", _is_quota, QuotaError, "region"),
    Rule("rate limited", lambda f: f.has(*_RATE_CODES), TransientError, "zone"),
    Rule("unauthenticated (401)", lambda f: f.status == 401, AuthError, "provider"),
    Rule("permission denied (403)", lambda f: f.status == 403, AuthError, "provider"),
    Rule("throttled (429)", lambda f: f.status == 429, TransientError, "zone"),
    Rule("timeout / connection", lambda f: f.timeout, TransientError, "zone"),
    Rule(
        "server error (5xx)",
        lambda f: f.status is not None and f.status >= 500,
        TransientError,
        "zone",
    ),
    Rule(
        "bad request (400, other 4xx)",
        lambda f: f.status is not None and 400 <= f.status < 500,
        InvalidRequestError,
        "zone",
    ),
)
"""The translation table, first match wins; see docs/providers/gcp.md for the same table."""


def classify(failure: Failure) -> Rule | None:
    """Return the first rule matching ``failure``, or None."""
    return next((rule for rule in RULES if rule.matches(failure)), None)


def translate(
    failure: Failure,
    *,
    provider: str,
    region: str | None = None,
    zone: str | None = None,
    what: str = "",
) -> ProviderError:
    """Build the ProviderError for a failure.

    Args:
        failure: The failure.
        provider: Fleet provider name (the first part of every scope).
        region: Region the call was about, when known.
        zone: Zone the call was about, when known.
        what: Short description of the call, prefixed to the message.

    Returns:
        The typed error; an unmatched failure becomes a TransientError (retry with backoff,
        then fail over), because it says nothing about the request being wrong.
    """
    rule = classify(failure)
    cls: type[ProviderError] = rule.error if rule else TransientError
    width = rule.scope if rule else "zone"
    if zone and not region:
        region = zone.rsplit("-", 1)[0]  # GCP zones are <region>-<letter>
    if width in ("zone", "region"):
        scope = error_scope(provider, region, zone if width == "zone" else None)
    else:
        scope = error_scope(provider)
    codes = ",".join(sorted(failure.codes))
    detail = f"{failure.status or '-'} {codes}".strip()
    prefix = f"{what}: " if what else ""
    return cls(f"{prefix}{failure.message} [{detail}]", provider=provider, scope=scope)


def _upper(values: Iterable[Any]) -> frozenset[str]:
    return frozenset(str(v).upper() for v in values if v)


def failure_from_exception(exc: BaseException) -> Failure:
    """Reduce an exception raised by a Google client library (or its transport) to a Failure.

    Args:
        exc: The exception.

    Returns:
        The failure; unknown exceptions become a status-less failure carrying their text.
    """
    # Imported here so that this module (and its table) stays importable without the SDK.
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.GoogleAPICallError):
        codes: list[Any] = []
        for item in exc.errors or ():
            if isinstance(item, dict):
                codes.extend((item.get("reason"), item.get("code")))
        codes.append(exc.reason)
        grpc_code = getattr(exc, "grpc_status_code", None)
        if grpc_code is not None:
            codes.append(getattr(grpc_code, "name", grpc_code))
        for detail in exc.details or ():
            if isinstance(detail, dict):
                codes.append(detail.get("reason"))
                for violation in detail.get("violations", ()) or ():
                    if isinstance(violation, dict):
                        codes.append(violation.get("type"))
        status = exc.code if isinstance(exc.code, int) else None
        timeout = isinstance(exc, gexc.DeadlineExceeded)
        return Failure(status, _upper(codes), str(exc.message or exc), timeout)
    if isinstance(exc, gexc.RetryError):
        return Failure(None, frozenset(), str(exc), True)
    if isinstance(exc, (auth_exc.RefreshError, auth_exc.DefaultCredentialsError)):
        return Failure(401, frozenset({"UNAUTHENTICATED"}), str(exc))
    if isinstance(exc, (requests.Timeout, requests.ConnectionError, TimeoutError)):
        return Failure(None, frozenset(), str(exc) or type(exc).__name__, True)
    if isinstance(exc, ConnectionError):
        return Failure(None, frozenset(), str(exc) or type(exc).__name__, True)
    return Failure(None, frozenset(), f"{type(exc).__name__}: {exc}")


def failure_from_operation(
    errors: Iterable[tuple[str, str]], http_status: int | None, http_message: str = ""
) -> Failure:
    """Reduce the error of a finished Compute operation to a Failure.

    Args:
        errors: ``(code, message)`` of each ``Operation.error.errors[]`` entry.
        http_status: ``Operation.httpErrorStatusCode`` (0 or None when unset).
        http_message: ``Operation.httpErrorMessage``.

    Returns:
        The failure.
    """
    pairs = list(errors)
    message = "; ".join(m for _, m in pairs if m) or http_message or "operation failed"
    codes = _upper([c for c, _ in pairs] + ([http_message] if http_message else []))
    return Failure(http_status or None, codes, message)


def failure_from_status(code: int, message: str, reasons: Iterable[str] = ()) -> Failure:
    """Reduce a ``google.rpc.Status`` (TPU operation error, FAILED queued resource).

    Args:
        code: gRPC canonical code.
        message: Status message.
        reasons: ``ErrorInfo.reason`` values found in the status details.

    Returns:
        The failure, with the HTTP equivalent of ``code`` as its status.
    """
    return Failure(GRPC_TO_HTTP.get(code, 500), _upper(reasons), message)
