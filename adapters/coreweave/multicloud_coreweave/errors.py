"""Translation of the kubernetes client's failures into multicloud's typed errors.

Nothing from the kubernetes SDK crosses the adapter boundary: every call the adapter makes
runs inside :func:`translated`, which turns API errors, transport errors and configuration
errors into the ``ProviderError`` family (DESIGN.md §4):

========================================================  ====================
What the cluster says                                     Error
========================================================  ====================
403 Forbidden with "exceeded quota" (ResourceQuota)        QuotaError
401 Unauthorized, 403 Forbidden, bad/missing kubeconfig    AuthError
400 Bad Request, 404 on create, 422 Unprocessable/Invalid  InvalidRequestError
409 Conflict other than AlreadyExists                      TransientError
429 Too Many Requests, 5xx, connection errors, timeouts    TransientError
========================================================  ====================

``AlreadyExists`` (409) and ``NotFound`` (404) are decided by the caller, which knows whether
they mean success (idempotent create, idempotent delete) or not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from multicloud.errors import (
    AuthError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)

__all__ = ["api_status", "is_already_exists", "is_not_found", "translate", "translated"]


def api_status(exc: BaseException) -> tuple[int | None, str, str]:
    """Return the HTTP status, Status reason and Status message of an API exception.

    Args:
        exc: Any exception (only ``kubernetes.client.ApiException`` has a status).

    Returns:
        ``(status, reason, message)``; ``(None, "", str(exc))`` for anything else.
    """
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return None, "", str(exc)
    reason = str(exc.reason or "")
    message = ""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            message = body[:500]
        else:
            if isinstance(doc, dict):
                reason = str(doc.get("reason") or reason)
                message = str(doc.get("message") or "")
    status = exc.status if isinstance(exc.status, int) else None
    return status, reason, message or reason


def is_already_exists(exc: BaseException) -> bool:
    """Return True for a 409 AlreadyExists answer to a create."""
    status, reason, _ = api_status(exc)
    return status == 409 and reason in ("AlreadyExists", "Conflict", "")


def is_not_found(exc: BaseException) -> bool:
    """Return True for a 404 answer."""
    return api_status(exc)[0] == 404


def translate(
    exc: BaseException, *, provider: str, scope: str = "", doing: str = ""
) -> ProviderError:
    """Map one exception raised by the kubernetes client to a ``ProviderError``.

    Args:
        exc: The exception.
        provider: Fleet provider name (recorded on the error).
        scope: ``provider/region[/zone]`` the error applies to, for capacity and quota.
        doing: What the adapter was doing, for the message (e.g. ``creating Job x``).

    Returns:
        The typed error (the caller raises it ``from exc``).
    """
    from kubernetes.client.exceptions import ApiException, OpenApiException
    from kubernetes.config.config_exception import ConfigException

    where = f"{doing}: " if doing else ""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ApiException):
        status, reason, message = api_status(exc)
        text = f"{where}{status} {reason}: {message}".rstrip(": ")
        if status == 403 and "exceeded quota" in message.lower():
            # Without a region at hand (a quota answer to a read), the whole provider.
            return QuotaError(text, provider=provider, scope=scope or provider)
        if status in (401, 403):
            return AuthError(text, provider=provider)
        if status in (400, 404, 405, 410, 413, 415, 422):
            return InvalidRequestError(text, provider=provider)
        if status == 409 or status == 429 or status is None or status >= 500 or status == 0:
            return TransientError(text, provider=provider, scope=scope)
        return InvalidRequestError(text, provider=provider)
    if isinstance(exc, ConfigException):
        return AuthError(f"{where}Kubernetes configuration: {exc}", provider=provider)
    if isinstance(exc, (OpenApiException, TypeError, ValueError)):
        # Client-side validation (a value the API types refuse) or an answer the client
        # could not deserialise: the request or the reply is malformed, not the weather.
        return InvalidRequestError(f"{where}{type(exc).__name__}: {exc}", provider=provider)
    if _is_tls_error(exc):
        return AuthError(f"{where}TLS verification failed: {exc}", provider=provider)
    # urllib3's HTTPError family (MaxRetryError, ProtocolError, timeouts), plain socket
    # errors and anything else that stopped the request on its way: retry later.
    return TransientError(f"{where}{type(exc).__name__}: {exc}", provider=provider, scope=scope)


def _is_tls_error(exc: BaseException) -> bool:
    import ssl

    from urllib3.exceptions import MaxRetryError, SSLError

    if isinstance(exc, (ssl.SSLCertVerificationError, SSLError)):
        return True
    return isinstance(exc, MaxRetryError) and isinstance(exc.reason, SSLError)


@contextlib.contextmanager
def translated(provider: str, *, scope: str = "", doing: str = "") -> Iterator[None]:
    """Run a block of kubernetes client calls, re-raising failures as ``ProviderError``.

    Args:
        provider: Fleet provider name.
        scope: Error scope for capacity and quota errors.
        doing: What the block does, for messages.

    Raises:
        ProviderError: Whatever the block raised, translated.
    """
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        raise translate(exc, provider=provider, scope=scope, doing=doing) from exc
