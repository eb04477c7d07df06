"""``SimProvider``: the simulated cloud behind the Provider protocol."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    error_scope,
)
from multicloud.models import Fault, InlineOffer
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
)
from multicloud.sim.faults import FaultInjector
from multicloud.sim.state import SimState
from multicloud.sim.workload import TAG_ATTEMPT, TAG_INSTALL, TAG_JOB, SimWorkload

__all__ = ["SimProvider"]


def _pool_key(offer: Offer) -> str:
    # Reservation offers draw on the same physical pool; the suffix only separates contracts.
    return f"{offer.provider}/{offer.zone or offer.region}/{offer.instance_type}"


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(LaunchSpec))


def _spec_digest(spec: LaunchSpec) -> str:
    # A shallow dict encodes to the same text as dataclasses.asdict (no field nests a
    # dataclass), without asdict's deep copy, the largest cost of a launch.
    fields = {name: getattr(spec, name) for name in _SPEC_FIELDS}
    text = json.dumps(fields, sort_keys=True, default=str)
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
        clock: Source of time in seconds. The wall clock by default, because a journaled
            cloud compares readings taken by different processes and before restarts.
        install_id: Install id tagged on workloads when the spec does not carry one.
        cloud: Catalog cloud to simulate (defaults to ``fleet_name``).
        state: Shared cloud state; a fresh in-memory one when neither it nor
            ``state_path`` is given.
        state_path: Journal of a cloud shared across processes and restarts; opened with
            ``SimState.open(state_path, shared=True)``. A path rather than a state so that
            it can be passed to providers built in other processes.

    Raises:
        ValueError: If ``time_scale`` is not positive, ``catalog`` is not ``"builtin"``,
            both ``state`` and ``state_path`` are given, or the journal is not one.
        OSError: If the journal cannot be opened.
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
        clock: Callable[[], float] = time.time,
        install_id: str = "default",
        cloud: str | None = None,
        state: SimState | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if catalog not in (None, "builtin"):
            raise ValueError(f"catalog must be 'builtin' or None, got {catalog!r}")
        if state is not None and state_path is not None:
            raise ValueError("give a SimProvider state or state_path, not both")
        if state_path is not None:
            state = SimState.open(state_path, shared=True)
        self.fleet_name = fleet_name
        self.cloud = cloud or fleet_name
        self.time_scale = float(time_scale)
        self.install_id = install_id
        self.state = state if state is not None else SimState()
        self._clock = clock
        self._capacity = dict(capacity or {})
        self._faults = FaultInjector(fleet_name, tuple(faults), time_scale)
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
        with self.state.transaction() as state:
            held = state.held_at(self._clock())
        out = []
        for key, offer in self._pools.items():
            if wanted and offer.accelerator not in wanted:
                continue
            if offer.count < request.count or not _matches(request.regions, offer.region):
                continue
            taken = held.get(key, 0)
            # Offers are frozen: a pool nothing holds nodes of answers with its own offer,
            # not a copy (copying every offer of every round cost the cycle ~0.5 ms).
            if taken and offer.capacity is not None:
                offer = dataclasses.replace(offer, capacity=max(0, offer.capacity - taken))
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
        with self.state.transaction() as state:
            now = self._clock()
            known = state.workloads.get(handle_id)
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
            self._faults.fire_launch_fault(self.state, pool)
            pooled = offer.reservation is None
            if pooled and pool.capacity is not None:
                free = pool.capacity - state.held_at(now).get(pool_key, 0)
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
                    self._faults.schedule_preemption(self.state, pool, duration_s)
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
            state.add_workload(workload)
            return workload.handle()

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle, keyed by ``Handle.id``.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id; unknown ids report UNKNOWN.
        """
        out: dict[str, WorkloadStatus] = {}
        with self.state.transaction() as cloud:
            now = self._clock()
            for handle in handles:
                workload = cloud.workloads.get(handle.id)
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
        with self.state.transaction() as state:
            now = self._clock()
            workload = state.workloads.get(handle.id)
            # A finished workload keeps its final state; only live ones can be terminated.
            if workload is not None and workload.live_at(now):
                state.mark_terminated(handle.id, now)

    def batch(self) -> contextlib.AbstractContextManager[SimState]:
        """Group calls into one transaction of the shared state (``SupportsBatch``).

        Returns:
            ``state.transaction()``: one lock, one catch-up and one journal write for a
            whole batch of launches or terminations.
        """
        return self.state.transaction()

    # -- the orphan sweep (SupportsSweep) ----------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the live workloads of this fleet provider that ``install_id`` launched.

        Args:
            install_id: Install id the workloads are tagged with.

        Returns:
            Provisioning or running workloads in launch order, with the job and attempt
            they are tagged with; the scheduler's orphan sweep terminates those no live
            attempt owns.
        """
        out = []
        with self.state.transaction() as state:
            now = self._clock()
            for w in state.live_workloads(now):
                if w.provider != self.fleet_name or w.tags.get(TAG_INSTALL) != install_id:
                    continue
                try:
                    attempt = int(w.tags.get(TAG_ATTEMPT, ""))
                except ValueError:
                    # Attempts count from 1, so no live attempt owns a workload whose tag
                    # cannot be read: the sweep ends it, as it should.
                    attempt = 0
                out.append(OwnedWorkload(w.handle(), w.tags.get(TAG_JOB, w.job_id), attempt))
        return out

    # -- sim extras (not part of the protocol) ------------------------------------------

    def list_owned(self, install_id: str | None = None) -> list[Handle]:
        """Return the live workloads of this fleet provider tagged with an install id.

        Args:
            install_id: Install id to look for (defaults to the provider's own).

        Returns:
            Handles of provisioning or running workloads, in launch order.
        """
        wanted = self.install_id if install_id is None else install_id
        return [o.handle for o in self.owned(wanted)]

    def tags(self, handle: Handle) -> dict[str, str]:
        """Return the tags of a workload.

        Args:
            handle: The workload.

        Returns:
            Its tags; empty for an unknown handle.
        """
        with self.state.transaction() as state:
            workload = state.workloads.get(handle.id)
            return dict(workload.tags) if workload is not None else {}

    # -- internals -------------------------------------------------------------------------

    def _handle_id(self, request_id: str) -> str:
        # Hashing keeps the id short and cloud-safe whatever the key looks like, and two keys
        # sharing a long prefix still get different ids.
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:12]
        return f"sim-{self.fleet_name}-{digest}"

    def _zone_scope(self, offer: Offer) -> str:
        return error_scope(self.fleet_name, offer.region, offer.zone)


_MESSAGES: dict[WorkloadState, str] = {
    WorkloadState.PROVISIONING: "nodes are being provisioned",
    WorkloadState.RUNNING: "running",
    WorkloadState.SUCCEEDED: "finished",
    WorkloadState.PREEMPTED: "spot capacity reclaimed (simulated preemption)",
    WorkloadState.TERMINATED: "terminated",
    WorkloadState.FAILED: "failed",
    WorkloadState.UNKNOWN: "unknown",
}
