"""Typed errors raised at the boundaries of multicloud.

Adapters translate their SDK's exceptions into the ``ProviderError`` family so that the
scheduler can decide what to do (fail over, back off, give up) without knowing any SDK.
Spec errors carry the file and field path so the CLI can print one clear line.
"""

from __future__ import annotations

from typing import Any


class MulticloudError(Exception):
    """Base class of every error multicloud raises on purpose."""


class SpecError(MulticloudError):
    """A job spec or fleet file is malformed.

    Attributes:
        source: The file (or ``<inline>``) the spec came from.
        problems: ``(field_path, message)`` pairs, one per problem found.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (Ray actor → client) by pickling; the default
        # would call __init__ with the rendered message only.
        return (type(self), (self.source, self.problems))

    def render(self) -> str:
        """Return the error as the text the CLI prints.

        Returns:
            One line per problem, each naming the file and the field path.
        """
        lines = []
        for path, message in self.problems:
            where = f"{self.source}: {path}" if path else self.source
            lines.append(f"{where}: {message}")
        return "\n".join(lines)


class ProviderNotFoundError(MulticloudError):
    """No provider is registered under the requested name."""


class ProviderError(MulticloudError):
    """An error reported by a provider adapter.

    Attributes:
        provider: Name of the provider that raised it.
        scope: What the error applies to (see ``error_scope``): ``provider``,
            ``provider/region`` or ``provider/region/zone``.
    """

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", scope: str = "") -> None:
        self.provider = provider
        self.scope = scope
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_provider_error, (type(self), str(self), self.provider, self.scope))


def _rebuild_provider_error(
    cls: type[ProviderError], message: str, provider: str, scope: str
) -> ProviderError:
    return cls(message, provider=provider, scope=scope)


def error_scope(provider: str, region: str | None = None, zone: str | None = None) -> str:
    """Return the scope string an adapter puts on a capacity or quota error.

    The scheduler blocks offers under the scope for a while; the planner matches offers
    against exactly these forms, so adapters build scopes here rather than by hand.

    Args:
        provider: Fleet provider name.
        region: Region the error applies to (None: the whole provider).
        zone: Zone the error applies to (only with a region).

    Returns:
        ``provider``, ``provider/region`` or ``provider/region/zone``.
    """
    if not region:
        return provider
    return f"{provider}/{region}/{zone}" if zone else f"{provider}/{region}"


class CapacityError(ProviderError):
    """The cloud has no capacity for the request in ``scope`` (fail over elsewhere)."""


class QuotaError(ProviderError):
    """The account's quota does not allow the request in ``scope`` (fail over elsewhere)."""


class AuthError(ProviderError):
    """Credentials are missing, expired or lack a permission."""


class InvalidRequestError(ProviderError):
    """The request itself is wrong; retrying it anywhere will not help."""


class TransientError(ProviderError):
    """A passing failure (throttling, 5xx, timeout): retry the same offer with backoff."""

    retryable = True
