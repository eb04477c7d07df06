"""One error boundary for every adapter: SDK failures become typed ``ProviderError``s.

An adapter reduces whatever its SDK raised (an HTTP error, an error inside a long-running
operation, a dropped connection) to a :class:`Failure` and hands it to its
:class:`ErrorBoundary`, which matches the adapter's own rule table first and then one shared
HTTP fallback (:data:`HTTP_FALLBACK`), so that the same HTTP answer means the same thing on
every cloud. The scope of the resulting error says how far the scheduler fails over
(docs/architecture.md, "Adapters").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

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
    "HTTP_FALLBACK",
    "AuthError",
    "CapacityError",
    "ErrorBoundary",
    "Failure",
    "InvalidRequestError",
    "QuotaError",
    "Rule",
    "TransientError",
    "Width",
    "codes",
    "table_rows",
]

Width = Literal["zone", "region", "provider"]
"""How wide an error's scope is; ``zone`` falls back to the region when no zone is known."""


@dataclass(frozen=True)
class Failure:
    """A cloud failure reduced to what the rule tables look at.

    Attributes:
        status: HTTP status (or its equivalent); None for a failure without one.
        codes: Symbolic error codes and reasons as the cloud spells them, upper-cased
            (``INSUFFICIENTINSTANCECAPACITY``, ``ZONE_RESOURCE_POOL_EXHAUSTED``).
        message: The cloud's human message.
        timeout: True for a timeout or a dropped or refused connection.
    """

    status: int | None
    codes: frozenset[str] = field(default_factory=frozenset)
    message: str = ""
    timeout: bool = False

    def has(self, *wanted: str) -> bool:
        """Return True if any of ``wanted`` (any case) is among the failure's codes."""
        return any(w.upper() in self.codes for w in wanted)

    def has_prefix(self, *prefixes: str) -> bool:
        """Return True if a code starts with any of ``prefixes`` (any case)."""
        ups = tuple(p.upper() for p in prefixes)
        return any(code.startswith(ups) for code in self.codes)

    def says(self, pattern: str) -> bool:
        """Return True if the message matches ``pattern`` (a case-insensitive regex)."""
        return re.search(pattern, self.message, re.IGNORECASE) is not None


def codes(*values: object) -> frozenset[str]:
    """Return the non-empty values, upper-cased, as a failure's code set.

    Args:
        *values: Codes as the SDK gives them (None and empty strings are skipped).

    Returns:
        The code set.
    """
    return frozenset(str(v).upper() for v in values if v not in (None, ""))


@dataclass(frozen=True)
class Rule:
    """One row of a translation table.

    Attributes:
        name: What the row recognises (docs and test ids).
        matches: Predicate over a failure.
        error: The ``ProviderError`` subclass it becomes.
        width: How wide its scope is.
    """

    name: str
    matches: Callable[[Failure], bool]
    error: type[ProviderError]
    width: Width = "region"


def _status(*values: int) -> Callable[[Failure], bool]:
    return lambda f: f.status in values


HTTP_FALLBACK: tuple[Rule, ...] = (
    Rule("timeout or connection failure", lambda f: f.timeout, TransientError, "region"),
    Rule("unauthenticated (401)", _status(401), AuthError, "provider"),
    Rule("permission denied (403)", _status(403), AuthError, "provider"),
    Rule("request timeout (408)", _status(408), TransientError, "region"),
    # A conflict is a concurrent change of the same resource (an update racing another, a
    # delete in progress): the same request can succeed a moment later. Creates that meet
    # their own earlier resource are decided by the adapter (AlreadyExists = success).
    Rule("conflict (409)", _status(409), TransientError, "region"),
    Rule("throttled (429)", _status(429), TransientError, "region"),
    Rule(
        "server error (5xx)",
        lambda f: f.status is not None and f.status >= 500,
        TransientError,
        "region",
    ),
    Rule(
        "bad request (other 4xx)",
        lambda f: f.status is not None and 400 <= f.status < 500,
        InvalidRequestError,
        "region",
    ),
)
"""What an HTTP answer means when no rule of the adapter's own table matched: the same on
every cloud. A failure matching nothing at all (no status, not a timeout) is a
``TransientError``: it says nothing about the request being wrong, so it is retried with
back-off and then re-placed."""


