"""GPU VMs on Compute Engine: a gang is ``nodes`` VMs ``<base>-<i>`` in the offer's zone.

Launch inserts the missing VMs (``requestId`` = UUIDv5 of the request id, zone and node;
Google de-duplicates on it) under a COLLOCATED placement policy for a gang, waits for the
operations with the adapter's own operation clients, and deletes a partial gang on a fatal
error. Status is one ``instances.list`` per zone: Google's preemption signal first, then the
node's ``multicloud-exit`` label. See docs/providers/gcp.md.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from multicloud.adapterkit import GCP_LABELS, gang_end, node_end
from multicloud.errors import ProviderError, TransientError, error_scope
from multicloud.provider import (
    Handle,
    MarketKind,
    OwnedWorkload,
    WorkloadState,
    WorkloadStatus,
)
from multicloud_gcp.errors import failure_from_operation
from multicloud_gcp.offers import region_of
from multicloud_gcp.workload import (
    DEFAULT_GPU_IMAGE,
    LABEL_EXIT,
    LABEL_HANDLE,
    LABEL_INSTALL,
    Launch,
    gvnic_only,
    has_rdma,
    label_value,
)

if TYPE_CHECKING:
    from multicloud_gcp.provider import GCPProvider

__all__ = ["KIND_VM", "REQUEST_NAMESPACE", "VMs", "request_uuid"]

log = logging.getLogger(__name__)

KIND_VM = "vm"
# uuid5(NAMESPACE_URL, "https://github.com/multicloud/multicloud-gcp"), fixed forever.
REQUEST_NAMESPACE = uuid.UUID("8e2b5e15-a710-50e7-8197-6837151d3ff0")
_STOPPED = frozenset({"STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED"})
_MOVING = frozenset({"STOPPING", "SUSPENDING"})


def request_uuid(key: str) -> str:
    """Return the UUIDv5 of ``key``: the ``requestId`` Google de-duplicates on."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, key))


def _done(op: Any) -> bool:
    from google.cloud import compute_v1

    return bool(op.status == compute_v1.Operation.Status.DONE)


