"""Translation of Azure SDK exceptions into the multicloud ``ProviderError`` family.

Azure reports a failure in one of three places, and all three end up here:

- the HTTP answer to a request (``HttpResponseError`` with the ARM error body
  ``{"error": {"code", "message", "details": [...]}}``);
- a long-running operation that ended ``Failed``: the poller raises ``HttpResponseError`` whose
  response is the last poll, ``{"status": "Failed", "error": {...}}`` with status 200;
- the transport or the credential (``ServiceRequestError``, ``ServiceResponseError``,
  ``ClientAuthenticationError``), with no ARM body at all.

ARM wraps the interesting code in an outer one more often than not (``InvalidTemplateDeployment``
holding ``QuotaExceeded``; ``OperationNotAllowed`` whose message is about quota), so the
classification looks at every code in the error tree, most telling first: capacity, then quota,
then an Azure Policy denial (a 403 that is scoped like quota, not an auth failure), then
authorisation, then the HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

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
    "AUTH_CODES",
    "CAPACITY_CODES",
    "POLICY_CODES",
    "QUOTA_CODES",
    "ArmError",
    "arm_error_of",
    "lost_place_scope",
    "translate",
]

CAPACITY_CODES: frozenset[str] = frozenset(
    {
        "allocationfailed",
        "zonalallocationfailed",
        "skunotavailable",
        "overconstrainedallocationrequest",
        "overconstrainedzonalallocationrequest",
    }
)
"""Codes meaning "no room for this VM size here now" (lower case)."""

QUOTA_CODES: frozenset[str] = frozenset({"quotaexceeded", "operationnotallowed"})
"""Codes that mean a quota limit (OperationNotAllowed only when its message says quota)."""

AUTH_CODES: frozenset[str] = frozenset(
    {
        "authorizationfailed",
        "authenticationfailed",
        "invalidauthenticationtoken",
        "invalidauthenticationtokentenant",
        "expiredauthenticationtoken",
        "linkedauthorizationfailed",
    }
)
"""Codes ARM uses for a missing or insufficient credential (lower case)."""

POLICY_CODES: frozenset[str] = frozenset({"requestdisallowedbypolicy"})
"""Codes of an Azure Policy denial (lower case): a 403 that is no credential problem."""

# Codes of a failed long-running operation that no retry can fix.
_INVALID_CODES: frozenset[str] = frozenset(
    {
        "invalidparameter",
        "badrequest",
        "invalidrequestformat",
        "invalidrequestcontent",
        "propertychangenotallowed",
        "imagenotfound",
        "platformimagenotfound",
        "resourcegroupnotfound",
        "invalidresourcereference",
        "notfound",
    }
)


@dataclass(frozen=True, slots=True)
class ArmError:
    """One node of an ARM error tree.

    Attributes:
        code: Error code, as ARM spells it.
        message: Human message.
        details: Nested errors.
    """

    code: str
    message: str
    details: tuple[ArmError, ...] = ()

    def walk(self) -> Iterator[ArmError]:
        """Yield this error and every nested one, depth first."""
        yield self
        for child in self.details:
            yield from child.walk()


def _parse_error(raw: Any) -> ArmError | None:
    if not isinstance(raw, Mapping):
        return None
    # ARM bodies are {"error": {...}}; LRO polls are {"status": "Failed", "error": {...}};
    # some services answer the inner object alone.
    inner = raw.get("error", raw)
    if not isinstance(inner, Mapping) or "code" not in inner:
        return None
    details_raw = inner.get("details") or []
    details: list[ArmError] = []
    if isinstance(details_raw, list):
        for item in details_raw:
            parsed = _parse_error(item)
            if parsed is not None:
                details.append(parsed)
    # InvalidTemplateDeployment and friends sometimes carry the real error as JSON text in
    # the message; take it when it parses.
    message = str(inner.get("message") or "")
    if message.lstrip().startswith("{"):
        try:
            embedded = _parse_error(json.loads(message))
        except ValueError:
            embedded = None
        if embedded is not None:
            details.append(embedded)
    return ArmError(str(inner.get("code") or ""), message, tuple(details))


def _body_of(exc: HttpResponseError) -> Any:
    response = exc.response
    if response is None:
        return None
    try:
        text = response.text()
    except Exception:  # a streamed body that was already consumed; fall back to exc.error
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _from_odata(error: Any) -> ArmError | None:
    code = getattr(error, "code", None)
    if not code:
        return None
    details = tuple(
        child
        for child in (_from_odata(d) for d in (getattr(error, "details", None) or []))
        if child is not None
    )
    return ArmError(str(code), str(getattr(error, "message", "") or ""), details)


def arm_error_of(exc: HttpResponseError) -> ArmError | None:
    """Return the ARM error tree an SDK exception carries.

    Args:
        exc: The exception.

    Returns:
        The parsed error, or None when the answer had no ARM error body.
    """
    parsed = _parse_error(_body_of(exc))
    if parsed is not None:
        return parsed
    return _from_odata(getattr(exc, "error", None))


def _is_quota(err: ArmError) -> bool:
    code = err.code.lower()
    if code == "quotaexceeded":
        return True
    # OperationNotAllowed is also used for unrelated refusals; only the quota ones count.
    return code == "operationnotallowed" and "quota" in err.message.lower()


def lost_place_scope(
    code: str,
    message: str = "",
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
) -> str | None:
    """Return the scope to block when an accepted VM later failed for want of room.

    A VM whose creation ARM accepted can still end ``ProvisioningState/failed/<code>`` once
    ``launch`` has stopped waiting. When ``<code>`` says capacity or quota, the workload lost
    its place rather than failed: the caller reports it re-placeable, blocking this scope.

    Args:
        code: The failure code (e.g. ``AllocationFailed``).
        message: Its message (``OperationNotAllowed`` is about quota only when this says so).
        provider: Fleet provider name.
        region: Region of the VM.
        zone: Zone of the VM, as offers name it, if any.

    Returns:
        The zone's scope for a capacity code, the region's for a quota code, None otherwise.
    """
    if code.lower() in CAPACITY_CODES:
        return error_scope(provider, region, zone)
    if _is_quota(ArmError(code, message)):
        return error_scope(provider, region)
    return None


def _summary(exc: BaseException, err: ArmError | None) -> str:
    if err is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    nested = [e for e in err.walk() if e is not err]
    text = f"{err.code}: {err.message}".strip()
    if nested:
        text += " (" + "; ".join(f"{e.code}: {e.message}" for e in nested[:3]) + ")"
    return text[:600]


def translate(
    exc: BaseException,
    *,
    provider: str,
    region: str | None = None,
    zone: str | None = None,
    doing: str = "",
) -> ProviderError:
    """Turn an Azure SDK (or transport) exception into a ``ProviderError``.

    Args:
        exc: The exception caught at the adapter boundary.
        provider: Fleet provider name, for the error and its scope.
        region: Region the call was about, if any.
        zone: Zone the call was about, if any (capacity errors are scoped to it).
        doing: Short description of the call, prefixed to the message.

    Returns:
        The typed error: ``CapacityError`` (scoped to the zone when there is one),
        ``QuotaError`` (scoped to the region), ``AuthError``, ``InvalidRequestError`` or
        ``TransientError``. Never the SDK exception itself.
    """
    region_scope = error_scope(provider, region)
    zone_scope = error_scope(provider, region, zone)
    prefix = f"{doing}: " if doing else ""

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, HttpResponseError):
        err = arm_error_of(exc)
        status = exc.status_code or 0
        message = prefix + _summary(exc, err)
        nodes = list(err.walk()) if err is not None else []
        codes = {e.code.lower() for e in nodes}
        if codes & CAPACITY_CODES:
            return CapacityError(message, provider=provider, scope=zone_scope)
        if any(_is_quota(e) for e in nodes):
            return QuotaError(message, provider=provider, scope=region_scope)
        if codes & POLICY_CODES:
            # An Azure Policy assignment (allowed locations, allowed sizes, required tags)
            # refused this request. It comes as a 403 but says nothing about the credential,
            # and a policy is usually scoped to some regions or sizes: block this region and
            # let the job fail over, as for quota, rather than an AuthError that disables the
            # whole provider.
            return QuotaError(
                f"{prefix}denied by Azure Policy in {region or 'this subscription'}: "
                + _summary(exc, err),
                provider=provider,
                scope=region_scope,
            )
        if status in (401, 403) or codes & AUTH_CODES:
            return AuthError(message, provider=provider, scope=region_scope)
        if isinstance(exc, ClientAuthenticationError) and status == 0:
            return AuthError(message, provider=provider, scope=region_scope)
        if status == 429 or status >= 500 or status in (408, 409):
            # 409 is ARM's "another operation on this resource is in progress".
            return TransientError(message, provider=provider, scope=region_scope)
        if 400 <= status < 500:
            return InvalidRequestError(message, provider=provider, scope=region_scope)
        # A failed long-running operation: the poll itself answered 200.
        if codes & _INVALID_CODES:
            return InvalidRequestError(message, provider=provider, scope=region_scope)
        return TransientError(message, provider=provider, scope=region_scope)
    if isinstance(exc, ClientAuthenticationError):
        # Raised by credentials (azure-identity) without any HTTP answer from ARM.
        return AuthError(prefix + _summary(exc, None), provider=provider, scope=region_scope)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError, OSError)):
        return TransientError(prefix + _summary(exc, None), provider=provider, scope=region_scope)
    return TransientError(
        f"{prefix}unexpected {type(exc).__name__}: {_summary(exc, None)}",
        provider=provider,
        scope=region_scope,
    )
