"""What Google's errors mean, on the kit's one error boundary.

Google reports a failure in three shapes, each reduced to a kit ``Failure`` here:

* an HTTP error answered by the REST API (``google.api_core.exceptions.GoogleAPICallError``:
  ``code`` = HTTP status, ``errors`` = Compute's ``error.errors[]`` of ``{reason, message}``,
  ``details`` = the TPU API's ``google.rpc.Status`` details) — :func:`failure_from_exception`;
* an error inside a finished Compute operation (``Operation.error.errors[].code`` such as
  ``ZONE_RESOURCE_POOL_EXHAUSTED``, plus ``httpErrorStatusCode``) — :func:`failure_from_operation`;
* an error inside a finished TPU operation or a FAILED queued resource (a ``google.rpc.Status``
  with a numeric gRPC code, "There is no more capacity in the zone ...") —
  :func:`failure_from_status`.

:data:`RULES` keeps only what is Google's; the HTTP fallback (401/403, 408/409/429/5xx,
timeouts, other 4xx) is the kit's (docs/architecture.md, "Adapters").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from multicloud.adapterkit import Failure, Rule, codes
from multicloud.errors import CapacityError, QuotaError, TransientError

__all__ = [
    "BUGS",
    "RULES",
    "failure_from_exception",
    "failure_from_operation",
    "failure_from_status",
]

# gRPC canonical codes (google.rpc.Code) to the HTTP status Google's REST mapping gives them.
_GRPC_TO_HTTP = {
    1: 499,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    14: 503,
    16: 401,
}

BUGS: tuple[type[BaseException], ...] = (TypeError, AttributeError, NameError, AssertionError)
"""Our own programming errors: never translated, they propagate."""

_CAPACITY = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "STOCKOUT",
    "RESOURCE_AVAILABILITY",
)


def _quota(f: Failure) -> bool:
    # Compute: 403 quotaExceeded, or QUOTA_EXCEEDED inside the operation; TPU: 429
    # RESOURCE_EXHAUSTED naming a quota limit.
    return f.has("QUOTA_EXCEEDED", "QUOTAEXCEEDED") or (
        f.status in (403, 429) and f.says(r"\bquota\b")
    )


RULES: tuple[Rule, ...] = (
    # Capacity first: a stockout arrives with 403/429/503 or inside an operation, and must
    # fail over to another zone, never read as an auth or throttling problem.
    Rule(
        "zone resource pool exhausted / stockout",
        lambda f: f.has(*_CAPACITY) or f.says(r"\bSTOCKOUT\b"),
        CapacityError,
        "zone",
    ),
    Rule(
        "TPU: no more capacity in the zone",
        lambda f: f.says(r"no more capacity in the zone|does not have enough resources"),
        CapacityError,
        "zone",
    ),
    # A project-wide quota (GPUS_ALL_REGIONS, "Limit: 0.0 globally") is exhausted in every
    # region at once: the whole provider, or the scheduler walks region by region.
    Rule(
        "global quota exceeded",
        lambda f: _quota(f) and f.says(r"_ALL_REGIONS\b|\bglobally\b"),
        QuotaError,
        "provider",
    ),
    Rule("quota exceeded", _quota, QuotaError, "region"),
    # Compute throttles with 403 rateLimitExceeded, which the kit would read as auth.
    Rule(
        "rate limited",
        lambda f: f.has("RATELIMITEXCEEDED", "USERRATELIMITEXCEEDED", "RATE_LIMIT_EXCEEDED"),
        TransientError,
        "zone",
    ),
)
"""Google's own rows, first match wins; then the kit's HTTP fallback (docs/providers/gcp.md)."""


def failure_from_exception(exc: BaseException) -> Failure | None:
    """Reduce what a Google client library (or its transport) raised to a Failure.

    Args:
        exc: The exception.

    Returns:
        The failure; None for our own programming errors (:data:`BUGS`), which propagate.
    """
    if isinstance(exc, BUGS):
        return None
    # Imported here: the table above stays importable (and testable) without the SDK.
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.GoogleAPICallError):
        found: list[Any] = [exc.reason]
        for item in exc.errors or ():
            if isinstance(item, dict):
                found += [item.get("reason"), item.get("code")]
        grpc_code = getattr(exc, "grpc_status_code", None)
        found.append(getattr(grpc_code, "name", grpc_code))
        for detail in exc.details or ():
            if isinstance(detail, dict):
                found.append(detail.get("reason"))
                violations = detail.get("violations") or ()
                found += [v.get("type") for v in violations if isinstance(v, dict)]
        status = exc.code if isinstance(exc.code, int) else None
        timeout = isinstance(exc, gexc.DeadlineExceeded)
        return Failure(status, codes(*found), str(exc.message or exc), timeout)
    if isinstance(exc, (auth_exc.RefreshError, auth_exc.DefaultCredentialsError)):
        return Failure(401, codes("UNAUTHENTICATED"), str(exc))
    passing = (gexc.RetryError, requests.RequestException, ConnectionError, TimeoutError)
    timeout = isinstance(exc, passing)
    return Failure(None, frozenset(), f"{type(exc).__name__}: {exc}", timeout)


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
    return Failure(http_status or None, codes(*(c for c, _ in pairs), http_message), message)


def failure_from_status(code: int, message: str) -> Failure:
    """Reduce a ``google.rpc.Status`` (TPU operation error, FAILED queued resource).

    Args:
        code: gRPC canonical code.
        message: Status message.

    Returns:
        The failure, with the HTTP equivalent of ``code`` as its status.
    """
    return Failure(_GRPC_TO_HTTP.get(code, 500), frozenset(), message)
