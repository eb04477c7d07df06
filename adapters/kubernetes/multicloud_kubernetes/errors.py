"""What a Kubernetes API failure means: the Kubernetes rows of the kit's error boundary.

Every client call runs inside the boundary (``with self.errors(...)``); an ``ApiException``,
a transport error or an unusable configuration is reduced to a kit ``Failure`` and matched
against :data:`RULES` first, then the kit's one HTTP fallback (401/403 auth, 408/409/429/5xx
transient, other 4xx invalid). ``AlreadyExists`` and ``NotFound`` are decided by the caller,
which knows whether they mean success (an idempotent create or delete).
"""

from __future__ import annotations

import json
import ssl
from typing import Any

from multicloud.adapterkit import ErrorBoundary, Failure, Rule, codes
from multicloud.errors import AuthError, InvalidRequestError, QuotaError

__all__ = ["RULES", "boundary", "is_already_exists", "is_not_found", "to_failure"]

RULES: tuple[Rule, ...] = (
    # ResourceQuota admission answers a create over quota with 403 Forbidden whose message
    # reads "exceeded quota: <name>, requested: ..., used: ..., limited: ..."
    # (k8s.io/apiserver/pkg/admission/plugin/resourcequota); any other 403 is RBAC.
    Rule(
        "ResourceQuota exceeded (403 \"exceeded quota\")",
        lambda f: f.status == 403 and f.says("exceeded quota"),
        QuotaError,
        "region",
    ),
    # A validating admission webhook's denial (Kueue's, say) is a 403 too: "admission webhook
    # \"vjob.kb.io\" denied the request: ..." (controller-runtime's admission.Denied).
    Rule(
        "refused by an admission webhook (403 \"denied the request\")",
        lambda f: f.status == 403 and f.says("admission webhook") and f.says("denied"),
        InvalidRequestError,
        "region",
    ),
    Rule("kubeconfig or in-cluster configuration unusable", lambda f: f.has("CONFIG"),
         AuthError, "provider"),
    Rule("TLS verification of the API server failed", lambda f: f.has("TLS"), AuthError,
         "provider"),
    Rule(
        "refused by the client's own models (a value the API types do not accept)",
        lambda f: f.has("CLIENT"),
        InvalidRequestError,
        "region",
    ),
)
"""The rows that are Kubernetes'; everything else is the kit's HTTP fallback."""


def _api_status(exc: Any) -> tuple[int | None, str, str]:
    reason, message, body = str(exc.reason or ""), "", exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            message = body[:500]
        else:
            if isinstance(doc, dict):  # a metav1.Status
                reason = str(doc.get("reason") or reason)
                message = str(doc.get("message") or "")
    status = exc.status if isinstance(exc.status, int) and exc.status > 0 else None
    return status, reason, message or reason


def to_failure(exc: BaseException) -> Failure | None:
    """Reduce what the kubernetes client raised to a kit ``Failure``.

    Args:
        exc: The exception.

    Returns:
        The failure; None for an exception that is not the client's (a programming error
        passes the boundary unchanged).
    """
    from kubernetes.client.exceptions import ApiException, OpenApiException
    from kubernetes.config.config_exception import ConfigException
    from pydantic import ValidationError
    from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

    if isinstance(exc, ApiException):
        status, reason, message = _api_status(exc)
        return Failure(status, codes(reason), message, timeout=status is None)
    if isinstance(exc, ConfigException):
        return Failure(None, codes("CONFIG"), f"Kubernetes configuration: {exc}")
    if isinstance(exc, (ssl.SSLCertVerificationError, SSLError)) or (
        isinstance(exc, MaxRetryError) and isinstance(exc.reason, SSLError)
    ):
        return Failure(None, codes("TLS"), str(exc))
    if isinstance(exc, (OpenApiException, ValidationError)):
        return Failure(None, codes("CLIENT"), f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (HTTPError, OSError)):
        # Refused, reset, timed out: the request never got an answer.
        return Failure(None, message=f"{type(exc).__name__}: {exc}", timeout=True)
    return None


def boundary(provider: str) -> ErrorBoundary:
    """Return the error boundary of one fleet entry."""
    return ErrorBoundary(provider, RULES, to_failure)


def _answer(exc: BaseException) -> tuple[int | None, str]:
    from kubernetes.client.exceptions import ApiException

    return _api_status(exc)[:2] if isinstance(exc, ApiException) else (None, "")


def is_already_exists(exc: BaseException) -> bool:
    """Return True for a create answered 409 AlreadyExists (not a 409 Conflict)."""
    return _answer(exc) == (409, "AlreadyExists")


def is_not_found(exc: BaseException) -> bool:
    """Return True for a 404 answer."""
    return _answer(exc)[0] == 404
