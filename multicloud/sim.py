"""The simulated cloud: the "mocked adapter" of DESIGN.md §4.

``SimProvider`` implements the Provider protocol over offers written inline in the fleet file
or taken from the shipped catalog. It models what the scheduler has to cope with on a real
cloud — finite capacity, a provisioning delay, spot preemptions and injected capacity, quota
and transient errors — deterministically, so tests, examples, the demo and the benchmarks
can rely on it.

Everything the simulated cloud remembers lives in a ``SimState`` of plain data, so that two
providers can share one cloud and a restarted scheduler can find its workloads again.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from multicloud.errors import CapacityError, InvalidRequestError, QuotaError, TransientError
from multicloud.models import Fault, FaultKind, InlineOffer
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
)

__all__ = [
    "PROVISIONING_FRACTION",
    "TAG_ATTEMPT",
    "TAG_INSTALL",
    "TAG_JOB",
    "SimProvider",
    "SimState",
    "SimWorkload",
]

PROVISIONING_FRACTION = 0.02
"""Share of a workload's run spent provisioning before it reports RUNNING."""

_STATE_FORMAT = 1

TAG_JOB = "multicloud:job"
TAG_ATTEMPT = "multicloud:attempt"
TAG_INSTALL = "multicloud:install"


@dataclass
class SimWorkload:
    """One workload launched on the simulated cloud.

    Attributes:
        id: Handle id.
        provider: Fleet provider name that launched it.
        request_id: Idempotency key it was launched with.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes held.
        market: Market value (``MarketKind.value``).
        job_id: Owning job.
        pool: Key of the capacity pool it draws from (``Offer.key`` without reservation).
        pooled: False when it runs on a reservation and so holds no public capacity.
        spec_digest: Digest of the LaunchSpec, to refuse a reused key with another spec.
        launched_at: Clock reading at launch.
        duration_s: Wall seconds the workload runs before succeeding.
        preempt_after_s: Wall seconds after launch at which it is preempted, if ever.
        terminated_at: Clock reading at termination, if terminated.
        tags: Resource tags (job, attempt, install id).
    """

    id: str
    provider: str
    request_id: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: str
    job_id: str
    pool: str
    pooled: bool
    spec_digest: str
    launched_at: float
    duration_s: float
    preempt_after_s: float | None = None
    terminated_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def state_at(self, now: float) -> WorkloadState:
        """Return the workload's state at clock reading ``now``.

        Args:
            now: Clock reading.

        Returns:
            The state the simulated cloud reports.
        """
        if self.terminated_at is not None:
            return WorkloadState.TERMINATED
        elapsed = now - self.launched_at
        # Preemption is only scheduled when it falls before the end of the run, so checking
        # it first never hides a success.
        if self.preempt_after_s is not None and elapsed >= self.preempt_after_s:
            return WorkloadState.PREEMPTED
        if elapsed >= self.duration_s:
            return WorkloadState.SUCCEEDED
        if elapsed < max(0.0, PROVISIONING_FRACTION * self.duration_s):
            return WorkloadState.PROVISIONING
        return WorkloadState.RUNNING

    def live_at(self, now: float) -> bool:
        """Return True while the workload holds capacity (provisioning or running)."""
        return self.state_at(now) in (WorkloadState.PROVISIONING, WorkloadState.RUNNING)

    def handle(self) -> Handle:
        """Return the handle the scheduler holds for this workload."""
        return Handle(
            provider=self.provider,
            id=self.id,
            request_id=self.request_id,
            region=self.region,
            zone=self.zone,
            instance_type=self.instance_type,
            nodes=self.nodes,
            market=MarketKind(self.market),
            job_id=self.job_id,
        )


@dataclass
class SimState:
    """What one simulated cloud remembers: its workloads and how often each fault fired.

    Plain data (apart from the lock) so it can be shared between providers and written to
    disk with ``to_json`` / ``from_json``.

    Attributes:
        workloads: Workloads by handle id, including finished and terminated ones.
        fault_uses: How many times each injected fault has fired, by fault key.
    """

    workloads: dict[str, SimWorkload] = field(default_factory=dict)
    fault_uses: dict[str, int] = field(default_factory=dict)
    # Providers sharing a state may be driven from several threads (launches run in tasks).
    lock: threading.RLock = field(
        default_factory=threading.RLock, init=False, repr=False, compare=False
    )

    def to_json(self) -> str:
        """Serialise the state.

        Returns:
            A JSON document that ``from_json`` reads back into an equal state.
        """
        with self.lock:
            doc = {
                "format": _STATE_FORMAT,
                "workloads": [dataclasses.asdict(w) for w in self.workloads.values()],
                "fault_uses": dict(self.fault_uses),
            }
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimState:
        """Read a state written by ``to_json``.

        Args:
            text: The JSON document.

        Returns:
            The state.

        Raises:
            ValueError: If the document is not a sim state of a known format.
        """
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a sim state of format {_STATE_FORMAT}")
        try:
            workloads = [SimWorkload(**w) for w in doc.get("workloads", [])]
            fault_uses = {str(k): int(v) for k, v in doc.get("fault_uses", {}).items()}
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed sim state: {exc}") from exc
        return cls(workloads={w.id: w for w in workloads}, fault_uses=fault_uses)