class VMs:
    """Compute Engine GPU VMs of one adapter.

    Args:
        gcp: The adapter (clients, project, options, error boundary).
    """

    def __init__(self, gcp: GCPProvider) -> None:
        self.gcp = gcp

    # -- launch ---------------------------------------------------------------------------------

    def launch(self, job: Launch) -> None:
        """Create the gang's VMs (only those missing); a partial gang is undone on a fatal error.

        Args:
            job: The launch.

        Raises:
            ProviderError: Quota (before any insert), capacity, a reused request id, ...
        """
        offer, spec, zone, base = job.offer, job.spec, job.zone, job.base
        existing = {i.name: i for i in self.find(zone, f'labels.{LABEL_HANDLE} = "{base}"')}
        for instance in existing.values():
            job.refuse_reuse(self.gcp.fleet_name, instance.labels, f"VM {instance.name}")
        # A VM stopped without having reported (an undo or terminate deleting it, a
        # preemption, a host error) is no node of a live gang: adopting it would hand the
        # scheduler a workload already lost. It is replaced.
        stale = [
            i for i in existing.values() if i.status in _STOPPED and LABEL_EXIT not in i.labels
        ]
        if stale:
            self._clear_stale(zone, stale, job.request_id)
            for instance in stale:
                del existing[instance.name]
        names = [f"{base}-{i}" for i in range(spec.nodes)]
        missing = [(i, n) for i, n in enumerate(names) if n not in existing]
        if not missing:
            return
        self.gcp.book.check_quota(offer, spec, nodes=len(missing))
        request_id = job.request_id
        policy = self._placement(job)
        rdma = has_rdma(offer.instance_type) and bool(self.gcp.rdma_subnetworks)
        metadata = {**job.metadata, "startup-script": job.program(rdma=rdma)}
        operations: list[tuple[str, Any]] = []
        failures: list[ProviderError] = []
        for index, name in missing:
            body = self._body(name, job, metadata)
            if policy:
                body.resource_policies = [policy]
            try:
                op = self._send(
                    lambda rid, b=body: self._insert(zone, b, rid),  # type: ignore[misc]
                    f"{request_id}/{zone}/{index}",
                )
            except ProviderError as exc:
                # Stop, but still wait for the inserts already sent: what happens next
                # depends on which VMs came up.
                failures.append(exc)
                break
            if op is not None:
                operations.append((name, op))
        failures = self._wait(zone, operations, doing="creating instances") + failures
        fatal = next((f for f in failures if not isinstance(f, TransientError)), None)
        if fatal is None and failures:
            # Only passing errors: the scheduler re-sends the same request id, which adopts
            # the VMs that came up and inserts the rest. Deleting them would restart it all.
            raise failures[0]
        if fatal is None:
            return
        # Capacity, quota, a bad request: a partial gang is useless and still billed. A fresh
        # key each time, so that an earlier undo of the same launch is never answered instead.
        undo = f"{request_id}/undo/{uuid.uuid4().hex}"
        try:
            self.delete(zone, names, request_id=undo)
            if policy:
                self.delete_policy(offer.region, base, request_id=undo)
        except ProviderError as exc:
            log.warning("could not clean up the partial gang %s: %s", base, exc)
        raise fatal

    def _clear_stale(self, zone: str, stale: list[Any], request_id: str) -> None:
        moving = sorted(i.name for i in stale if i.status in _MOVING)
        if moving:
            raise TransientError(
                f"VM(s) {', '.join(moving)} of an earlier send of this launch are still "
                "stopping or being deleted; re-send once they are gone",
                provider=self.gcp.fleet_name,
                scope=error_scope(self.gcp.fleet_name, region_of(zone), zone),
            )
        names = sorted(i.name for i in stale)
        log.info("replacing VM(s) %s that stopped without reporting", ", ".join(names))
        self.delete(zone, names, request_id=f"{request_id}/replace/{uuid.uuid4().hex}")

    def _send(self, send: Callable[[str], Any | None], key: str) -> Any | None:
        """Send a create under ``requestId`` = UUIDv5(key); None when it already exists (409).

        Google answers a ``requestId`` it has seen with that request's operation and creates
        nothing. A create is never finished when answered, so a DONE answer is an earlier
        send's, whose resource failed or was deleted since: it is sent once more under a
        fresh ``requestId``; the deterministic name still rules out a duplicate (409).
        """
        op = send(request_uuid(key))
        if op is not None and _done(op):
            op = send(request_uuid(f"{key}/resend/{uuid.uuid4().hex}"))
        return op

    def _insert(self, zone: str, body: Any, rid: str) -> Any | None:
        from google.cloud import compute_v1

        request = compute_v1.InsertInstanceRequest(
            project=self.gcp.project, zone=zone, instance_resource=body, request_id=rid
        )
        return self.gcp.call_or_none(
            lambda: self.gcp.clients.instances.insert_unary(request=request),
            doing=f"inserting {body.name}",
            zone=zone,
            on={409: None},
        )

    def _placement(self, job: Launch) -> str:
        """Create (or find) the gang's COLLOCATED placement policy; its link ("" for none)."""
        offer, spec, base = job.offer, job.spec, job.base
        if not self.gcp.compact_placement or spec.nodes < 2:
            return ""
        from google.cloud import compute_v1

        region, name = offer.region, f"{base}-pp"
        policy = compute_v1.ResourcePolicy(
            name=name,
            description=f"multicloud gang {base} ({spec.nodes} x {offer.instance_type})",
            group_placement_policy=compute_v1.ResourcePolicyGroupPlacementPolicy(
                collocation="COLLOCATED", vm_count=spec.nodes
            ),
        )

        def send(rid: str) -> Any | None:
            request = compute_v1.InsertResourcePolicyRequest(
                project=self.gcp.project,
                region=region,
                resource_policy_resource=policy,
                request_id=rid,
            )
            return self.gcp.call_or_none(
                lambda: self.gcp.clients.resource_policies.insert_unary(request=request),
                doing=f"creating placement policy {name}",
                region=region,
                on={409: None},
            )

        op = self._send(send, f"{job.request_id}/{region}/placement")
        failures = self._wait(region, [(name, op)] if op else [], doing="placing", regional=True)
        if failures:
            raise failures[0]
        return f"projects/{self.gcp.project}/regions/{region}/resourcePolicies/{name}"

    def _body(self, name: str, job: Launch, metadata: dict[str, str]) -> Any:
        from google.cloud import compute_v1

        gcp, zone, kind, spot = self.gcp, job.zone, job.offer.instance_type, job.spot
        nic = compute_v1.NetworkInterface(network=gcp.network)
        if gcp.subnetwork:
            nic.subnetwork = gcp.subnetwork
        if gvnic_only(kind):
            # compute_v1.NetworkInterface.NicType: GVNIC, MRDMA, VIRTIO_NET, ...
            nic.nic_type = "GVNIC"
        if gcp.external_ip:
            nic.access_configs = [
                compute_v1.AccessConfig(name="external-nat", type_="ONE_TO_ONE_NAT")
            ]
        nics = [nic]
        if has_rdma(kind):
            # One ConnectX-7 NIC per subnetwork of the RDMA-profile VPC (NIC type MRDMA).
            nics += [
                compute_v1.NetworkInterface(subnetwork=s, nic_type="MRDMA")
                for s in gcp.rdma_subnetworks
            ]
        scheduling = compute_v1.Scheduling(
            # GPU VMs cannot live-migrate; spot VMs must not restart on their own.
            on_host_maintenance="TERMINATE",
            automatic_restart=not spot,
            provisioning_model="SPOT" if spot else "STANDARD",
        )
        if spot:
            # STOP keeps the VM (and its labels) so that status sees the preemption.
            scheduling.instance_termination_action = "STOP"
        # A4 and A3 Ultra boot only from Hyperdisk; the older families from Persistent Disk.
        disk_type = gcp.disk_type or (
            "hyperdisk-balanced" if kind.startswith(("a4-", "a3-ultragpu")) else "pd-balanced"
        )
        items = {"install-nvidia-driver": "True", **metadata}
        return compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{kind}",
            labels=job.labels,
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key=k, value=v) for k, v in sorted(items.items())]
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=gcp.image or DEFAULT_GPU_IMAGE,
                        disk_size_gb=gcp.disk_gb,
                        disk_type=f"zones/{zone}/diskTypes/{disk_type}",
                    ),
                )
            ],
            network_interfaces=nics,
            scheduling=scheduling,
            service_accounts=[
                compute_v1.ServiceAccount(
                    email=gcp.service_account or "default",
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            ],
        )

    def _wait(
        self,
        where: str,
        operations: Sequence[tuple[str, Any]],
        *,
        doing: str,
        regional: bool = False,
    ) -> list[ProviderError]:
        """Wait for zone (or region) operations with our own operation client (bounded).

        Returns:
            The translated error of each operation that failed (a 404 inside is "gone").
        """
        from google.cloud import compute_v1

        gcp = self.gcp
        region, zone = (where, None) if regional else (region_of(where), where)
        deadline = time.monotonic() + gcp.operation_timeout_s
        pending = {op.name: target for target, op in operations}
        failures: list[ProviderError] = []
        while pending:
            if time.monotonic() > deadline:
                failures.append(
                    TransientError(
                        f"{doing}: operations still running after {gcp.operation_timeout_s}s",
                        provider=gcp.fleet_name,
                        scope=error_scope(gcp.fleet_name, region, zone),
                    )
                )
                break
            for name, target in list(pending.items()):
                if regional:
                    request: Any = compute_v1.WaitRegionOperationRequest(
                        project=gcp.project, region=where, operation=name
                    )
                    wait = gcp.clients.region_operations.wait
                else:
                    request = compute_v1.WaitZoneOperationRequest(
                        project=gcp.project, zone=where, operation=name
                    )
                    wait = gcp.clients.zone_operations.wait
                op = gcp.call(
                    functools.partial(wait, request=request),
                    doing=f"{doing}: waiting",
                    zone=zone,
                    region=region,
                )
                if not _done(op):
                    continue
                del pending[name]
                errors = [(e.code, e.message) for e in op.error.errors] if op.error else []
                if not errors and op.http_error_status_code < 400:
                    continue
                failure = failure_from_operation(
                    errors, op.http_error_status_code, op.http_error_message
                )
                if failure.status != 404 and not failure.has("RESOURCE_NOT_FOUND"):
                    failures.append(
                        gcp.boundary.error(
                            failure, region=region, zone=zone, doing=f"{doing} ({target})"
                        )
                    )
        return failures

    # -- delete ---------------------------------------------------------------------------------

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete a gang's VMs (404 = gone) and its placement policy."""
        zone = str(handle.zone)
        found = self.find(zone, f'labels.{LABEL_HANDLE} = "{handle.id}"')
        self.delete(zone, [i.name for i in found], request_id=request_id)
        if self.gcp.compact_placement and handle.nodes > 1:
            self.delete_policy(handle.region, handle.id, request_id=request_id)

    def delete(self, zone: str, names: list[str], *, request_id: str) -> None:
        """Delete VMs by name; gone is fine.

        Raises:
            ProviderError: The first delete that failed.
        """
        from google.cloud import compute_v1

        operations: list[tuple[str, Any]] = []
        for name in names:
            request = compute_v1.DeleteInstanceRequest(
                project=self.gcp.project,
                zone=zone,
                instance=name,
                request_id=request_uuid(f"{request_id}/delete/{name}"),
            )
            op = self.gcp.call_or_none(
                lambda r=request: self.gcp.clients.instances.delete_unary(request=r),  # type: ignore[misc]
                doing=f"deleting {name}",
                zone=zone,
            )
            if op is not None:
                operations.append((name, op))
        failures = self._wait(zone, operations, doing="deleting instances")
        if failures:
            raise failures[0]

    def delete_policy(self, region: str, base: str, *, request_id: str) -> None:
        """Delete a gang's placement policy; gone is fine, in use is logged and left."""
        from google.cloud import compute_v1

        name = f"{base}-pp"
        request = compute_v1.DeleteResourcePolicyRequest(
            project=self.gcp.project,
            region=region,
            resource_policy=name,
            request_id=request_uuid(f"{request_id}/delete/{name}"),
        )
        try:
            op = self.gcp.call_or_none(
                lambda: self.gcp.clients.resource_policies.delete_unary(request=request),
                doing=f"deleting placement policy {name}",
                region=region,
            )
            failures = self._wait(
                region, [(name, op)] if op else [], doing="unplacing", regional=True
            )
        except ProviderError as exc:
            failures = [exc]
        for failure in failures:
            log.warning("placement policy %s not deleted: %s", name, failure)

    # -- status and sweep -----------------------------------------------------------------------

    def find(self, zone: str, filter_: str) -> list[Any]:
        """List the zone's instances matching a filter."""
        from google.cloud import compute_v1

        request = compute_v1.ListInstancesRequest(
            project=self.gcp.project, zone=zone, filter=filter_
        )
        return self.gcp.call(
            lambda: list(self.gcp.clients.instances.list(request=request)),
            doing=f"listing instances in {zone}",
            zone=zone,
        )

    def status(self, zone: str, install: str, handles: list[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of the zone's gangs: one list call (two after a spot stop)."""
        filter_ = f'labels.{LABEL_INSTALL} = "{install}"' if install else f"labels.{LABEL_HANDLE}:*"
        gangs: dict[str, list[Any]] = defaultdict(list)
        for instance in self.find(zone, filter_):
            gangs[instance.labels.get(LABEL_HANDLE, "")].append(instance)
        # Google's own word on a reclaim comes first: a spot VM stopped (with or without an
        # exit label: its container is killed, 137/143) is looked up among the preemptions.
        suspects = any(
            i.status in _STOPPED and i.scheduling.provisioning_model == "SPOT"
            for h in handles
            for i in gangs.get(h.id, ())
        )
        preempted = self._preempted(zone) if suspects else set()
        return {h.id: self._gang(h, gangs.get(h.id, []), preempted) for h in handles}

    def _preempted(self, zone: str) -> set[str]:
        """Names of the zone's instances with a ``compute.instances.preempted`` operation."""
        from google.cloud import compute_v1

        request = compute_v1.ListZoneOperationsRequest(
            project=self.gcp.project,
            zone=zone,
            filter='operationType = "compute.instances.preempted"',
        )
        ops = self.gcp.call(
            lambda: list(self.gcp.clients.zone_operations.list(request=request)),
            doing=f"listing preemptions in {zone}",
            zone=zone,
        )
        return {op.target_link.rsplit("/", 1)[-1] for op in ops}

    @staticmethod
    def _gang(handle: Handle, instances: list[Any], preempted: set[str]) -> WorkloadStatus:
        if not instances:
            return WorkloadStatus(WorkloadState.UNKNOWN, "no instances left for this workload")
        members = []
        for i in instances:
            end = node_end(i.labels.get(LABEL_EXIT), reclaimed=i.name in preempted)
            if end is None and i.status in ("PROVISIONING", "STAGING"):
                end = WorkloadStatus(WorkloadState.PROVISIONING, f"{i.name} {i.status}")
            elif end is None and i.status in ("RUNNING", "REPAIRING"):
                end = WorkloadStatus(WorkloadState.RUNNING, f"{i.name} {i.status}")
            elif end is None:
                end = WorkloadStatus(
                    WorkloadState.FAILED, f"{i.name} is {i.status} without reporting an exit code"
                )
            members.append(end)
        gone = handle.nodes - len(instances)
        if gone > 0:
            members.append(
                WorkloadStatus(
                    WorkloadState.TERMINATED, f"{gone} of {handle.nodes} node(s) are gone"
                )
            )
        return gang_end(members)

    def owned(self, install: str) -> list[OwnedWorkload]:
        """Return this install's gangs in this fleet entry's regions (one aggregated list)."""
        from google.cloud import compute_v1

        gcp = self.gcp
        request = compute_v1.AggregatedListInstancesRequest(
            project=gcp.project,
            filter=f'labels.{LABEL_INSTALL} = "{label_value(install)}" AND '
            f'labels.{GCP_LABELS.key("fleet")} = "{label_value(gcp.fleet_name)}"',
        )
        gangs: dict[tuple[str, str], list[Any]] = defaultdict(list)

        def collect() -> None:
            for scope, scoped in gcp.clients.instances.aggregated_list(request=request):
                zone = scope.rsplit("/", 1)[-1]
                for instance in scoped.instances:
                    gangs[(zone, instance.labels.get(LABEL_HANDLE, ""))].append(instance)

        gcp.call(collect, doing="listing owned instances")
        out = []
        for (zone, base), instances in sorted(gangs.items()):
            first = instances[0]
            spot = first.scheduling.provisioning_model == "SPOT"
            meta = {item.key: item.value for item in first.metadata.items}
            found = gcp.owned_workload(
                base,
                zone,
                first.machine_type.rsplit("/", 1)[-1],
                len(instances),
                MarketKind.SPOT if spot else MarketKind.ON_DEMAND,
                dict(first.labels),
                meta,
                KIND_VM,
            )
            if found is not None:
                out.append(found)
        return out
