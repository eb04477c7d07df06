"""Azure's rows of the error table: what ARM codes mean, on top of the kit's HTTP fallback.

Azure reports a failure in one of three places, and all three become one kit ``Failure``:

- the HTTP answer to a request (``HttpResponseError`` with the ARM body
  ``{"error": {"code", "message", "details": [...]}}``);
- a long-running operation that ended ``Failed``: the poller raises ``HttpResponseError`` whose
  response is the last poll, ``{"status": "Failed", "error": {...}}`` with HTTP 200 — such a
  failure has no status (``None``), so the HTTP fallback leaves it to these rules (or to the
  kit's "transient" default);
- the transport or the credential (``ServiceRequestError``, ``ClientAuthenticationError``).

ARM wraps the telling code in an outer one more often than not (``InvalidTemplateDeployment``
holding ``QuotaExceeded``), so a failure's codes are every code of the error tree and its
message joins their messages. See docs/architecture.md ("Adapters").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from multicloud.adapterkit import ErrorBoundary, Failure, Rule, codes
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
)

__all__ = ["CAPACITY_CODES", "RULES", "boundary", "lost_place_scope", "to_failure"]

CAPACITY_CODES = (
    "AllocationFailed",
    "ZonalAllocationFailed",
    "SkuNotAvailable",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
)
""""No room for this VM size here now"."""

_AUTH_CODES = (
    "AuthorizationFailed",
    "AuthenticationFailed",
    "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenTenant",
    "ExpiredAuthenticationToken",
    "LinkedAuthorizationFailed",
)

# Codes of a failed long-running operation (no HTTP status) that no retry can fix.
_INVALID_CODES = (
    "InvalidParameter",
    "BadRequest",
    "InvalidRequestFormat",
    "InvalidRequestContent",
    "PropertyChangeNotAllowed",
    "ImageNotFound",
    "PlatformImageNotFound",
    "ResourceGroupNotFound",
    "InvalidResourceReference",
    "NotFound",
)


def _quota(f: Failure) -> bool:
    # OperationNotAllowed also refuses unrelated things (a disk in use); only quota counts.
    return f.has("QuotaExceeded") or (f.has("OperationNotAllowed") and f.says("quota"))


RULES: tuple[Rule, ...] = (
    Rule(
        "capacity: " + ", ".join(CAPACITY_CODES),
        lambda f: f.has(*CAPACITY_CODES),
        CapacityError,
        "zone",
    ),
    Rule("quota: QuotaExceeded, OperationNotAllowed about quota", _quota, QuotaError),
    # An Azure Policy assignment (allowed locations or sizes, required tags) refused the
    # request: a 403 that says nothing about the credential and is usually scoped to some
    # regions. Block the region and fail over, as for quota, rather than an AuthError that
    # disables the whole provider.
    Rule(
        "Azure Policy denial: RequestDisallowedByPolicy",
        lambda f: f.has("RequestDisallowedByPolicy"),
        QuotaError,
    ),
    Rule(
        "authorization: " + ", ".join(_AUTH_CODES),
        lambda f: f.has(*_AUTH_CODES),
        AuthError,
        "provider",
    ),
    Rule(
        "invalid request in a failed operation: InvalidParameter, …",
        lambda f: f.status is None and f.has(*_INVALID_CODES),
        InvalidRequestError,
    ),
)
"""Azure's own rows, tried before the kit's HTTP fallback."""


def _tree(raw: Any) -> Iterator[tuple[str, str]]:
    """Yield ``(code, message)`` of an ARM error body and every nested error, depth first."""
    if not isinstance(raw, Mapping):
        return
    # ARM bodies are {"error": {...}}; LRO polls {"status": "Failed", "error": {...}}.
    inner = raw.get("error", raw)
    if not isinstance(inner, Mapping) or "code" not in inner:
        return
    message = str(inner.get("message") or "")
    yield str(inner.get("code") or ""), message
    for child in inner.get("details") or []:
        yield from _tree(child)
    # InvalidTemplateDeployment and friends may carry the real error as JSON in the message.
    if message.lstrip().startswith("{"):
        try:
            embedded = json.loads(message)
        except ValueError:
            embedded = None
        yield from _tree(embedded)


def _body(exc: HttpResponseError) -> Any:
    try:
        text = exc.response.text() if exc.response is not None else ""
        return json.loads(text) if text else None
    except Exception:  # a streamed body already consumed, or not JSON
        return None


def _odata(error: Any) -> Iterator[tuple[str, str]]:
    if getattr(error, "code", None):
        yield str(error.code), str(getattr(error, "message", "") or "")
        for child in getattr(error, "details", None) or []:
            yield from _odata(child)


def to_failure(exc: BaseException) -> Failure | None:
    """Reduce an Azure SDK (or transport) exception to what the rule table looks at.

    Args:
        exc: What the SDK raised.

    Returns:
        The failure, or None for an exception that is no Azure failure (a programming error).
    """
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError)):
        return Failure(None, message=str(exc).splitlines()[0] if str(exc) else "", timeout=True)
    if isinstance(exc, HttpResponseError):
        tree = list(_tree(_body(exc))) or list(_odata(getattr(exc, "error", None)))
        status = exc.status_code
        if isinstance(exc, ClientAuthenticationError) and not status:
            status = 401  # a credential that could not get a token: no answer from ARM at all
        if status is not None and 200 <= status < 300:
            status = None  # a long-running operation that ended Failed (the poll answered 200)
        text = "; ".join(f"{c}: {m}".strip() for c, m in tree) or str(exc).split("\n")[0]
        return Failure(status, codes(*(c for c, _ in tree)), text[:600])
    if isinstance(exc, (AzureError, OSError)):
        return Failure(
            None, message=f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, OSError)
        )
    return None


def boundary(fleet_name: str) -> ErrorBoundary:
    """Return the error boundary of one Azure fleet entry.

    Args:
        fleet_name: Fleet provider name.

    Returns:
        Azure's rules, then the kit's HTTP fallback.
    """
    return ErrorBoundary(fleet_name, RULES, to_failure, catch=(AzureError, OSError))


def lost_place_scope(
    errors: ErrorBoundary, code: str, message: str, *, region: str, zone: str | None
) -> str | None:
    """Return the scope to block when an accepted VM later failed for want of room.

    A VM whose creation ARM accepted can still end ``ProvisioningState/failed/<code>`` once
    ``launch`` has stopped waiting. When the rule table reads ``<code>`` as capacity or quota,
    the workload lost its place rather than failed.

    Args:
        errors: The fleet entry's boundary.
        code: The failure code (e.g. ``AllocationFailed``).
        message: Its message.
        region: Region of the VM.
        zone: Zone of the VM, as offers name it.

    Returns:
        The scope (the zone's for capacity, the region's for quota), or None.
    """
    error: ProviderError = errors.error(
        Failure(None, codes(code), message), region=region, zone=zone
    )
    if isinstance(error, (CapacityError, QuotaError)):
        return error.scope
    return None