class ErrorBoundary:
    """Turns an adapter's SDK failures into ``ProviderError``s, by rule table.

    Args:
        provider: Fleet provider name (stamped on every error and the head of its scope).
        rules: The adapter's own rules, tried in order before :data:`HTTP_FALLBACK`.
        to_failure: Reduces an SDK exception to a :class:`Failure`; None for an exception
            the boundary must let through (a programming error, say).
        catch: Exception types the boundary translates (anything else passes unchanged).
    """

    def __init__(
        self,
        provider: str,
        rules: Sequence[Rule],
        to_failure: Callable[[BaseException], Failure | None],
        *,
        catch: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self.provider = provider
        self.rules = tuple(rules) + HTTP_FALLBACK
        self._to_failure = to_failure
        self._catch = catch

    def rule_for(self, failure: Failure) -> Rule | None:
        """Return the first rule that matches ``failure`` (own rules, then the fallback)."""
        return next((r for r in self.rules if r.matches(failure)), None)

    def error(
        self,
        failure: Failure,
        *,
        region: str | None = None,
        zone: str | None = None,
        doing: str = "",
    ) -> ProviderError:
        """Build the typed error for a failure.

        Args:
            failure: The failure.
            region: Region the call was about, when known.
            zone: Zone the call was about, when known.
            doing: What the adapter was doing (prefixed to the message).

        Returns:
            The error, with its scope at the rule's width.
        """
        rule = self.rule_for(failure)
        cls: type[ProviderError] = rule.error if rule else TransientError
        width: Width = rule.width if rule else "region"
        if width == "provider" or not region:
            scope = error_scope(self.provider)
        else:
            scope = error_scope(self.provider, region, zone if width == "zone" else None)
        detail = " ".join(
            part for part in (str(failure.status or ""), ",".join(sorted(failure.codes))) if part
        )
        text = failure.message or "failed"
        prefix = f"{doing}: " if doing else ""
        suffix = f" [{detail}]" if detail else ""
        return cls(f"{prefix}{text}{suffix}", provider=self.provider, scope=scope)

    def translate(
        self,
        exc: BaseException,
        *,
        region: str | None = None,
        zone: str | None = None,
        doing: str = "",
    ) -> BaseException:
        """Return the typed error for an exception, or the exception itself if not an SDK one.

        Args:
            exc: What the SDK raised.
            region: Region of the call.
            zone: Zone of the call.
            doing: What the adapter was doing.

        Returns:
            A ``ProviderError`` (an exception that already is one comes back unchanged), or
            ``exc`` when ``to_failure`` declines it.
        """
        if isinstance(exc, ProviderError):
            return exc
        failure = self._to_failure(exc)
        if failure is None:
            return exc
        return self.error(failure, region=region, zone=zone, doing=doing)

    @contextlib.contextmanager
    def __call__(
        self, *, region: str | None = None, zone: str | None = None, doing: str = ""
    ) -> Iterator[None]:
        """Translate every SDK exception raised inside the block.

        Args:
            region: Region of the calls in the block.
            zone: Zone of the calls in the block.
            doing: What the block does, for the message.

        Yields:
            Nothing; the block runs as is.

        Raises:
            ProviderError: The translation of an SDK exception.
        """
        try:
            yield
        except ProviderError:
            raise
        except self._catch as exc:
            translated = self.translate(exc, region=region, zone=zone, doing=doing)
            if translated is exc:
                raise
            raise translated from exc


def table_rows(rules: Iterable[Rule]) -> list[tuple[str, str, str]]:
    """Return ``(name, error class, width)`` per rule, for docs and test ids.

    Args:
        rules: A table.

    Returns:
        One row per rule.
    """
    return [(r.name, r.error.__name__, r.width) for r in rules]

