"""The provider-adapter interface and the value types that cross it.

An adapter is one class with the small interface of :class:`Provider` (docs/architecture.md,
"Adapters"). The value types are plain frozen dataclasses (not pydantic models) because the
planner handles hundreds of thousands of them per second; offers and places live in
:mod:`multicloud.offer` and are re-exported here, where adapters import them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol, runtime_checkable

from multicloud.offer import Capability, MarketKind, Offer, Place

__all__ = [
    "Capability",
    "Handle",
    "LaunchSpec",
    "MarketKind",
    "Offer",
    "OwnedWorkload",
    "Place",
    "Provider",
    "ResourceRequest",
    "SupportsSweep",
    "WorkloadState",
    "WorkloadStatus",
    "handle_extra",
    "request_id",
]


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """What to ask a provider's offers for.

    Attributes:
        accelerators: Acceptable canonical accelerator names (empty = all).
        count: Minimum accelerators per node.
        regions: Region globs (empty = all).
    """

    accelerators: tuple[str, ...] = ()
    count: int = 1
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to launch on an offer.

    Attributes:
        job_id: Scheduler job id (tagged on every resource).
        job_name: Human job name.
        attempt: Attempt number (1-based).
        nodes: Nodes in the gang.
        market: Market to launch in.
        install_id: Id of the scheduler installation (tagged for orphan sweeps).
        image: Container image.
        command: Command line.
        env: Plain environment variables.
        secrets: Secret names, resolved on the host.
        duration_hours: Expected duration (the sim provider runs this long, scaled).
        checkpoint: Checkpoint location, when the job declares one.
        cpus: CPUs per node to reserve, when the job asks for a number (the ``local``
            provider requests this many Ray CPUs; None means the adapter's default).
        ray: The command is a Ray program that runs once, against a Ray cluster formed by
            the gang (``run.ray``); otherwise every node runs the command.
    """

    job_id: str
    job_name: str
    attempt: int
    nodes: int
    market: MarketKind
    install_id: str = "default"
    image: str | None = None
    command: str | tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    duration_hours: float = 1.0
    checkpoint: str | None = None
    cpus: float | None = None
    ray: bool = False


@dataclass(frozen=True, slots=True)
class Handle:
    """A launched workload, as the adapter identifies it.

    Attributes:
        provider: Fleet provider name.
        id: Adapter-specific id (instance ids, object name, ...).
        request_id: The idempotency key it was launched with.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes launched.
        market: Market launched in.
        job_id: Owning job.
        extra: Adapter-specific data needed to find the workload again.
    """

    provider: str
    id: str
    request_id: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: MarketKind
    job_id: str
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def at(
        cls,
        offer: Offer,
        spec: LaunchSpec,
        *,
        id: str,
        request_id: str,
        extra: Mapping[str, str] | None = None,
    ) -> Handle:
        """Return the handle of a launch of ``spec`` on ``offer``.

        Args:
            offer: The offer launched on.
            spec: The launch (nodes, market, job).
            id: The adapter's id of the workload.
            request_id: The launch's idempotency key.
            extra: Adapter data needed to find the workload again.

        Returns:
            The handle.
        """
        return cls(
            provider=offer.provider,
            id=id,
            request_id=request_id,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            nodes=spec.nodes,
            market=spec.market,
            job_id=spec.job_id,
            extra=tuple(sorted((str(k), str(v)) for k, v in (extra or {}).items())),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the handle as a JSON-ready dict (what the store keeps)."""
        return {
            "provider": self.provider,
            "id": self.id,
            "request_id": self.request_id,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "nodes": self.nodes,
            "market": self.market.value,
            "job_id": self.job_id,
            "extra": [list(pair) for pair in self.extra],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Handle:
        """Rebuild a handle written by :meth:`to_json`.

        Args:
            data: The dict.

        Returns:
            The handle.

        Raises:
            KeyError: If a field is missing.
            ValueError: If the market is not a known one.
        """
        return cls(
            provider=str(data["provider"]),
            id=str(data["id"]),
            request_id=str(data["request_id"]),
            region=str(data["region"]),
            zone=None if data.get("zone") is None else str(data["zone"]),
            instance_type=str(data["instance_type"]),
            nodes=int(data["nodes"]),
            market=MarketKind(data["market"]),
            job_id=str(data["job_id"]),
            extra=tuple((str(k), str(v)) for k, v in data.get("extra", ())),
        )

    def get(self, key: str, default: str | None = None) -> str | None:
        """Return one item of ``extra``.

        Args:
            key: The item's name.
            default: What to return when it is absent.

        Returns:
            The value, or ``default``.
        """
        for k, v in self.extra:
            if k == key:
                return v
        return default


class WorkloadState(str, Enum):
    """What a provider reports about a launched workload."""

    PROVISIONING = "provisioning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    """Status of one workload.

    Attributes:
        state: Current state.
        message: Human detail from the provider.
        exit_code: Exit code once finished, when known.
        blocked_scope: Set when a launched workload lost its place for lack of capacity or
            quota (e.g. pods left unschedulable): the scope to avoid, as
            ``errors.error_scope`` builds it. The scheduler blocks it as it would after a
            ``CapacityError`` at launch, then re-places the job.
    """

    state: WorkloadState
    message: str = ""
    exit_code: int | None = None
    blocked_scope: str | None = None


@runtime_checkable
class Provider(Protocol):
    """The small interface every cloud adapter implements."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def check(self) -> None:
        """Probe credentials and reachability cheaply; raise a ProviderError if unusable."""

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the offers matching ``request``; no side effects."""

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch ``spec`` on ``offer``; idempotent by ``request_id``."""

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle, keyed by ``Handle.id``, in one batch."""

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate a workload; a no-op for an unknown or already terminated handle."""


@dataclass(frozen=True, slots=True)
class OwnedWorkload:
    """A live workload an install launched, with the job attempt it was tagged with.

    Attributes:
        handle: The workload.
        job_id: Job id of its tag.
        attempt: Attempt number of its tag.
    """

    handle: Handle
    job_id: str
    attempt: int


@runtime_checkable
class SupportsSweep(Protocol):
    """An adapter that can list what an install launched, for the orphan sweep."""

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the live workloads this install launched, with their job and attempt tags.

        The scheduler's orphan sweep terminates those that no live attempt owns.
        """


def request_id(job_id: str, attempt: int, region: str) -> str:
    """Derive the idempotency key of one launch attempt.

    The same job, attempt and region always give the same key, so a scheduler that
    crashed between launching and recording re-sends the same key and the cloud
    returns the existing workload instead of a second one.

    Args:
        job_id: Scheduler job id.
        attempt: Attempt number.
        region: Region launched in.

    Returns:
        A short, stable, cloud-safe key (lowercase hex, 32 characters).
    """
    digest = hashlib.sha256(f"{job_id}|{attempt}|{region}".encode()).hexdigest()
    return digest[:32]


def handle_extra(handle: Handle) -> dict[str, Any]:
    """Return a handle's adapter-specific data as a dict."""
    return dict(handle.extra)
