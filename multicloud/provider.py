"""The provider-adapter interface of DESIGN.md §4 and the value types that cross it.

The value types are plain frozen dataclasses (not pydantic models) because the planner
handles hundreds of thousands of them per second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol, runtime_checkable


class Capability(str, Enum):
    """What an adapter can do beyond the basics."""

    SPOT = "spot"
    TPU = "tpu"
    MULTI_NODE = "multi-node"
    RESERVED = "reserved"
    LIVE_PRICES = "live-prices"
    QUOTA_PROBE = "quota-probe"
    FAULT_INJECTION = "fault-injection"


class MarketKind(str, Enum):
    """The market a placement is billed in."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class Offer:
    """One kind of node a provider can run, where, at what price, and how many.

    Attributes:
        provider: Fleet provider name (the key in the fleet file).
        region: Region.
        zone: Zone when the offer is zonal (a gang stays in one zone).
        instance_type: Instance type, VM size, TPU slice or node pool.
        accelerator: Canonical accelerator name.
        count: Accelerators per node.
        price: On-demand price per node-hour in USD; None if not sold on demand.
        spot_price: Spot price per node-hour; None if there is no spot market.
        capacity: Nodes available now; None means no known limit.
        reservation: Name of the prepaid reservation this offer draws from, if any.
        jurisdiction: Legal jurisdiction of the region (None when unknown).
        catalog_version: Version of the price data behind the offer.
    """

    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    count: int
    price: float | None
    spot_price: float | None = None
    capacity: int | None = None
    reservation: str | None = None
    jurisdiction: str | None = None
    catalog_version: str = ""

    @property
    def key(self) -> str:
        """Identity of the capacity pool this offer draws from."""
        base = f"{self.provider}/{self.zone or self.region}/{self.instance_type}"
        return f"{base}#{self.reservation}" if self.reservation else base


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
    """The small interface every cloud adapter implements (DESIGN.md §4)."""

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
