"""What Oracle Cloud's failures mean: this cloud's rows on the kit's error boundary.

Only what is OCI's own is here; every other answer (401, 403, 409, 429, 5xx, other 4xx,
timeouts) is the kit's shared HTTP fallback. The codes are Oracle's published API errors
(https://docs.oracle.com/iaas/Content/API/References/apierrors.htm) and the launch failure
every OCI user knows, ``500 InternalError "Out of host capacity."``.
"""

from __future__ import annotations

import oci

from multicloud.adapterkit import ErrorBoundary, Failure, Rule, codes
from multicloud.errors import AuthError, CapacityError, InvalidRequestError, QuotaError

__all__ = ["RULES", "boundary", "to_failure"]

RULES: tuple[Rule, ...] = (
    # LaunchInstance answers 500 InternalError with this message when the availability
    # domain has no host for the shape; another AD or region may have one.
    Rule(
        "out of host capacity (500 InternalError)",
        lambda f: f.says(r"out of host capacity") or f.has("OutOfHostCapacity"),
        CapacityError,
        "zone",
    ),
    # GPU limits are per availability domain (Compute limits: gpu-*-count).
    Rule("tenancy limit exceeded (400 LimitExceeded)", lambda f: f.has("LimitExceeded"),
         QuotaError, "zone"),
    Rule("compartment quota exceeded (400 QuotaExceeded)", lambda f: f.has("QuotaExceeded"),
         QuotaError, "zone"),
    # "Retry it using a different token": the same request id can never succeed again.
    Rule("retry token invalidated (409 InvalidatedRetryToken)",
         lambda f: f.has("InvalidatedRetryToken"), InvalidRequestError, "region"),
    # OCI answers 404 NotAuthorizedOrNotFound when a policy is missing as well as when the
    # resource is absent; the adapter handles "absent is fine" (terminate) before this.
    Rule("not authorized or not found (404 NotAuthorizedOrNotFound)",
         lambda f: f.status == 404 and f.has("NotAuthorizedOrNotFound"), AuthError, "provider"),
)


def to_failure(exc: BaseException) -> Failure | None:
    """Reduce what the ``oci`` SDK raised to a :class:`Failure` (None: not the SDK's).

    Args:
        exc: The exception.

    Returns:
        The failure, or None for anything that is not an SDK or transport error.
    """
    if isinstance(exc, oci.exceptions.ServiceError):
        return Failure(exc.status, codes(exc.code), str(exc.message or ""))
    if isinstance(exc, (oci.exceptions.RequestException, oci.exceptions.ConnectTimeout)):
        return Failure(None, message=str(exc), timeout=True)
    return None


def boundary(fleet_name: str) -> ErrorBoundary:
    """Return the error boundary of one fleet entry."""
    return ErrorBoundary(fleet_name, RULES, to_failure)
