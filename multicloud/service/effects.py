"""The effects around the scheduler: every call into a cloud adapter goes through here.

The scheduler never calls an adapter directly. It asks an :class:`Effects` for a future and
looks at it on a later tick, so a slow or hanging cloud delays only its own answer, never
the cycle (``docs/architecture.md``, "Effects"). Two implementations share one interface:

- :class:`InlineEffects` runs adapter calls on bounded thread pools in this process, one
  set per provider: a cloud that hangs fills its own workers and nobody else's. The
  service uses it by default (measured in ``bench/service.py``).
- ``LauncherActorEffects`` (``multicloud.service.launchers``) sends launches and terminations
  to one long-lived launcher actor per provider, for adapters that must not share the
  scheduler's process.

Adapter errors cross this boundary as data (:class:`LaunchOutcome`), not exceptions: the
scheduler has to act on each item of a batch separately, and an exception pickled across a
Ray task would lose its type for adapters Ray cannot import.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
)
from multicloud.provider import (
    Handle,
    LaunchSpec,
    Offer,
    OwnedWorkload,
    Place,
    Provider,
    ResourceRequest,
    SupportsSweep,
    WorkloadStatus,
)

__all__ = [
    "Effects",
    "ErrorKind",
    "InlineEffects",
    "LaunchItem",
    "LaunchOutcome",
    "SupportsBatch",
    "classify",
    "launch_batch",
    "terminate_batch",
]

ErrorKind = Literal["capacity", "quota", "auth", "invalid", "transient"]


@dataclass(frozen=True)
class LaunchItem:
    """One launch to send: the place as planned, the spec and the idempotency key.

    Attributes:
        request_id: The launch's idempotency key.
        place: Where it runs; the adapter gets ``place.offer`` exactly as planned.
        spec: What to launch (its nodes and market are the place's).
    """

    request_id: str
    place: Place
    spec: LaunchSpec

    @property
    def offer(self) -> Offer:
        """The offer to launch on, as the planner chose it."""
        return self.place.offer


@dataclass(frozen=True)
class LaunchOutcome:
    """What became of one launch.

    Attributes:
        request_id: The launch's idempotency key.
        handle: The workload's handle when the launch succeeded.
        error: The error's kind when it failed.
        scope: The error's scope (``provider``, ``provider/region`` or ``provider/zone``).
        message: The error message.
    """

    request_id: str
    handle: Handle | None = None
    error: ErrorKind | None = None
    scope: str | None = None
    message: str = ""


def classify(exc: BaseException) -> ErrorKind:
    """Map an adapter exception to the error kinds the scheduler acts on.

    Args:
        exc: What the adapter raised.

    Returns:
        The kind; anything that is not a typed ProviderError counts as transient (a bug
        or an outage in an adapter should be retried and then re-placed, not crash the
        scheduler).
    """
    if isinstance(exc, CapacityError):
        return "capacity"
    if isinstance(exc, QuotaError):
        return "quota"
    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, InvalidRequestError):
        return "invalid"
    return "transient"


def _scope(exc: BaseException, provider: str) -> str:
    if isinstance(exc, ProviderError) and exc.scope:
        return exc.scope
    return provider


@runtime_checkable
class SupportsBatch(Protocol):
    """An adapter that can run several calls as one unit of work.

    The simulated cloud holds its journal's lock once for a whole batch instead of once per
    launch: with several Ray workers launching at once, per-launch locking made the
    scheduler's own reads (offers, status) queue behind thousands of lock hand-overs.
    """

    def batch(self) -> contextlib.AbstractContextManager[object]:
        """Return a context inside which calls to this adapter form one unit."""


def _grouped(provider: Provider) -> contextlib.AbstractContextManager[object]:
    return provider.batch() if isinstance(provider, SupportsBatch) else contextlib.nullcontext()


def launch_batch(provider: Provider, items: Sequence[LaunchItem]) -> list[LaunchOutcome]:
    """Launch each item on ``provider``, turning errors into outcomes.

    Args:
        provider: The adapter.
        items: The launches.

    Returns:
        One outcome per item, in order.
    """
    out: list[LaunchOutcome] = []
    with _grouped(provider):
        out.extend(_launch_one(provider, item) for item in items)
    return out


def _launch_one(provider: Provider, item: LaunchItem) -> LaunchOutcome:
    try:
        handle = provider.launch(item.place.offer, item.spec, request_id=item.request_id)
    except Exception as exc:  # every adapter error becomes data; see module doc
        return LaunchOutcome(
            item.request_id,
            error=classify(exc),
            scope=_scope(exc, item.offer.provider),
            message=str(exc) or type(exc).__name__,
        )
    return LaunchOutcome(item.request_id, handle=handle)


def terminate_batch(provider: Provider, items: Sequence[tuple[Handle, str]]) -> list[str | None]:
    """Terminate each ``(handle, request_id)``; return an error message or None per item.

    Args:
        provider: The adapter.
        items: Handles with the termination's idempotency key.

    Returns:
        None for each item terminated (or already gone), else the error message.
    """
    out: list[str | None] = []
    with _grouped(provider):
        for handle, key in items:
            try:
                provider.terminate(handle, request_id=key)
            except Exception as exc:  # retried by the scheduler on its next sweep
                out.append(str(exc) or type(exc).__name__)
            else:
                out.append(None)
    return out


class Effects(Protocol):
    """Asynchronous access to the fleet's adapters."""

    def offers(self, provider: str, request: ResourceRequest) -> cf.Future[list[Offer]]:
        """Ask one provider for offers."""

    def launch(self, provider: str, items: Sequence[LaunchItem]) -> cf.Future[list[LaunchOutcome]]:
        """Send a batch of launches to one provider."""

    def status(
        self, provider: str, handles: Sequence[Handle]
    ) -> cf.Future[dict[str, WorkloadStatus]]:
        """Ask one provider for the status of its workloads, in one batch."""

    def terminate(
        self, provider: str, items: Sequence[tuple[Handle, str]]
    ) -> cf.Future[list[str | None]]:
        """Terminate workloads on one provider."""

    def owned(self, provider: str, install_id: str) -> cf.Future[list[OwnedWorkload]] | None:
        """List the live workloads this install launched there (None: cannot sweep)."""

    def close(self) -> None:
        """Stop accepting work and release threads."""


class InlineEffects:
    """Adapter calls on bounded thread pools in this process, one set per provider.

    Reads (offers, status, the sweep's listing) and writes (launches, terminations) of a
    provider have pools of their own, so a cloud whose API hangs holds only its own
    threads: the scheduler never sends a provider a second read of a kind while the first
    is unanswered, and launch batches that outlive their deadline are re-sent by request id.

    Args:
        providers: Fleet provider name → adapter.
        workers: Launch/terminate threads per provider.
        read_workers: Offers/status/sweep threads per provider.
    """

    def __init__(
        self, providers: Mapping[str, Provider], *, workers: int = 4, read_workers: int = 3
    ) -> None:
        self.providers = dict(providers)
        self._reads = {
            name: cf.ThreadPoolExecutor(read_workers, thread_name_prefix=f"read-{name}")
            for name in self.providers
        }
        self._writes = {
            name: cf.ThreadPoolExecutor(workers, thread_name_prefix=f"launch-{name}")
            for name in self.providers
        }

    def offers(self, provider: str, request: ResourceRequest) -> cf.Future[list[Offer]]:
        """Ask one provider for offers on its read pool.

        Args:
            provider: Fleet provider name.
            request: What to ask for.

        Returns:
            A future of the offers.
        """
        return self._reads[provider].submit(self.providers[provider].offers, request)

    def launch(self, provider: str, items: Sequence[LaunchItem]) -> cf.Future[list[LaunchOutcome]]:
        """Launch a batch on the provider's launch pool.

        Args:
            provider: Fleet provider name.
            items: The launches.

        Returns:
            A future of one outcome per item.
        """
        return self._writes[provider].submit(launch_batch, self.providers[provider], list(items))

    def status(
        self, provider: str, handles: Sequence[Handle]
    ) -> cf.Future[dict[str, WorkloadStatus]]:
        """Ask for a batch of statuses on the provider's read pool.

        Args:
            provider: Fleet provider name.
            handles: The workloads.

        Returns:
            A future of statuses keyed by handle id.
        """
        return self._reads[provider].submit(self.providers[provider].status, list(handles))

    def terminate(
        self, provider: str, items: Sequence[tuple[Handle, str]]
    ) -> cf.Future[list[str | None]]:
        """Terminate a batch on the provider's launch pool.

        Args:
            provider: Fleet provider name.
            items: ``(handle, request_id)`` pairs.

        Returns:
            A future of one error message (or None) per item.
        """
        return self._writes[provider].submit(terminate_batch, self.providers[provider], list(items))

    def owned(self, provider: str, install_id: str) -> cf.Future[list[OwnedWorkload]] | None:
        """List this install's live workloads on a provider that supports sweeping.

        Args:
            provider: Fleet provider name.
            install_id: The install's id.

        Returns:
            A future of the workloads, or None if the adapter cannot list them.
        """
        adapter = self.providers[provider]
        if not isinstance(adapter, SupportsSweep):
            return None
        return self._reads[provider].submit(adapter.owned, install_id)

    def close(self) -> None:
        """Stop the pools without waiting for hung calls."""
        for pool in (*self._reads.values(), *self._writes.values()):
            pool.shutdown(wait=False, cancel_futures=True)
