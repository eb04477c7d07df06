"""Any Kubernetes GPU cluster behind the Provider API; presets (CoreWeave) subclass it.

* **offers** — the cluster's GPU node pools (:mod:`.pools`), typed by node labels
  (:mod:`.nodes`), priced by the fleet's price card or a preset's list prices
  (:mod:`.pricing`); capacity = free whole nodes.
* **launch** — an Indexed Job + headless Service (every node runs the command), or a
  RayJob for a Ray program (:mod:`.manifests`), through a Kueue LocalQueue where the fleet
  names one (:mod:`.kueue`); names from the request id, AlreadyExists = success, the same
  request id with another spec refused.
* **status** — one list per kind and namespace (and of Kueue Workloads when Kueue manages
  a workload), read by :mod:`.status` and :mod:`.kueue`.
* **terminate** — Foreground delete; 404 is a no-op. **owned** — by the install label.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from multicloud.accelerators import canonical
from multicloud.adapterkit import (
    KUBERNETES_LABELS,
    Ownership,
    check_launch,
    refuse_reuse,
    region_matches,
    resource_name,
)
from multicloud.catalog import load_catalog
from multicloud.errors import CapacityError, InvalidRequestError, QuotaError, error_scope
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
)
from multicloud_kubernetes import manifests as mf
from multicloud_kubernetes.cluster import Cluster
from multicloud_kubernetes.errors import boundary, is_already_exists, is_not_found
from multicloud_kubernetes.kueue import kueue_status, managed, queue_refusal, workloads_by_owner
from multicloud_kubernetes.nodes import (
    INSTANCE_TYPE,
    TYPE_LABELS,
    NodeType,
    accelerator_of,
    catalog_accelerator,
    read_type,
)
from multicloud_kubernetes.pools import NodePool, quota_refusal, read_pools
from multicloud_kubernetes.pricing import parse_price_card, price_of
from multicloud_kubernetes.status import Reading, workload_status

__all__ = ["KubernetesProvider"]

log = logging.getLogger("multicloud_kubernetes")
_STYLE = KUBERNETES_LABELS
_PRESET: Any = object()
# A LocalQueue name is a DNS-1123 subdomain (Kueue's ValidateQueueName).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class KubernetesProvider:
    """Runs workloads on a Kubernetes cluster with GPU nodes (docs/providers/kubernetes.md).

    Args:
        fleet_name: Fleet provider name (default: the adapter's name).
        regions: Region globs of the fleet entry (empty: every region of the cluster).
        kubeconfig: Kubeconfig path (default: ``$KUBECONFIG`` or ``~/.kube/config``).
        context: Kubeconfig context (default: its current one).
        in_cluster: Use the pod's ServiceAccount instead of a kubeconfig.
        namespace: Namespace of every workload.
        price_card: Price by instance type, label value or accelerator: USD per node-hour
            (0 allowed) or ``{cost_usd, years, running_usd_per_hour}`` for owned nodes.
        list_prices: Catalog provider whose list prices price pools not on the card
            (default: the preset's; none for a generic cluster). Unpriced pools are left out.
        region: Region of nodes without a ``topology.kubernetes.io/region`` label.
        image_pull_secrets: Secrets for private images.
        rayjob: Ray programs (``run.ray``) as KubeRay RayJobs: ``auto`` (when the cluster
            serves ``ray.io/v1`` rayjobs), ``always`` or ``never`` (an Indexed Job).
        type_labels: Node labels naming the GPU type, tried in order (default: the
            preset's; generic: GFD, AMD, GKE, instance type).
        gpu_classes: Label value → accelerator, for values the built-in reading misses.
        node_selector: Label selector of the nodes to offer (default: all).
        tolerations: Extra tolerations on every pod.
        unschedulable_grace_s: How long pods may wait to be scheduled, for any reason, or
            to be created, before the workload reads PREEMPTED with its scope blocked.
        request_timeout_s: Timeout of each API request.
        finished_ttl_s: ``ttlSecondsAfterFinished`` of every Job (>= 60, or None).
        ray_image: Image of the Ray head and workers (default: the job's).
        shm_size: Size limit of the memory-backed ``/dev/shm`` (default: none).
        gpu_resources: Extended resources of GPUs; a node's is the first it has.
        rdma_resource: Extended resource of the RDMA devices.
        local_queue: Kueue LocalQueue every workload is submitted through (default: none).
        queue_grace_s: How long a workload may wait in Kueue without admission (queued, or
            requeued after an eviction) before the place is given up (None: for ever).
        api_client: A ready ``kubernetes.client.ApiClient`` (tests, embedding).

    Raises:
        ValueError: If an option is out of range (a negative price, an unknown ``rayjob``
            mode, an unknown accelerator in ``gpu_classes``, a bad queue name).
    """

    name: ClassVar[str] = "kubernetes"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.MULTI_NODE, Capability.QUOTA_PROBE}
    )
    TYPE_LABELS: ClassVar[tuple[str, ...]] = TYPE_LABELS
    """Node labels naming the GPU type, in order (presets name their own)."""
    LIST_PRICES: ClassVar[str | None] = None
    """Catalog provider whose list prices apply to pools not on the price card."""

    def __init__(
        self,
        *,
        fleet_name: str | None = None,
        regions: Sequence[str] = (),
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        namespace: str = "default",
        price_card: Mapping[str, Any] | None = None,
        list_prices: str | None = _PRESET,
        region: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        rayjob: Literal["auto", "always", "never"] = "auto",
        type_labels: Sequence[str] | None = None,
        gpu_classes: Mapping[str, str] | None = None,
        node_selector: str | None = None,
        tolerations: Sequence[Mapping[str, Any]] = (),
        unschedulable_grace_s: float = 60.0,
        request_timeout_s: float = 30.0,
        finished_ttl_s: int | None = 3600,
        ray_image: str | None = None,
        shm_size: str | None = None,
        gpu_resources: Sequence[str] = ("nvidia.com/gpu", "amd.com/gpu"),
        rdma_resource: str = "rdma/ib",
        local_queue: str | None = None,
        queue_grace_s: float | None = 600.0,
        api_client: Any = None,
    ) -> None:
        if rayjob not in ("auto", "always", "never"):
            raise ValueError(f"rayjob must be auto, always or never, got {rayjob!r}")
        if unschedulable_grace_s < 0 or request_timeout_s <= 0 or (queue_grace_s or 0) < 0:
            raise ValueError("unschedulable_grace_s and queue_grace_s must be >= 0 and "
                             "request_timeout_s > 0")
        if finished_ttl_s is not None and (
            type(finished_ttl_s) is not int or finished_ttl_s < 60
        ):
            raise ValueError(f"finished_ttl_s must be whole seconds >= 60 or null, got "
                             f"{finished_ttl_s!r}")
        if local_queue is not None and not _SUBDOMAIN.fullmatch(local_queue):
            raise ValueError(f"local_queue must be a LocalQueue name (DNS-1123), got "
                             f"{local_queue!r}")
        if not gpu_resources:
            raise ValueError("gpu_resources must name at least one extended resource")
        self.gpu_classes = {k: canonical(v) for k, v in (gpu_classes or {}).items()}
        self.price_card = parse_price_card(price_card)
        self.list_prices = self.LIST_PRICES if list_prices is _PRESET else list_prices
        self.fleet_name = fleet_name or self.name
        self.namespace = namespace
        self.region = region
        self.rayjob = rayjob
        self.type_labels = tuple(type_labels or self.TYPE_LABELS)
        self.node_selector = node_selector
        self.gpu_resources = tuple(gpu_resources)
        self.local_queue = local_queue
        self.grace_s, self.queue_grace_s = float(unschedulable_grace_s), queue_grace_s
        self.pod_options = mf.PodOptions(
            rdma_resource=rdma_resource,
            shm_size=shm_size,
            image_pull_secrets=tuple(image_pull_secrets),
            tolerations=tuple(dict(t) for t in tolerations),
            finished_ttl_s=finished_ttl_s,
            ray_image=ray_image,
        )
        self._regions = tuple(regions)
        self.cluster = Cluster(
            self.fleet_name,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
            api_client=api_client,
            request_timeout_s=request_timeout_s,
        )
        self.errors = boundary(self.fleet_name)
        self._skipped: set[str] = set()

    # ------------------------------------------------------------------ the preset's part

    def read_label(self, key: str, value: str) -> str | None:
        """Read the accelerator one type label names (presets extend this).

        Args:
            key: The label key.
            value: Its value.

        Returns:
            The canonical accelerator, or None.
        """
        if value in self.gpu_classes:
            return self.gpu_classes[value]
        return (catalog_accelerator(value) if key == INSTANCE_TYPE else None) or accelerator_of(
            value)

    def node_rdma(self, labels: Mapping[str, str]) -> bool:
        """Return True for a node the labels say has InfiniBand (presets override)."""
        return False

    def node_usable(self, labels: Mapping[str, str]) -> bool:
        """Return False for a node the cluster keeps from work (presets override)."""
        return True

    def node_type(self, labels: Mapping[str, str]) -> NodeType | str:
        """Read what GPU type a node is from its labels.

        Args:
            labels: The node's labels.

        Returns:
            Its type, or why it is left out.
        """
        found = read_type(labels, self.type_labels, self.read_label)
        if isinstance(found, str) or not self.node_rdma(labels):
            return found
        return NodeType(found.accelerator, found.label, found.value, rdma=True)

    # ------------------------------------------------------------------ protocol

    def check(self) -> None:
        """List one Job of the namespace (and read the LocalQueue, with ``local_queue``).

        Proves endpoint, credentials and RBAC at once.

        Raises:
            ProviderError: AuthError, TransientError, ... (the error boundary's); an
                InvalidRequestError or QuotaError for an unusable LocalQueue.
        """
        with self.errors(doing=f"listing jobs in namespace {self.namespace}"):
            self.cluster.batch.list_namespaced_job(self.namespace, limit=1, **self.cluster.timeout)
        if self.local_queue:
            self._check_queue(None, None)

    def pools(self) -> list[NodePool]:
        """Read the cluster's GPU node pools (a list of nodes and one of live pods)."""
        with self.errors(doing="listing nodes and pods"):
            nodes, pods = self.cluster.nodes_and_pods(self.node_selector)
        return read_pools(nodes, pods, node_type=self.node_type, usable=self.node_usable,
                          region=self.region, gpu_resources=self.gpu_resources,
                          rdma_resource=self.pod_options.rdma_resource, skip=self._skip)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return one offer per priced GPU node pool matching ``request`` (no side effects).

        Args:
            request: Accelerators, GPUs per node, region globs.

        Returns:
            Offers sorted by region, zone and instance type.
        """
        out = []
        for pool in self.pools():
            if (request.accelerators and pool.accelerator not in request.accelerators) or (
                pool.gpus < request.count
                or not region_matches(self._regions, pool.region)
                or not region_matches(request.regions, pool.region)
            ):
                continue
            priced = price_of(pool, self.price_card, self.list_prices)
            if priced is None:
                self._skip(f"price:{pool.instance_type}", f"no price for {pool.instance_type} "
                           f"({pool.accelerator}) on the price card or the list prices")
                continue
            out.append(Offer(
                self.fleet_name, pool.region, pool.zone, pool.instance_type, pool.accelerator,
                pool.gpus, priced[0], capacity=pool.free, catalog_version=priced[1],
                jurisdiction=load_catalog().jurisdiction(pool.region),
            ))
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Create the workload of ``spec`` on the planned ``offer``; idempotent by request id.

        Args:
            offer: The planned offer (trusted: accelerator and GPUs per node come from it).
            spec: What to run.
            request_id: Idempotency key; the object name derives from it.

        Returns:
            The handle (the same for a re-sent launch).

        Raises:
            InvalidRequestError: A foreign offer or pool, a spot or reserved launch, no
                image, a Ray program KubeRay cannot run, a request id used for another spec,
                no such LocalQueue or no Kueue.
            CapacityError: The pool has fewer free nodes than the gang.
            QuotaError: A namespace ResourceQuota on GPUs would not admit the pods; the
                LocalQueue is inactive.
            ProviderError: Anything else the error boundary translates.
        """
        check_launch(offer, spec, fleet_name=self.fleet_name, capabilities=self.capabilities,
                     regions=self._regions, needs_image=True)
        scope = error_scope(self.fleet_name, offer.region, offer.zone)
        name, ns = resource_name(self.fleet_name, request_id), self.namespace
        kind = mf.RAYJOB if self._as_rayjob(spec, scope) else mf.JOB
        owner = Ownership.of(spec, offer, request_id)
        handle = Handle.at(offer, spec, id=name, request_id=request_id,
                           extra={"namespace": ns, "kind": kind})
        rayjobs = spec.ray and self.rayjob != "never"
        with self.errors(region=offer.region, zone=offer.zone, doing=f"creating {kind} {name}"):
            # A re-sent launch finds what the first one created before looking at capacity
            # (which that workload itself now holds).
            found = self.cluster.find(ns, name, rayjobs=rayjobs)
            if found is not None:
                return self._same(found, owner, handle)
            pool = next((p for p in self.pools() if p.matches(offer)), None)
            if pool is None:
                raise InvalidRequestError(
                    f"{self.fleet_name} has no GPU node pool {offer.instance_type} in "
                    f"{offer.zone or offer.region}", provider=self.fleet_name, scope=scope)
            if spec.nodes > pool.free:
                raise CapacityError(f"{pool.instance_type} in {pool.zone or pool.region}: "
                                    f"{spec.nodes} node(s) needed, {pool.free} of {pool.nodes} "
                                    "free", provider=self.fleet_name, scope=scope)
            refusal = quota_refusal(self.cluster.quotas(ns), pool.resource,
                                    spec.nodes * offer.count)
            if refusal is not None:
                raise QuotaError(refusal, provider=self.fleet_name, scope=scope)
            if self.local_queue:
                self._check_queue(offer.region, offer.zone)
            labels = {**owner.labels(_STYLE), mf.MANAGED_BY: "multicloud", mf.WORKLOAD: name}
            launch = mf.Launch(name, spec, offer, request_id, pool, labels,
                               {mf.HANDLE: json.dumps(handle.to_json(), sort_keys=True)},
                               queue=self.local_queue)
            build = mf.rayjob if kind == mf.RAYJOB else mf.indexed_job
            try:
                self.cluster.create(ns, build(launch, self.pod_options))
            except Exception as exc:
                if kind == mf.RAYJOB and is_not_found(exc):
                    raise InvalidRequestError(
                        "the cluster serves no ray.io/v1 rayjobs (is KubeRay installed?); set "
                        "rayjob: auto or never", provider=self.fleet_name, scope=scope) from exc
                # Lost a race with a concurrent launch of the same key: it must agree.
                again = self.cluster.find(ns, name, rayjobs=rayjobs) if is_already_exists(
                    exc) else None
                if again is None:
                    raise
                return self._same(again, owner, handle)
        return handle

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return each handle's status from one list per kind and namespace.

        Kueue Workloads are listed too (once per namespace) when a workload is Kueue's:
        queued through a LocalQueue, or suspended by Kueue.

        Args:
            handles: Handles to read.

        Returns:
            One status per distinct handle id.
        """
        by_ns: dict[str, dict[str, Handle]] = defaultdict(dict)
        for h in handles:
            by_ns[h.get("namespace") or self.namespace].setdefault(h.id, h)
        now, out = datetime.now(timezone.utc), {}
        for ns, wanted in by_ns.items():
            with self.errors(doing=f"reading workloads in {ns}"):
                # Pods before their owners: the Job controller accounts a pod (its finalizer)
                # before the pod goes, so a pod missing from this older list that its newer
                # Job does not count was never created. Workloads after them: an admission
                # newer than the Job reads as "starting", never as "lost".
                pods = self.cluster.pods(ns)
                objs = self.cluster.workloads(ns, self._selector(), rayjobs=self.rayjob != (
                    "never") and any(h.get("kind") == mf.RAYJOB for h in wanted.values()))
                queued = [o for n, (_, o) in objs.items() if n in wanted and managed(o)]
                version = self.cluster.kueue_version() if queued else None
                owners = workloads_by_owner(self.cluster.kueue_workloads(ns, version)) if (
                    version) else {}
            for name, handle in wanted.items():
                kind, obj = objs.get(name, ("", {}))
                reading = Reading(error_scope(self.fleet_name, handle.region, handle.zone),
                                  self.grace_s, now, self.queue_grace_s)
                if not obj:
                    out[name] = WorkloadStatus(WorkloadState.UNKNOWN, "no such workload")
                    continue
                meta = obj.get("metadata") or {}
                wl = owners.get(str(meta.get("uid"))) if managed(obj) else None
                queued_status = None if meta.get("deletionTimestamp") else kueue_status(
                    obj, wl, reading)
                out[name] = queued_status or workload_status(kind, obj, pods[name],
                                                             max(1, handle.nodes), reading)
        return {h.id: out[h.id] for h in handles}

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete the workload (Foreground: its pods, Service and Kueue Workload go with it).

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (deleting is idempotent).
        """
        kind = handle.get("kind") or mf.JOB
        with self.errors(region=handle.region, doing=f"deleting {kind} {handle.id}"):
            self.cluster.delete(handle.get("namespace") or self.namespace, kind, handle.id)

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return this fleet entry's workloads of ``install_id`` not being deleted, for the sweep.

        Finished ones too: the scheduler does not terminate an attempt that succeeded, so
        the sweep is what deletes them with their pods (``ttlSecondsAfterFinished`` is the
        backstop); one whose result is still unread belongs to a live attempt.

        Args:
            install_id: The install.

        Returns:
            The workloads, sorted by name.
        """
        key, value = Ownership.selector(_STYLE, install_id)
        with self.errors(doing=f"listing workloads in {self.namespace}"):
            objs = self.cluster.workloads(self.namespace, f"{self._selector()},{key}={value}",
                                          rayjobs=self.rayjob != "never")
        out = []
        for _, obj in (objs[name] for name in sorted(objs)):
            meta = obj.get("metadata") or {}
            owner = Ownership.parse(meta.get("labels") or {}, _STYLE)
            raw = (meta.get("annotations") or {}).get(mf.HANDLE)
            if meta.get("deletionTimestamp") or owner is None or raw is None:
                continue
            if owner.belongs_to(install_id, self.fleet_name, _STYLE):
                handle = Handle.from_json(json.loads(raw))
                out.append(OwnedWorkload(handle, handle.job_id, owner.attempt))
        return out

    def close(self) -> None:
        """Close the client's connection pool."""
        self.cluster.close()

    # ------------------------------------------------------------------ helpers

    def _skip(self, key: str, message: str) -> None:
        if key not in self._skipped:
            self._skipped.add(key)
            log.warning("%s: %s; left out of the offers", self.fleet_name, message)

    def _selector(self) -> str:
        return f"{mf.MANAGED_BY}=multicloud,{_STYLE.key('fleet')}={_STYLE.value(self.fleet_name)}"

    def _check_queue(self, region: str | None, zone: str | None) -> None:
        """Refuse a launch the fleet's LocalQueue cannot take (no Kueue, no queue, inactive)."""
        assert self.local_queue is not None
        scope = error_scope(self.fleet_name, region, zone)
        where = f"Kueue LocalQueue {self.local_queue} in {self.namespace}"
        with self.errors(region=region, zone=zone, doing=f"reading {where}"):
            version = self.cluster.kueue_version()
            queue = self.cluster.local_queue(self.namespace, self.local_queue, version) if (
                version) else None
        if queue is None:
            why = "no such queue" if version else "the cluster serves no kueue.x-k8s.io API"
            raise InvalidRequestError(f"local_queue: {where}: {why}", provider=self.fleet_name,
                                      scope=scope)
        refusal = queue_refusal(queue, self.local_queue)
        if refusal is not None:
            raise QuotaError(refusal, provider=self.fleet_name, scope=scope)

    def _as_rayjob(self, spec: LaunchSpec, scope: str) -> bool:
        def refuse(message: str) -> InvalidRequestError:
            return InvalidRequestError(message, provider=self.fleet_name, scope=scope)

        if not spec.ray or self.rayjob == "never":
            return False
        if not (spec.command if isinstance(spec.command, str) else "".join(spec.command or ())
                ).strip():
            raise refuse(f"job {spec.job_id} is a Ray program without a command (entrypoint)")
        if self.rayjob == "always":
            return True
        with self.errors(doing="discovering ray.io/v1"):
            served = self.cluster.serves(*mf.RAY)
        if not served and spec.nodes > 1:
            raise refuse(f"job {spec.job_id} is a Ray program for {spec.nodes} nodes and the "
                         "cluster serves no KubeRay RayJobs; install KubeRay or drop run.ray")
        return served

    def _same(self, obj: dict[str, Any], owner: Ownership, handle: Handle) -> Handle:
        """Return the handle of what a launch under this request id already created."""
        meta = obj.get("metadata") or {}
        theirs = (meta.get("labels") or {}).get(_STYLE.key("spec"))
        refuse_reuse(self.fleet_name, handle.request_id, theirs, owner.spec,
                     what=f"{obj.get('kind')} {handle.id}", region=handle.region)
        raw = (meta.get("annotations") or {}).get(mf.HANDLE)
        found = Handle.from_json(json.loads(raw)) if raw else handle
        if found.get("kind") != mf.RAYJOB:
            # The first launch may have died between creating the Job and its Service.
            self.cluster.ensure_service(self.namespace, handle.id, meta.get("labels") or {},
                                        meta["uid"])
        return found