def _pool_key(offer: Offer) -> str:
    # Reservation offers draw on the same physical pool; the suffix only separates contracts.
    return f"{offer.provider}/{offer.zone or offer.region}/{offer.instance_type}"


def _spec_digest(spec: LaunchSpec) -> str:
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _jurisdiction_lookup() -> Callable[[str], str | None]:
    try:
        from multicloud.catalog import load_catalog

        return load_catalog().jurisdiction
    except (ImportError, FileNotFoundError):
        # Inline offers work without the catalog; they just carry no jurisdiction.
        return lambda region: None


class SimProvider:
    """A simulated cloud implementing the Provider protocol.

    Args:
        fleet_name: Fleet provider name; stamped on offers and handles.
        offers: Inline offers.
        catalog: ``"builtin"`` to add the shipped catalog's offers of ``cloud``.
        capacity: Nodes per ``instance_type``, ``region/instance_type`` or
            ``zone/instance_type``; used by the catalog and by inline offers without a
            capacity of their own.
        faults: Faults to inject.
        regions: Region globs narrowing the offers (empty = all).
        time_scale: Wall seconds per simulated hour.
        clock: Source of time in seconds.
        install_id: Install id tagged on workloads when the spec does not carry one.
        cloud: Catalog cloud to simulate (defaults to ``fleet_name``).
        state: Shared cloud state; a fresh one when omitted.

    Raises:
        ValueError: If ``time_scale`` is not positive or ``catalog`` is not ``"builtin"``.
    """

    name: ClassVar[str] = "sim"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SPOT,
            Capability.TPU,
            Capability.MULTI_NODE,
            Capability.RESERVED,
            Capability.FAULT_INJECTION,
        }
    )

    def __init__(
        self,
        *,
        fleet_name: str = "sim",
        offers: Sequence[InlineOffer] = (),
        catalog: str | None = None,
        capacity: Mapping[str, int] | None = None,
        faults: Sequence[Fault] = (),
        regions: Sequence[str] = (),
        time_scale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        install_id: str = "default",
        cloud: str | None = None,
        state: SimState | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if catalog not in (None, "builtin"):
            raise ValueError(f"catalog must be 'builtin' or None, got {catalog!r}")
        self.fleet_name = fleet_name
        self.cloud = cloud or fleet_name
        self.time_scale = float(time_scale)
        self.install_id = install_id
        self.state = state if state is not None else SimState()
        self._clock = clock
        self._capacity = dict(capacity or {})
        self._faults = tuple(faults)
        self._regions = tuple(regions)
        self._pools = self._build_pools(offers, catalog)

    # -- construction -------------------------------------------------------------------

    def _build_pools(self, inline: Sequence[InlineOffer], catalog: str | None) -> dict[str, Offer]:
        pools: dict[str, Offer] = {}
        if catalog == "builtin":
            from multicloud.catalog import load_catalog

            for offer in load_catalog().offers(
                self.cloud, fleet_name=self.fleet_name, capacity=self._capacity
            ):
                if offer.provider != self.fleet_name:
                    offer = dataclasses.replace(offer, provider=self.fleet_name)
                pools[_pool_key(offer)] = offer
        if inline:
            jurisdiction = _jurisdiction_lookup()
            for item in inline:
                offer = Offer(
                    provider=self.fleet_name,
                    region=item.region,
                    zone=item.zone,
                    instance_type=item.instance_type,
                    accelerator=item.accelerator,
                    count=item.count,
                    price=item.price,
                    spot_price=item.spot_price,
                    capacity=self._inline_capacity(item),
                    jurisdiction=jurisdiction(item.region),
                    catalog_version="inline",
                )
                # Written out by hand, an inline offer overrides the catalog's for its pool.
                pools[_pool_key(offer)] = offer
        return {k: o for k, o in pools.items() if _matches(self._regions, o.region)}

    def _inline_capacity(self, item: InlineOffer) -> int | None:
        if item.capacity is not None:
            return item.capacity
        for key in (
            f"{item.zone}/{item.instance_type}" if item.zone else None,
            f"{item.region}/{item.instance_type}",
            item.instance_type,
        ):
            if key is not None and key in self._capacity:
                return self._capacity[key]
        return None

    # -- the Provider protocol -------------------------------------------------------------

    def check(self) -> None:
        """Probe the simulated cloud; it is always reachable."""

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the offers matching ``request`` with their free capacity now.

        Args:
            request: Accelerators, minimum accelerators per node and region globs.

        Returns:
            Matching offers, capacity reduced by the nodes live workloads hold.
        """
        wanted = set(request.accelerators)
        with self.state.lock:
            held = self._held(self._clock())
        out = []
        for key, offer in self._pools.items():
            if wanted and offer.accelerator not in wanted:
                continue
            if offer.count < request.count or not _matches(request.regions, offer.region):
                continue
            if offer.capacity is not None:
                offer = dataclasses.replace(
                    offer, capacity=max(0, offer.capacity - held.get(key, 0))
                )
            out.append(offer)
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch ``spec`` on ``offer``; the same ``request_id`` returns the same handle.

        Args:
            offer: An offer this provider made.
            spec: What to launch.
            request_id: Idempotency key.

        Returns:
            The workload's handle.

        Raises:
            InvalidRequestError: If the offer is not this provider's, spot is asked where
                there is no spot market, or ``request_id`` was used for another launch.
            CapacityError: If an injected fault says so or the pool lacks free nodes.
            QuotaError: If an injected quota fault fires.
            TransientError: If an injected transient fault fires.
        """
        handle_id = self._handle_id(request_id)
        pool_key = _pool_key(offer)
        digest = _spec_digest(spec)
        with self.state.lock:
            now = self._clock()
            known = self.state.workloads.get(handle_id)
            if known is not None:
                if (known.request_id, known.pool, known.spec_digest) != (
                    request_id,
                    pool_key,
                    digest,
                ):
                    raise InvalidRequestError(
                        f"request id {request_id!r} was already used for another launch",
                        provider=self.fleet_name,
                    )
                return known.handle()

            pool = self._pools.get(pool_key)
            if pool is None:
                raise InvalidRequestError(
                    f"{self.fleet_name} has no offer {offer.instance_type} in "
                    f"{offer.zone or offer.region}",
                    provider=self.fleet_name,
                )
            if spec.market is MarketKind.SPOT and pool.spot_price is None:
                raise InvalidRequestError(
                    f"{pool.instance_type} in {pool.zone or pool.region} has no spot market",
                    provider=self.fleet_name,
                )
            if spec.nodes < 1:
                raise InvalidRequestError(
                    f"nodes must be at least 1, got {spec.nodes}", provider=self.fleet_name
                )
            self._fire_launch_fault(pool)
            pooled = offer.reservation is None
            if pooled and pool.capacity is not None:
                free = pool.capacity - self._held(now).get(pool_key, 0)
                if free < spec.nodes:
                    raise CapacityError(
                        f"{pool.instance_type} in {pool.zone or pool.region}: "
                        f"{free} node(s) free, {spec.nodes} asked",
                        provider=self.fleet_name,
                        scope=self._zone_scope(pool),
                    )

            duration_s = spec.duration_hours * self.time_scale
            workload = SimWorkload(
                id=handle_id,
                provider=self.fleet_name,
                request_id=request_id,
                region=pool.region,
                zone=pool.zone,
                instance_type=pool.instance_type,
                nodes=spec.nodes,
                market=spec.market.value,
                job_id=spec.job_id,
                pool=pool_key,
                pooled=pooled,
                spec_digest=digest,
                launched_at=now,
                duration_s=duration_s,
                preempt_after_s=(
                    self._schedule_preemption(pool, duration_s)
                    if spec.market is MarketKind.SPOT
                    else None
                ),
                tags={
                    TAG_JOB: spec.job_id,
                    TAG_ATTEMPT: str(spec.attempt),
                    TAG_INSTALL: (
                        spec.install_id if spec.install_id != "default" else self.install_id
                    ),
                },
            )
            self.state.workloads[handle_id] = workload
            return workload.handle()

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle, keyed by ``Handle.id``.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id; unknown ids report UNKNOWN.
        """
        out: dict[str, WorkloadStatus] = {}
        with self.state.lock:
            now = self._clock()
            for handle in handles:
                workload = self.state.workloads.get(handle.id)
                if workload is None:
                    out[handle.id] = WorkloadStatus(
                        WorkloadState.UNKNOWN, "no such workload in the simulated cloud"
                    )
                    continue
                state = workload.state_at(now)
                out[handle.id] = WorkloadStatus(
                    state,
                    _MESSAGES[state],
                    exit_code=0 if state is WorkloadState.SUCCEEDED else None,
                )
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate a live workload, freeing its capacity; otherwise do nothing.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (termination is naturally
                idempotent here).
        """
        with self.state.lock:
            now = self._clock()
            workload = self.state.workloads.get(handle.id)
            # A finished workload keeps its final state; only live ones can be terminated.
            if workload is not None and workload.live_at(now):
                workload.terminated_at = now

    # -- sim extras (not part of the protocol) ------------------------------------------

    def list_owned(self, install_id: str | None = None) -> list[Handle]:
        """Return the live workloads of this fleet provider tagged with an install id.

        Args:
            install_id: Install id to look for (defaults to the provider's own).

        Returns:
            Handles of provisioning or running workloads, in launch order.
        """
        wanted = self.install_id if install_id is None else install_id
        with self.state.lock:
            now = self._clock()
            return [
                w.handle()
                for w in self.state.workloads.values()
                if w.provider == self.fleet_name
                and w.tags.get(TAG_INSTALL) == wanted
                and w.live_at(now)
            ]

    def tags(self, handle: Handle) -> dict[str, str]:
        """Return the tags of a workload.

        Args:
            handle: The workload.

        Returns:
            Its tags; empty for an unknown handle.
        """
        with self.state.lock:
            workload = self.state.workloads.get(handle.id)
            return dict(workload.tags) if workload is not None else {}

    # -- internals -------------------------------------------------------------------------

    def _handle_id(self, request_id: str) -> str:
        # Hashing keeps the id short and cloud-safe whatever the key looks like, and two keys
        # sharing a long prefix still get different ids.
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:12]
        return f"sim-{self.fleet_name}-{digest}"

    def _zone_scope(self, offer: Offer) -> str:
        return f"{self.fleet_name}/{offer.zone or offer.region}"

    def _held(self, now: float) -> dict[str, int]:
        held: dict[str, int] = {}
        for w in self.state.workloads.values():
            if w.pooled and w.live_at(now):
                held[w.pool] = held.get(w.pool, 0) + w.nodes
        return held

    def _fault_key(self, index: int) -> str:
        return f"{self.fleet_name}#{index}"

    def _fault_applies(self, fault: Fault, offer: Offer) -> bool:
        if fault.region is not None and fault.region not in (offer.region, offer.zone):
            return False
        return fault.instance_type is None or fault.instance_type == offer.instance_type

    def _take_fault(self, index: int, fault: Fault) -> bool:
        key = self._fault_key(index)
        used = self.state.fault_uses.get(key, 0)
        if used >= fault.times:
            return False
        self.state.fault_uses[key] = used + 1
        return True

    def _fire_launch_fault(self, offer: Offer) -> None:
        for index, fault in enumerate(self._faults):
            if fault.kind is FaultKind.PREEMPTION or not self._fault_applies(fault, offer):
                continue
            if not self._take_fault(index, fault):
                continue
            where = offer.zone or offer.region
            if fault.kind is FaultKind.CAPACITY:
                raise CapacityError(
                    f"injected capacity fault: no {offer.instance_type} capacity in {where}",
                    provider=self.fleet_name,
                    scope=self._zone_scope(offer),
                )
            if fault.kind is FaultKind.QUOTA:
                raise QuotaError(
                    f"injected quota fault: {offer.instance_type} quota exhausted in "
                    f"{offer.region}",
                    provider=self.fleet_name,
                    scope=f"{self.fleet_name}/{offer.region}",
                )
            raise TransientError(
                f"injected transient fault launching {offer.instance_type} in {where}",
                provider=self.fleet_name,
                scope=self._zone_scope(offer),
            )

    def _schedule_preemption(self, offer: Offer, duration_s: float) -> float | None:
        for index, fault in enumerate(self._faults):
            if fault.kind is not FaultKind.PREEMPTION or not self._fault_applies(fault, offer):
                continue
            after = fault.after_hours * self.time_scale
            # A preemption due after the run ends would never be seen; keep it for the next one.
            if after >= duration_s:
                continue
            if self._take_fault(index, fault):
                return after
        return None


_MESSAGES: dict[WorkloadState, str] = {
    WorkloadState.PROVISIONING: "nodes are being provisioned",
    WorkloadState.RUNNING: "running",
    WorkloadState.SUCCEEDED: "finished",
    WorkloadState.PREEMPTED: "spot capacity reclaimed (simulated preemption)",
    WorkloadState.TERMINATED: "terminated",
    WorkloadState.FAILED: "failed",
    WorkloadState.UNKNOWN: "unknown",
}

