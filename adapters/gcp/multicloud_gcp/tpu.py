"""TPU VMs through the Cloud TPU API: a slice is one queued resource (or a plain node).

Every worker of the slice boots the node program; worker 0 reports the slice's end on the
node's labels. Status reads Google's preemption (node ``PREEMPTED``, spot queued resource
``SUSPENDED``) before that label. See docs/providers/gcp.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from multicloud.adapterkit import GCP_LABELS, node_end
from multicloud.errors import CapacityError, QuotaError, TransientError, error_scope
from multicloud.provider import (
    Handle,
    MarketKind,
    OwnedWorkload,
    WorkloadState,
    WorkloadStatus,
)
from multicloud_gcp.compute import request_uuid
from multicloud_gcp.errors import failure_from_status
from multicloud_gcp.offers import region_of
from multicloud_gcp.workload import (
    LABEL_EXIT,
    META_TYPE,
    TPU_RUNTIME_VERSIONS,
    Launch,
    label_value,
    tpu_generation,
)

if TYPE_CHECKING:
    from multicloud_gcp.provider import GCPProvider

__all__ = ["KIND_NODE", "KIND_QR", "TPUs"]

KIND_QR = "tpu-qr"
KIND_NODE = "tpu-node"
_CONFIG_TYPES = {"v5litepod": "V5LITE_POD", "v5p": "V5P", "v6e": "V6E"}
_MISSING = object()


class TPUs:
    """Cloud TPU slices of one adapter.

    Args:
        gcp: The adapter (clients, project, options, error boundary).
    """

    def __init__(self, gcp: GCPProvider) -> None:
        self.gcp = gcp

    def _parent(self, zone: str) -> str:
        return f"projects/{self.gcp.project}/locations/{zone}"

    # -- launch ---------------------------------------------------------------------------------

    def launch(self, job: Launch) -> str:
        """Create the slice (a re-send finds it first); return how (queued resource or node)."""
        gcp, zone, base = self.gcp, job.zone, job.base
        parent = self._parent(zone)
        found = gcp.call_or_none(
            lambda: gcp.clients.tpu.get_node(name=f"{parent}/nodes/{base}"),
            doing=f"reading TPU node {base}",
            zone=zone,
        )
        if found is not None:
            job.refuse_reuse(gcp.fleet_name, found.labels, "a TPU slice")
            return KIND_QR if found.queued_resource else KIND_NODE
        if gcp.tpu_queued_resources and self._queued(job):
            return KIND_QR
        node = self._node(job, spot=job.spot)
        op = gcp.call_or_none(
            lambda: gcp.clients.tpu.create_node(parent=parent, node_id=base, node=node),
            doing=f"creating TPU node {base}",
            zone=zone,
            on={409: None},
        )
        if op is not None:
            self._wait(op.operation.name, zone, doing=f"creating TPU node {base}")
        return KIND_NODE

    def _node(self, job: Launch, *, spot: bool) -> Any:
        from google.cloud import tpu_v2

        gcp, zone, kind = self.gcp, job.zone, job.offer.instance_type
        generation = tpu_generation(kind)
        metadata = {**job.metadata, "startup-script": job.program(), META_TYPE: kind}
        node = tpu_v2.Node(
            runtime_version=gcp.tpu_runtime_version
            or TPU_RUNTIME_VERSIONS.get(generation, "tpu-ubuntu2204-base"),
            network_config=tpu_v2.NetworkConfig(
                network=gcp.network,
                subnetwork=gcp.subnetwork or "",
                enable_external_ips=gcp.external_ip,
            ),
            labels=job.labels,
            metadata=metadata,
        )
        topology = gcp.book.topology(zone, kind)
        if topology and generation in _CONFIG_TYPES:
            # The topology the zone lists for this slice, so that the shape is explicit.
            config_type = getattr(tpu_v2.AcceleratorConfig.Type, _CONFIG_TYPES[generation])
            node.accelerator_config = tpu_v2.AcceleratorConfig(type_=config_type, topology=topology)
        else:
            node.accelerator_type = kind.removeprefix("tpu-")
        if spot:
            node.scheduling_config = tpu_v2.SchedulingConfig(spot=True)
        return node

    def _queued(self, job: Launch) -> bool:
        """Create the slice as a queued resource; False where the API offers none (404/501)."""
        from google.cloud import tpu_v2

        gcp, zone, base = self.gcp, job.zone, job.base
        parent, tpu = self._parent(zone), gcp.clients.tpu
        found = gcp.call_or_none(
            lambda: tpu.get_queued_resource(name=f"{parent}/queuedResources/{base}"),
            doing=f"reading queued resource {base}",
            zone=zone,
            on={404: _MISSING, 501: None},
        )
        if found is None:
            return False  # 501: no queued resources here
        if found is not _MISSING:
            specs = found.tpu.node_spec
            job.refuse_reuse(gcp.fleet_name, specs[0].node.labels if specs else {}, "a TPU slice")
            return True
        node_spec = tpu_v2.QueuedResource.Tpu.NodeSpec(
            parent=parent, node_id=base, node=self._node(job, spot=False)
        )
        resource = tpu_v2.QueuedResource(tpu=tpu_v2.QueuedResource.Tpu(node_spec=[node_spec]))
        if job.spot:
            resource.spot = tpu_v2.QueuedResource.Spot()
        key = f"{job.request_id}/{zone}"
        op = None
        for rid in (request_uuid(key), request_uuid(f"{key}/resend/{uuid.uuid4().hex}")):
            request = tpu_v2.CreateQueuedResourceRequest(
                parent=parent, queued_resource_id=base, queued_resource=resource, request_id=rid
            )
            op = gcp.call_or_none(
                lambda r=request: tpu.create_queued_resource(request=r),  # type: ignore[misc]
                doing=f"creating queued resource {base}",
                zone=zone,
                on={404: None, 501: None, 409: _MISSING},
            )
            if op is None:
                return False  # no queued resources here (API or zone): a plain node
            if op is _MISSING:
                return True  # 409: it is there
            if not op.operation.done:
                break
            # An earlier send's finished operation (that create failed, or the queued
            # resource was deleted since): send again as a new request (409 if it is there).
        assert op is not None
        self._wait(op.operation.name, zone, doing=f"creating queued resource {base}")
        return True

    def _wait(self, name: str, zone: str, *, doing: str, missing_ok: bool = False) -> None:
        """Poll a TPU long-running operation (bounded) and raise its error, translated."""
        from google.longrunning import operations_pb2  # type: ignore[import-untyped]

        gcp = self.gcp
        deadline = time.monotonic() + gcp.operation_timeout_s
        request = operations_pb2.GetOperationRequest(name=name)
        while True:
            op = gcp.call(
                lambda: gcp.clients.tpu.get_operation(request=request), doing=doing, zone=zone
            )
            if op.done:
                break
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{doing}: still running after {gcp.operation_timeout_s}s",
                    provider=gcp.fleet_name,
                    scope=error_scope(gcp.fleet_name, region_of(zone), zone),
                )
            time.sleep(gcp.poll_interval_s)
        if op.HasField("error") and op.error.code:
            failure = failure_from_status(op.error.code, op.error.message)
            if not (missing_ok and failure.status == 404):
                raise gcp.boundary.error(failure, region=region_of(zone), zone=zone, doing=doing)

    # -- status, delete, sweep ------------------------------------------------------------------

    def _list(self, zone: str, what: str, fn: Callable[[str], Any]) -> list[Any] | None:
        """A TPU list call; None where the zone (404) or the API (501) serves none."""
        found: list[Any] | None = self.gcp.call_or_none(
            lambda: list(fn(self._parent(zone))),
            on={404: None, 501: None},
            doing=f"listing TPU {what} in {zone}",
            zone=zone,
        )
        return found

    def status(self, zone: str, handles: list[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of the zone's slices: queued resources, then nodes."""
        tpu = self.gcp.clients.tpu
        queued = {}
        if any(h.get("kind") == KIND_QR for h in handles):
            found = self._list(
                zone, "queued resources", lambda p: tpu.list_queued_resources(parent=p)
            )
            queued = {q.name.rsplit("/", 1)[-1]: q for q in found or ()}
        # After the queued resources: a slice that just became ACTIVE has its node listed.
        nodes = {
            n.name.rsplit("/", 1)[-1]: n
            for n in self._list(zone, "nodes", lambda p: tpu.list_nodes(parent=p)) or ()
        }
        out = {}
        for handle in handles:
            qr, node = queued.get(handle.id), nodes.get(handle.id)
            if handle.get("kind") == KIND_QR and qr is not None:
                out[handle.id] = self._queued_state(handle, qr, node, zone)
            else:
                out[handle.id] = self._node_state(handle, node, reclaimed=False)
        return out

    def _queued_state(self, handle: Handle, qr: Any, node: Any, zone: str) -> WorkloadStatus:
        from google.cloud import tpu_v2

        qs = tpu_v2.QueuedResourceState.State
        state = qr.state.state
        if state in (qs.CREATING, qs.ACCEPTED, qs.WAITING_FOR_RESOURCES, qs.PROVISIONING):
            return WorkloadStatus(WorkloadState.PROVISIONING, f"queued resource {state.name}")
        if state == qs.FAILED:
            error = qr.state.failed_data.error
            failure = failure_from_status(error.code, error.message)
            lost = self.gcp.boundary.error(failure, region=handle.region, zone=zone)
            message = f"queued resource failed: {error.message}"
            if isinstance(lost, (CapacityError, QuotaError)):
                # The slice never got its capacity: capacity lost, the job re-placed as after
                # a CapacityError at launch, with the scope to keep out of the next plan.
                return WorkloadStatus(WorkloadState.PREEMPTED, message, blocked_scope=lost.scope)
            if isinstance(lost, TransientError):
                return WorkloadStatus(WorkloadState.TERMINATED, message)
            return WorkloadStatus(WorkloadState.FAILED, message)
        if state == qs.DELETING:
            return WorkloadStatus(WorkloadState.TERMINATED, "queued resource is being deleted")
        suspended = state in (qs.SUSPENDING, qs.SUSPENDED)
        if suspended and handle.market is not MarketKind.SPOT:
            return WorkloadStatus(WorkloadState.TERMINATED, f"queued resource {state.name}")
        # A spot slice's queued resource is SUSPENDED when Google reclaims it.
        return self._node_state(handle, node, reclaimed=suspended)

    @staticmethod
    def _node_state(handle: Handle, node: Any, *, reclaimed: bool) -> WorkloadStatus:
        from google.cloud import tpu_v2

        ns = tpu_v2.Node.State
        state: Any = node.state if node is not None else None
        spot = handle.market is MarketKind.SPOT
        # Google's preemption wins over whatever worker 0 reported (its container was killed).
        reclaimed = reclaimed or state == ns.PREEMPTED or (spot and state == ns.TERMINATED)
        end = node_end(node.labels.get(LABEL_EXIT) if node else None, reclaimed=reclaimed)
        if end is not None:
            return end
        if node is None:
            return WorkloadStatus(WorkloadState.UNKNOWN, "no TPU node left for this workload")
        if state in (ns.CREATING, ns.STARTING, ns.RESTARTING, ns.STATE_UNSPECIFIED):
            return WorkloadStatus(WorkloadState.PROVISIONING, f"TPU node {state.name}")
        if state in (ns.DELETING, ns.TERMINATED, ns.STOPPED, ns.STOPPING, ns.HIDDEN):
            return WorkloadStatus(WorkloadState.TERMINATED, f"TPU node {state.name}")
        return WorkloadStatus(WorkloadState.RUNNING, f"TPU node {state.name}")

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete the queued resource (``force``: with its node) or the node; gone is fine."""
        from google.cloud import tpu_v2

        zone, tpu = str(handle.zone), self.gcp.clients.tpu
        parent = self._parent(zone)
        if handle.get("kind") == KIND_QR:
            request = tpu_v2.DeleteQueuedResourceRequest(
                name=f"{parent}/queuedResources/{handle.id}",
                force=True,
                request_id=request_uuid(f"{request_id}/delete"),
            )
            op = self.gcp.call_or_none(
                lambda: tpu.delete_queued_resource(request=request),
                doing=f"deleting queued resource {handle.id}",
                zone=zone,
            )
        else:
            op = self.gcp.call_or_none(
                lambda: tpu.delete_node(name=f"{parent}/nodes/{handle.id}"),
                doing=f"deleting TPU node {handle.id}",
                zone=zone,
            )
        if op is not None:
            self._wait(op.operation.name, zone, doing=f"deleting {handle.id}", missing_ok=True)

    def owned(self, install: str) -> list[OwnedWorkload]:
        """Return this install's slices: queued resources (even still waiting), then nodes."""
        gcp, tpu = self.gcp, self.gcp.clients.tpu
        out = []
        for zone in sorted(gcp.book.tpu_zones()):
            found: dict[str, tuple[Any, MarketKind, str]] = {}
            if gcp.tpu_queued_resources:
                for qr in (
                    self._list(
                        zone, "queued resources", lambda p: tpu.list_queued_resources(parent=p)
                    )
                    or ()
                ):
                    if qr.tpu.node_spec:
                        market = MarketKind.SPOT if "spot" in qr else MarketKind.ON_DEMAND
                        found[qr.name.rsplit("/", 1)[-1]] = (
                            qr.tpu.node_spec[0].node,
                            market,
                            KIND_QR,
                        )
            for node in self._list(zone, "nodes", lambda p: tpu.list_nodes(parent=p)) or ():
                spot = node.scheduling_config.spot
                market = MarketKind.SPOT if spot else MarketKind.ON_DEMAND
                found.setdefault(node.name.rsplit("/", 1)[-1], (node, market, KIND_NODE))
            for base, (node, market, kind) in sorted(found.items()):
                meta = dict(node.metadata)
                if dict(node.labels).get(GCP_LABELS.key("install")) != label_value(install):
                    continue
                workload = gcp.owned_workload(
                    base, zone, meta.get(META_TYPE, ""), 1, market, dict(node.labels), meta, kind
                )
                if workload is not None:
                    out.append(workload)
        return out
