"""The CoreWeave adapter: GPU node pools of a CKS (Kubernetes) cluster behind the Provider API.

CoreWeave compute is Kubernetes-native, so the adapter talks to one cluster through the
official ``kubernetes`` client:

* **offers** — the cluster's GPU nodes grouped into pools by GPU class label
  (``gpu.nvidia.com/class``, else ``node.kubernetes.io/instance-type``), region and zone
  (``topology.kubernetes.io/region`` / ``zone``, or the ``region`` option); capacity is the
  number of whole nodes no running pod holds a GPU of; the price per node-hour comes from the
  fleet's ``price_card`` or the shipped CoreWeave list prices, scaled to the node's GPU count.
  A pool with no price is left out (and logged), never offered at $0.
* **launch** — one node: a ``batch/v1`` Job; several nodes: a KubeRay ``RayJob`` when the
  ``ray.io/v1`` API serves ``rayjobs`` (else an Indexed Job plus a headless Service). Object
  names derive from the request id, so a re-sent launch finds the object it created
  (AlreadyExists = success) and a different spec under the same key is refused.
* **status** — one list per kind per namespace, whatever the number of handles.
* **terminate** — delete with ``propagationPolicy=Foreground``; 404 is a no-op.
* **owned** — list by the install label, for the orphan sweep.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import re
import shlex
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from multicloud.accelerators import canonical
from multicloud.catalog import load_catalog
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    QuotaError,
    error_scope,
)
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
    handle_extra,
)
from multicloud_coreweave.errors import is_already_exists, is_not_found, translated

__all__ = [
    "ANN_JOB_ID",
    "ANN_REQUEST_ID",
    "ANN_SPEC_DIGEST",
    "GPU_RESOURCE",
    "LABEL_ATTEMPT",
    "LABEL_FLEET",
    "LABEL_INSTALL",
    "LABEL_JOB",
    "LABEL_MANAGED_BY",
    "LABEL_REQUEST_ID",
    "LABEL_WORKLOAD",
    "CoreWeaveProvider",
    "NodePool",
]

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "multicloud.io/job"
LABEL_ATTEMPT = "multicloud.io/attempt"
LABEL_INSTALL = "multicloud.io/install"
LABEL_FLEET = "multicloud.io/fleet"
LABEL_REQUEST_ID = "multicloud.io/request-id"
LABEL_WORKLOAD = "multicloud.io/workload"
ANN_JOB_ID = "multicloud.io/job-id"
ANN_INSTALL_ID = "multicloud.io/install-id"
ANN_REQUEST_ID = "multicloud.io/request-id"
ANN_SPEC_DIGEST = "multicloud.io/spec-digest"
ANN_OFFER = "multicloud.io/offer"
ANN_REGION = "multicloud.io/region"
ANN_ZONE = "multicloud.io/zone"
ANN_INSTANCE_TYPE = "multicloud.io/instance-type"
MANAGED_BY = "multicloud"

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CW_STATE_LABEL = "node.coreweave.cloud/state"

RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayjobs"

KIND_JOB = "job"
KIND_INDEXED = "indexed-job"
KIND_RAYJOB = "rayjob"

_PRICE_CARD_VERSION = "price-card"
_CRD_CACHE_S = 300.0
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
_VENDOR_WORDS = frozenset({"nvidia", "tesla", "geforce", "sxm", "sxm4", "sxm5", "pcie", "hbm3"})
# Reasons and conditions by which Kubernetes reports a pod pushed off its node.
_DISRUPTION_REASONS = frozenset({"Evicted", "Preempting", "Preempted", "Shutdown", "Terminated"})
# Reason of a Job's Failed condition when its pod failure policy (FailJob on a pod's
# DisruptionTarget condition) fired.
_POD_FAILURE_POLICY = "PodFailurePolicy"


@dataclass(frozen=True)
class NodePool:
    """GPU nodes of one class in one place, as read from the cluster.

    Attributes:
        gpu_class: Value of the class label the pool is grouped by.
        class_label: The label key holding ``gpu_class``.
        instance_type: Name the offers use (``gpu_class``, suffixed when one class comes
            with several GPU counts).
        accelerator: Canonical accelerator name.
        gpus: Allocatable GPUs per node.
        region: Region.
        zone: Zone, when the nodes carry one.
        nodes: Schedulable nodes in the pool.
        free: Nodes with no GPU held by a live pod.
        taints: ``(key, value, effect)`` scheduling taints of the pool's nodes.
        region_from_label: Whether the nodes carry the region label (used as a selector).
    """

    gpu_class: str
    class_label: str
    instance_type: str
    accelerator: str
    gpus: int
    region: str
    zone: str | None
    nodes: int
    free: int
    taints: tuple[tuple[str, str, str], ...]
    region_from_label: bool


def _label_value(text: str) -> str:
    """Return ``text`` if it is a valid label value, else a stable hash of it."""
    if _LABEL_VALUE.match(text) and len(text) <= 63:
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def accelerator_of(gpu_class: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """Map a node's GPU class label value to a canonical accelerator name.

    ``H100_NVLINK_80GB`` → ``H100``, ``A100_NVLINK_80GB`` → ``A100-80GB``,
    ``NVIDIA-H100-80GB-HBM3`` → ``H100``, ``GB200`` → ``GB200``.

    Args:
        gpu_class: The label value.
        overrides: Explicit class → accelerator mapping (the ``gpu_classes`` option).

    Returns:
        The canonical name, or None when nothing matches.
    """
    if overrides and gpu_class in overrides:
        return canonical(overrides[gpu_class])
    tokens = [t for t in re.split(r"[_\-.\s]+", gpu_class) if t and t.lower() not in _VENDOR_WORDS]
    memory = next((t for t in tokens if re.fullmatch(r"\d+g(b)?", t.lower())), None)
    candidates = [gpu_class]
    if tokens and memory and memory != tokens[0]:
        candidates.append(f"{tokens[0]}-{memory.upper().rstrip('B')}B")
    if len(tokens) >= 2:
        candidates.append("-".join(tokens[:2]))
    candidates.extend(tokens)
    for candidate in candidates:
        try:
            name = canonical(candidate)
        except ValueError:
            continue
        if name != "CPU":
            return name
    return None


def _spec_digest(spec: LaunchSpec, offer: Offer, kind: str) -> str:
    text = json.dumps(
        {"spec": dataclasses.asdict(spec), "offer": offer.key, "kind": kind},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CoreWeaveProvider:
    """Runs workloads on a CoreWeave CKS (or any Kubernetes) cluster with NVIDIA GPU nodes.

    Args:
        fleet_name: Fleet provider name; stamped on offers, handles and labels.
        regions: Region globs from the fleet entry (empty: every region of the cluster).
        kubeconfig: Path of the kubeconfig (default: ``$KUBECONFIG`` or ``~/.kube/config``).
        context: Kubeconfig context (default: its current context).
        in_cluster: Use the pod's ServiceAccount instead of a kubeconfig.
        namespace: Namespace the workloads are created in.
        price_card: USD per node-hour by GPU class label value (or canonical accelerator
            name); classes not on the card fall back to the shipped CoreWeave list prices.
        region: Region of nodes that carry no ``topology.kubernetes.io/region`` label.
        image_pull_secrets: Names of Secrets used to pull private images.
        rayjob: Multi-node jobs as KubeRay RayJobs: ``auto`` (when the cluster serves
            ``ray.io/v1`` rayjobs), ``always`` or ``never`` (Indexed Job + headless Service).
        class_label: Node label holding the GPU class.
        gpu_classes: Class label value → accelerator name, for classes the built-in
            mapping does not recognise.
        tolerations: Extra tolerations added to every pod (Kubernetes toleration dicts).
        unschedulable_grace_s: How long a pod may stay Unschedulable for lack of GPUs, or
            a Job may lack pods its controller could not create (quota), before status
            reports the workload PREEMPTED (capacity lost, re-place it).
        request_timeout_s: Timeout of each API request.
        finished_ttl_s: ``ttlSecondsAfterFinished`` of every Job: Kubernetes deletes a
            finished Job (and its pods) this long after it ended, a backstop to the orphan
            sweep. Keep it well above the scheduler's status interval; None disables it.
        ray_image: Image of the Ray head/workers (default: the job's image).
        api_client: A ready ``kubernetes.client.ApiClient`` (tests, embedding); when given,
            ``kubeconfig``/``context``/``in_cluster`` are ignored.

    Raises:
        ValueError: If an option is out of range (a price card entry that is not a positive
            number, an unknown ``rayjob`` mode, a negative timeout).
    """

    name: ClassVar[str] = "coreweave"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.MULTI_NODE, Capability.QUOTA_PROBE}
    )

    def __init__(
        self,
        *,
        fleet_name: str = "coreweave",
        regions: Sequence[str] = (),
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        namespace: str = "default",
        price_card: Mapping[str, float] | None = None,
        region: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        rayjob: Literal["auto", "always", "never"] = "auto",
        class_label: str = "gpu.nvidia.com/class",
        gpu_classes: Mapping[str, str] | None = None,
        tolerations: Sequence[Mapping[str, Any]] = (),
        unschedulable_grace_s: float = 60.0,
        request_timeout_s: float = 30.0,
        finished_ttl_s: int | None = 3600,
        ray_image: str | None = None,
        api_client: Any = None,
    ) -> None:
        if rayjob not in ("auto", "always", "never"):
            raise ValueError(f"rayjob must be auto, always or never, got {rayjob!r}")
        card: dict[str, float] = {}
        for key, value in (price_card or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"price_card[{key!r}] must be a positive USD per node-hour, got {value!r}"
                )
            card[str(key)] = float(value)
        if unschedulable_grace_s < 0 or request_timeout_s <= 0:
            raise ValueError("unschedulable_grace_s must be >= 0 and request_timeout_s > 0")
        if finished_ttl_s is not None and (
            isinstance(finished_ttl_s, bool)
            or not isinstance(finished_ttl_s, int)
            or finished_ttl_s < 60
        ):
            raise ValueError(
                "finished_ttl_s must be a whole number of seconds >= 60 (longer than any "
                f"status poll) or null, got {finished_ttl_s!r}"
            )
        for accelerator in (gpu_classes or {}).values():
            canonical(accelerator)  # a typo raises ValueError with a "did you mean"
        self.fleet_name = fleet_name
        self.namespace = namespace
        self.price_card = card
        self.region = region
        self.image_pull_secrets = tuple(image_pull_secrets)
        self.rayjob = rayjob
        self.class_label = class_label
        self.gpu_classes = dict(gpu_classes or {})
        self.tolerations = [dict(t) for t in tolerations]
        self.unschedulable_grace_s = float(unschedulable_grace_s)
        self.request_timeout_s = float(request_timeout_s)
        self.finished_ttl_s = finished_ttl_s
        self.ray_image = ray_image
        self._regions = tuple(regions)
        self._kubeconfig = kubeconfig
        self._context = context
        self._in_cluster = in_cluster
        self._api_client = api_client
        self._lock = threading.Lock()
        self._crd_checked_at: float | None = None
        self._crd_present = False
        self._skipped: set[str] = set()

    # ------------------------------------------------------------------ client plumbing

    def _client(self) -> Any:
        """Build (once) an ApiClient from this provider's own configuration.

        Never touches ``kubernetes.client.Configuration``'s process-wide default, so two
        providers can talk to two clusters in one process.
        """
        with self._lock:
            if self._api_client is not None:
                return self._api_client
            from kubernetes import client, config

            cfg = client.Configuration()
            try:
                if self._in_cluster:
                    config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                else:
                    config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=self._kubeconfig,
                        context=self._context,
                        client_configuration=cfg,
                        persist_config=False,
                    )
            except Exception as exc:
                # Missing, malformed or incomplete configuration (the loader raises
                # ConfigException, but also TypeError/KeyError on odd YAML): no usable
                # credentials, whatever the exception type.
                where = (
                    "in-cluster ServiceAccount"
                    if self._in_cluster
                    else (self._kubeconfig or "default kubeconfig")
                )
                raise AuthError(
                    f"unusable Kubernetes configuration ({where}): {type(exc).__name__}: {exc}",
                    provider=self.fleet_name,
                ) from exc
            # One quick retry of a dropped connection; the scheduler retries TransientError
            # with backoff on its own.
            cfg.retries = 1
            self._api_client = client.ApiClient(configuration=cfg)
            return self._api_client

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._client())

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._client())

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._client())

    @property
    def _timeout(self) -> dict[str, Any]:
        return {"_request_timeout": self.request_timeout_s}

    def close(self) -> None:
        """Close the HTTP connection pool of the client this provider built."""
        with self._lock:
            client, self._api_client = self._api_client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    # ------------------------------------------------------------------ protocol

    def check(self) -> None:
        """List one Job in the namespace: proves the endpoint, credentials and namespace RBAC.

        Raises:
            AuthError: If the credentials are missing, expired or lack ``list jobs``.
            TransientError: If the API server cannot be reached.
        """
        with translated(self.fleet_name, doing=f"listing jobs in namespace {self.namespace}"):
            self._batch().list_namespaced_job(self.namespace, limit=1, **self._timeout)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return one offer per GPU node pool of the cluster matching ``request``.

        Args:
            request: Accelerators, minimum GPUs per node and region globs.

        Returns:
            Offers sorted by region, zone and instance type; capacity = free whole nodes.

        Raises:
            AuthError: If listing nodes or pods is not allowed.
            TransientError: If the API server cannot be reached.
        """
        out = []
        for pool in self.pools():
            if request.accelerators and pool.accelerator not in request.accelerators:
                continue
            if pool.gpus < request.count:
                continue
            if not (
                _matches(self._regions, pool.region) and _matches(request.regions, pool.region)
            ):
                continue
            offer = self._offer(pool)
            if offer is not None:
                out.append(offer)
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Create the workload of ``spec`` on ``offer``'s node pool; idempotent by request id.

        Args:
            offer: One of this provider's offers.
            spec: What to run (image, command, env, secret names, nodes).
            request_id: Idempotency key; the object name derives from it.

        Returns:
            The handle (the same one for a repeated request id and spec).

        Raises:
            InvalidRequestError: If the offer is not this provider's (or no longer exists),
                the spec asks for a market other than on-demand, has no image, or the
                request id was used with another spec.
            CapacityError: If the pool has fewer free nodes than the gang needs.
            QuotaError: If a ResourceQuota of the namespace does not allow the GPUs.
            AuthError: If the credentials do not allow creating the objects.
            TransientError: On throttling, server errors or connection failures.
        """
        self._check_spec(offer, spec)
        name = self._object_name(request_id)
        multi = spec.nodes > 1
        kind = KIND_JOB if not multi else (KIND_RAYJOB if self._use_rayjob() else KIND_INDEXED)
        digest = _spec_digest(spec, offer, "multi" if multi else KIND_JOB)
        handle = self._handle(name, request_id, offer, spec, kind)

        # A re-sent launch must find what the first one created before it looks at capacity
        # (which that workload itself now holds).
        existing = self._find_existing(name, multi)
        if existing is not None:
            return self._same_or_refuse(existing, digest, handle)

        pool = self._pool_for(offer)
        scope = self._scope(pool.region, pool.zone)
        if spec.nodes > pool.free:
            raise CapacityError(
                f"{pool.instance_type} in {pool.zone or pool.region}: {spec.nodes} node(s) "
                f"needed, {pool.free} of {pool.nodes} free",
                provider=self.fleet_name,
                scope=scope,
            )
        self._check_quota(spec.nodes * pool.gpus, scope)

        labels = self._labels(name, request_id, spec)
        annotations = {
            ANN_JOB_ID: spec.job_id,
            ANN_INSTALL_ID: spec.install_id,
            ANN_REQUEST_ID: request_id,
            ANN_SPEC_DIGEST: digest,
            ANN_OFFER: offer.key,
            ANN_REGION: offer.region,
            ANN_ZONE: offer.zone or "",
            ANN_INSTANCE_TYPE: offer.instance_type,
        }
        with translated(self.fleet_name, scope=scope, doing=f"creating {kind} {name}"):
            try:
                if kind == KIND_RAYJOB:
                    self._create_rayjob(name, labels, annotations, pool, spec)
                else:
                    self._create_job(name, labels, annotations, pool, spec, kind)
            except Exception as exc:
                if not is_already_exists(exc):
                    if kind == KIND_RAYJOB and is_not_found(exc):
                        raise InvalidRequestError(
                            f"the cluster serves no {RAY_GROUP}/{RAY_VERSION} {RAY_PLURAL} "
                            "(is KubeRay installed?); set rayjob: never or auto",
                            provider=self.fleet_name,
                        ) from exc
                    raise
                # Lost a race with a concurrent launch of the same key: it must agree.
                found = self._find_existing(name, multi)
                if found is None:
                    raise
                return self._same_or_refuse(found, digest, handle)
        return handle

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle from one list per kind per namespace.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id.

        Raises:
            AuthError: If listing is not allowed.
            TransientError: If the API server cannot be reached.
        """
        by_ns: dict[str, dict[str, Handle]] = defaultdict(dict)
        for h in handles:
            by_ns[str(handle_extra(h).get("namespace", self.namespace))].setdefault(h.id, h)
        out: dict[str, WorkloadStatus] = {}
        for ns, wanted in by_ns.items():
            out.update(self._status_in(ns, wanted))
        return {h.id: out[h.id] for h in handles if h.id in out}

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete the workload with Foreground propagation; a no-op if it is gone.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (deleting is idempotent).

        Raises:
            AuthError: If deleting is not allowed.
            TransientError: If the API server cannot be reached.
        """
        extra = handle_extra(handle)
        ns = str(extra.get("namespace", self.namespace))
        kind = str(extra.get("kind", KIND_JOB))
        with translated(self.fleet_name, doing=f"deleting {kind} {handle.id}"):
            try:
                if kind == KIND_RAYJOB:
                    self._custom().delete_namespaced_custom_object(
                        RAY_GROUP,
                        RAY_VERSION,
                        ns,
                        RAY_PLURAL,
                        handle.id,
                        propagation_policy="Foreground",
                        **self._timeout,
                    )
                else:
                    # The headless Service of an Indexed Job is owned by the Job and goes
                    # with it (ownerReferences), so one delete is enough.
                    self._batch().delete_namespaced_job(
                        handle.id, ns, propagation_policy="Foreground", **self._timeout
                    )
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the workloads this fleet entry launched for ``install_id``, for the sweep.

        Finished workloads are included: the scheduler does not terminate an attempt that
        succeeded (it only ends its row), so the orphan sweep, which terminates what no
        live attempt owns, is what deletes them with their pods (a Job's
        ``ttlSecondsAfterFinished`` is the backstop). An attempt whose status the scheduler
        has not read yet is still live, so its result is never swept away unread.

        Args:
            install_id: The install whose workloads to list.

        Returns:
            Workloads not already being deleted, sorted by name.

        Raises:
            AuthError: If listing is not allowed.
            TransientError: If the API server cannot be reached.
        """
        selector = (
            f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_FLEET}={_label_value(self.fleet_name)},"
            f"{LABEL_INSTALL}={_label_value(install_id)}"
        )
        objs = self._list_workloads(self.namespace, selector, rayjobs=self._use_rayjob())
        out = []
        for name, (kind, obj) in sorted(objs.items()):
            ann = obj["metadata"].get("annotations") or {}
            if ann.get(ANN_INSTALL_ID, install_id) != install_id:
                continue  # two install ids hashed to one label value
            if obj["metadata"].get("deletionTimestamp"):
                continue
            handle = self._handle_from(name, kind, obj)
            attempt = _int((obj["metadata"].get("labels") or {}).get(LABEL_ATTEMPT))
            out.append(OwnedWorkload(handle, handle.job_id, attempt))
        return out

    # ------------------------------------------------------------------ node pools

    def pools(self) -> list[NodePool]:
        """Read the cluster's GPU node pools (two list calls: nodes, live pods).

        Returns:
            Pools sorted by region, zone and instance type; nodes that are cordoned, not
            Ready, not in CoreWeave's ``production`` state, without GPUs, class or region
            are left out (logged once).
        """
        with translated(self.fleet_name, doing="listing nodes and pods"):
            nodes = self._core().list_node(**self._timeout).items or []
            pods = (
                self._core()
                .list_pod_for_all_namespaces(
                    field_selector="status.phase!=Succeeded,status.phase!=Failed",
                    **self._timeout,
                )
                .items
                or []
            )
        used: dict[str, int] = defaultdict(int)
        for pod in pods:
            node_name = getattr(pod.spec, "node_name", None) if pod.spec else None
            phase = pod.status.phase if pod.status else None
            if node_name and phase in ("Pending", "Running", None):
                used[node_name] += self._pod_gpus(pod)

        groups: dict[tuple[str, str | None, str, int], list[Any]] = defaultdict(list)
        meta_of: dict[tuple[str, str | None, str, int], tuple[str, bool]] = {}
        for node in nodes:
            placed = self._node_place(node)
            if placed is None:
                continue
            key, class_label, region_from_label = placed
            groups[key].append(node)
            meta_of[key] = (class_label, region_from_label)

        counts_per_class: dict[tuple[str, str | None, str], set[int]] = defaultdict(set)
        for region, zone, gpu_class, gpus in groups:
            counts_per_class[(region, zone, gpu_class)].add(gpus)

        out = []
        for key, members in groups.items():
            region, zone, gpu_class, gpus = key
            accelerator = accelerator_of(gpu_class, self.gpu_classes)
            if accelerator is None:
                self._skip(
                    f"class:{gpu_class}",
                    f"GPU class {gpu_class!r} maps to no known accelerator; add it to the "
                    "gpu_classes option",
                )
                continue
            mixed = len(counts_per_class[(region, zone, gpu_class)]) > 1
            taints = sorted(
                {
                    (t.key, t.value or "", t.effect)
                    for n in members
                    for t in (n.spec.taints or [] if n.spec else [])
                    if t.effect in ("NoSchedule", "NoExecute")
                    and not str(t.key).startswith("node.kubernetes.io/")
                }
            )
            class_label, region_from_label = meta_of[key]
            out.append(
                NodePool(
                    gpu_class=gpu_class,
                    class_label=class_label,
                    instance_type=f"{gpu_class}.{gpus}gpu" if mixed else gpu_class,
                    accelerator=accelerator,
                    gpus=gpus,
                    region=region,
                    zone=zone,
                    nodes=len(members),
                    free=sum(1 for n in members if used.get(n.metadata.name, 0) == 0),
                    taints=tuple(taints),
                    region_from_label=region_from_label,
                )
            )
        return sorted(out, key=lambda p: (p.region, p.zone or "", p.instance_type))

    def _node_place(self, node: Any) -> tuple[tuple[str, str | None, str, int], str, bool] | None:
        name = node.metadata.name
        labels = node.metadata.labels or {}
        allocatable = (node.status.allocatable if node.status else None) or {}
        gpus = _int(allocatable.get(GPU_RESOURCE))
        if gpus <= 0:
            return None  # CPU-only node: not a GPU offer
        if node.spec is not None and node.spec.unschedulable:
            return None
        conditions = (node.status.conditions if node.status else None) or []
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            return None
        state = labels.get(CW_STATE_LABEL)
        if state is not None and state != "production":
            return None  # CoreWeave lifecycle: zap/triage nodes take no customer work
        class_label = self.class_label
        gpu_class = labels.get(class_label)
        if gpu_class is None and INSTANCE_TYPE_LABEL in labels:
            class_label, gpu_class = INSTANCE_TYPE_LABEL, labels[INSTANCE_TYPE_LABEL]
        if not gpu_class:
            self._skip(f"noclass:{name}", f"node {name} has no {self.class_label} label")
            return None
        region = labels.get(REGION_LABEL) or self.region
        if not region:
            self._skip(
                f"noregion:{name}",
                f"node {name} has no {REGION_LABEL} label and no region option is set",
            )
            return None
        return (
            (region, labels.get(ZONE_LABEL), gpu_class, gpus),
            class_label,
            REGION_LABEL in labels,
        )

    def _skip(self, key: str, message: str) -> None:
        if key not in self._skipped:
            self._skipped.add(key)
            log.warning("%s: %s; left out of the offers", self.fleet_name, message)

    def _price(self, pool: NodePool) -> tuple[float, str] | None:
        for key in (pool.instance_type, pool.gpu_class, pool.accelerator):
            if key in self.price_card:
                return self.price_card[key], _PRICE_CARD_VERSION
        catalog = load_catalog()
        rows = [
            r
            for r in catalog.rows
            if r.provider == "coreweave" and r.accelerator == pool.accelerator and r.price
        ]
        if not rows:
            return None
        # Prefer the pool's own region; CoreWeave's list prices are the same everywhere.
        row = next((r for r in rows if r.region == pool.region), rows[0])
        assert row.price is not None
        per_gpu = row.price / row.count
        return round(per_gpu * pool.gpus, 4), catalog.version

    def _offer(self, pool: NodePool) -> Offer | None:
        priced = self._price(pool)
        if priced is None or priced[0] <= 0:
            self._skip(
                f"price:{pool.instance_type}",
                f"no price for GPU class {pool.gpu_class!r} ({pool.accelerator}) in the "
                "price_card option or the CoreWeave list prices",
            )
            return None
        price, version = priced
        return Offer(
            provider=self.fleet_name,
            region=pool.region,
            zone=pool.zone,
            instance_type=pool.instance_type,
            accelerator=pool.accelerator,
            count=pool.gpus,
            price=price,
            capacity=pool.free,
            jurisdiction=load_catalog().jurisdiction(pool.region),
            catalog_version=version,
        )

    def _pool_for(self, offer: Offer) -> NodePool:
        for pool in self.pools():
            if (pool.region, pool.zone, pool.instance_type) == (
                offer.region,
                offer.zone,
                offer.instance_type,
            ):
                return pool
        raise InvalidRequestError(
            f"{self.fleet_name} has no GPU node pool {offer.instance_type} in "
            f"{offer.zone or offer.region}",
            provider=self.fleet_name,
        )

    @staticmethod
    def _pod_gpus(pod: Any) -> int:
        total = 0
        for c in (pod.spec.containers if pod.spec else None) or []:
            res = c.resources
            limits = (res.limits if res else None) or {}
            requests = (res.requests if res else None) or {}
            total += _int(limits.get(GPU_RESOURCE) or requests.get(GPU_RESOURCE))
        return total

    # ------------------------------------------------------------------ launch helpers

    def _check_spec(self, offer: Offer, spec: LaunchSpec) -> None:
        if offer.provider != self.fleet_name:
            raise InvalidRequestError(
                f"offer {offer.key} belongs to {offer.provider!r}, not {self.fleet_name!r}",
                provider=self.fleet_name,
            )
        if not _matches(self._regions, offer.region):
            raise InvalidRequestError(
                f"region {offer.region} is outside this fleet entry's regions",
                provider=self.fleet_name,
            )
        if spec.market is not MarketKind.ON_DEMAND:
            raise InvalidRequestError(
                f"a Kubernetes cluster has no {spec.market.value} market; launch on-demand",
                provider=self.fleet_name,
            )
        if spec.nodes < 1:
            raise InvalidRequestError(
                f"nodes must be >= 1, got {spec.nodes}", provider=self.fleet_name
            )
        if not spec.image:
            raise InvalidRequestError(
                f"job {spec.job_id} has no container image; CoreWeave runs containers",
                provider=self.fleet_name,
            )

    def _object_name(self, request_id: str) -> str:
        # Fleet name in the hash: two fleet entries on one cluster never share a name.
        digest = hashlib.sha256(f"{self.fleet_name}|{request_id}".encode()).hexdigest()
        return f"mc-{digest[:20]}"

    def _scope(self, region: str, zone: str | None) -> str:
        return error_scope(self.fleet_name, region, zone)

    def _labels(self, name: str, request_id: str, spec: LaunchSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_FLEET: _label_value(self.fleet_name),
            LABEL_JOB: _label_value(spec.job_id),
            LABEL_ATTEMPT: str(spec.attempt),
            LABEL_INSTALL: _label_value(spec.install_id),
            LABEL_REQUEST_ID: _label_value(request_id),
            LABEL_WORKLOAD: name,
        }

    def _handle(
        self, name: str, request_id: str, offer: Offer, spec: LaunchSpec, kind: str
    ) -> Handle:
        return Handle(
            provider=self.fleet_name,
            id=name,
            request_id=request_id,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            nodes=spec.nodes,
            market=spec.market,
            job_id=spec.job_id,
            extra=(("namespace", self.namespace), ("kind", kind)),
        )

    def _use_rayjob(self) -> bool:
        if self.rayjob != "auto":
            return self.rayjob == "always"
        now = time.monotonic()
        if self._crd_checked_at is not None and now - self._crd_checked_at < _CRD_CACHE_S:
            return self._crd_present
        # API discovery needs no RBAC beyond system:discovery, unlike reading the CRD.
        with translated(self.fleet_name, doing=f"discovering {RAY_GROUP}/{RAY_VERSION}"):
            try:
                resources = self._custom().get_api_resources(
                    RAY_GROUP, RAY_VERSION, **self._timeout
                )
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                present = False
            else:
                present = any(r.name == RAY_PLURAL for r in (resources.resources or []))
        self._crd_present, self._crd_checked_at = present, now
        return present

    def _find_existing(self, name: str, multi: bool) -> tuple[str, dict[str, Any]] | None:
        """Look the name up as every kind a launch of this shape may have created."""
        kinds = [KIND_JOB]
        if multi and self.rayjob != "never" and (self.rayjob == "always" or self._use_rayjob()):
            kinds.insert(0, KIND_RAYJOB)
        api = self._client()
        with translated(self.fleet_name, doing=f"reading {name}"):
            for kind in kinds:
                try:
                    if kind == KIND_RAYJOB:
                        obj = self._custom().get_namespaced_custom_object(
                            RAY_GROUP,
                            RAY_VERSION,
                            self.namespace,
                            RAY_PLURAL,
                            name,
                            **self._timeout,
                        )
                        return kind, dict(obj)
                    job = self._batch().read_namespaced_job(name, self.namespace, **self._timeout)
                    doc = api.sanitize_for_serialization(job)
                    indexed = (doc.get("spec") or {}).get("completionMode") == "Indexed"
                    return (KIND_INDEXED if indexed else KIND_JOB), doc
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
        return None

    def _same_or_refuse(
        self, found: tuple[str, dict[str, Any]], digest: str, handle: Handle
    ) -> Handle:
        kind, obj = found
        theirs = (obj["metadata"].get("annotations") or {}).get(ANN_SPEC_DIGEST)
        if theirs != digest:
            raise InvalidRequestError(
                f"request id {handle.request_id} was already used for another launch "
                f"({kind} {handle.id}); a new spec needs a new request id",
                provider=self.fleet_name,
            )
        if kind == KIND_INDEXED:
            # The first launch may have died between creating the Job and its Service.
            meta = obj["metadata"]
            with translated(self.fleet_name, doing=f"creating service {handle.id}"):
                self._create_service(handle.id, dict(meta.get("labels") or {}), meta["uid"])
        return dataclasses.replace(handle, extra=(("namespace", self.namespace), ("kind", kind)))

    def _check_quota(self, gpus: int, scope: str) -> None:
        """Refuse a launch a namespace ResourceQuota on GPUs would not admit.

        A Job's pods are checked against quota when the Job controller creates them, long
        after the Job itself was accepted, so the failure would otherwise only show as a Job
        that never starts.
        """
        with translated(self.fleet_name, doing=f"listing resource quotas of {self.namespace}"):
            quotas = (
                self._core().list_namespaced_resource_quota(self.namespace, **self._timeout).items
                or []
            )
        for q in quotas:
            hard = (q.status.hard if q.status else None) or (q.spec.hard if q.spec else None) or {}
            used = (q.status.used if q.status else None) or {}
            for key in (f"requests.{GPU_RESOURCE}", f"limits.{GPU_RESOURCE}"):
                if key in hard and _int(used.get(key)) + gpus > _int(hard[key]):
                    raise QuotaError(
                        f"exceeded quota: {q.metadata.name}, requested: {key}={gpus}, "
                        f"used: {key}={_int(used.get(key))}, limited: {key}={hard[key]}",
                        provider=self.fleet_name,
                        scope=scope,
                    )

    # ------------------------------------------------------------------ manifests

    def _env(self, spec: LaunchSpec, name: str) -> list[dict[str, Any]]:
        plain = {
            "MULTICLOUD_JOB_ID": spec.job_id,
            "MULTICLOUD_ATTEMPT": str(spec.attempt),
            "MULTICLOUD_NODES": str(spec.nodes),
            "MULTICLOUD_WORKLOAD": name,
        }
        if spec.checkpoint:
            plain["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
        plain.update(spec.env)
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
        # Secrets by reference only: the pod reads key <NAME> of the Secret object named
        # after it (HF_TOKEN → Secret "hf-token"); no value ever passes through multicloud.
        env.extend(
            {
                "name": secret,
                "valueFrom": {"secretKeyRef": {"name": self.secret_object(secret), "key": secret}},
            }
            for secret in spec.secrets
        )
        return env

    @staticmethod
    def secret_object(secret: str) -> str:
        """Return the Secret object a job secret is read from (``HF_TOKEN`` → ``hf-token``).

        Args:
            secret: The job's secret name.

        Returns:
            A DNS-1123 name.
        """
        name = re.sub(r"[^a-z0-9.-]+", "-", secret.lower()).strip("-.")
        return name[:253] or "secret"

    def _command(self, spec: LaunchSpec) -> list[str] | None:
        if isinstance(spec.command, str):
            return ["/bin/sh", "-c", spec.command] if spec.command.strip() else None
        if spec.command:
            return [str(p) for p in spec.command]
        return None

    def _pod_spec(
        self, pool: NodePool, spec: LaunchSpec, name: str, container: str, image: str
    ) -> dict[str, Any]:
        resources: dict[str, Any] = {
            "limits": {GPU_RESOURCE: str(pool.gpus)},
            "requests": {GPU_RESOURCE: str(pool.gpus)},
        }
        if spec.cpus is not None:
            resources["requests"]["cpu"] = str(spec.cpus)
        main: dict[str, Any] = {
            "name": container,
            "image": image,
            "env": self._env(spec, name),
            "resources": resources,
        }
        selector = {pool.class_label: pool.gpu_class}
        if pool.region_from_label:
            selector[REGION_LABEL] = pool.region
        if pool.zone:
            selector[ZONE_LABEL] = pool.zone
        tolerations: list[dict[str, Any]] = [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
        for key, value, effect in pool.taints:
            tol = {"key": key, "operator": "Equal", "value": value, "effect": effect}
            if not value:
                tol = {"key": key, "operator": "Exists", "effect": effect}
            if tol not in tolerations:
                tolerations.append(tol)
        tolerations.extend(t for t in self.tolerations if t not in tolerations)
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "nodeSelector": selector,
            "tolerations": tolerations,
            "containers": [main],
        }
        if self.image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": s} for s in self.image_pull_secrets]
        return pod

    def _create_job(
        self,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        pool: NodePool,
        spec: LaunchSpec,
        kind: str,
    ) -> None:
        from kubernetes import client

        assert spec.image is not None
        pod = self._pod_spec(pool, spec, name, "main", spec.image)
        command = self._command(spec)
        if command is not None:
            pod["containers"][0]["command"] = command
        job_spec: dict[str, Any] = {
            # The scheduler owns retries (and re-placement); a failed or evicted pod fails
            # the Job at once instead of being retried on the same cluster.
            "backoffLimit": 0,
            # Kubernetes deletes a pod preempted by the scheduler or evicted through the
            # Eviction API (a node drain); only the Job's own verdict survives. This rule
            # makes that verdict tell a disruption (reason PodFailurePolicy, reported
            # PREEMPTED) from a failure of the workload (BackoffLimitExceeded, FAILED).
            # batch/v1, GA in Kubernetes 1.31; needs restartPolicy Never (see _pod_spec).
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        }
        if self.finished_ttl_s is not None:
            # The scheduler does not delete a workload that succeeded; the orphan sweep
            # does (see owned), and this is the backstop should no scheduler run.
            job_spec["ttlSecondsAfterFinished"] = self.finished_ttl_s
        if kind == KIND_INDEXED:
            job_spec["completionMode"] = "Indexed"
            pod["subdomain"] = name
            # Rank 0's stable DNS name, for torchrun/NCCL rendezvous.
            pod["containers"][0]["env"].append(
                {"name": "MULTICLOUD_COORDINATOR", "value": f"{name}-0.{name}"}
            )
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": job_spec,
        }
        created = self._batch().create_namespaced_job(
            self.namespace, client.V1Job.from_dict(body), **self._timeout
        )
        if kind == KIND_INDEXED:
            self._create_service(name, labels, created.metadata.uid)

    def _create_service(self, name: str, labels: dict[str, str], job_uid: str) -> None:
        from kubernetes import client

        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "labels": labels,
                # Owned by the Job: deleting the Job garbage-collects the Service.
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job_uid,
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {LABEL_WORKLOAD: name},
            },
        }
        try:
            self._core().create_namespaced_service(
                self.namespace, client.V1Service.from_dict(body), **self._timeout
            )
        except Exception as exc:
            if not is_already_exists(exc):
                raise

    def _create_rayjob(
        self,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        pool: NodePool,
        spec: LaunchSpec,
    ) -> None:
        image = self.ray_image or spec.image
        assert image is not None
        command = self._command(spec)
        entrypoint = spec.command if isinstance(spec.command, str) else shlex.join(command or [])
        if not entrypoint:
            raise InvalidRequestError(
                f"job {spec.job_id} has no command; a RayJob needs an entrypoint",
                provider=self.fleet_name,
            )

        def template(container: str) -> dict[str, Any]:
            return {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": self._pod_spec(pool, spec, name, container, image),
            }

        workers = spec.nodes - 1
        body = {
            "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}",
            "kind": "RayJob",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {
                "entrypoint": entrypoint,
                # The Ray cluster exists for this job only: KubeRay deletes it when the job
                # ends, which frees the GPU nodes.
                "shutdownAfterJobFinishes": True,
                "backoffLimit": 0,
                "rayClusterSpec": {
                    # The head is one of the gang's GPU nodes, so N nodes = head + N-1 workers.
                    "headGroupSpec": {
                        "rayStartParams": {"dashboard-host": "0.0.0.0"},
                        "template": template("ray-head"),
                    },
                    "workerGroupSpecs": [
                        {
                            "groupName": "gpu",
                            "replicas": workers,
                            "minReplicas": workers,
                            "maxReplicas": workers,
                            "rayStartParams": {},
                            "template": template("ray-worker"),
                        }
                    ],
                },
            },
        }
        self._custom().create_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, self.namespace, RAY_PLURAL, body, **self._timeout
        )

    # ------------------------------------------------------------------ status helpers

    def _list_workloads(
        self, ns: str, selector: str, *, rayjobs: bool
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """List Jobs (and RayJobs) in ``ns`` matching ``selector``, as plain dicts by name."""
        api = self._client()
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        with translated(self.fleet_name, doing=f"listing workloads in {ns}"):
            jobs = self._batch().list_namespaced_job(ns, label_selector=selector, **self._timeout)
            for job in jobs.items or []:
                doc = api.sanitize_for_serialization(job)
                indexed = (doc.get("spec") or {}).get("completionMode") == "Indexed"
                out[doc["metadata"]["name"]] = (KIND_INDEXED if indexed else KIND_JOB, doc)
            if rayjobs:
                try:
                    listed = self._custom().list_namespaced_custom_object(
                        RAY_GROUP,
                        RAY_VERSION,
                        ns,
                        RAY_PLURAL,
                        label_selector=selector,
                        **self._timeout,
                    )
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                else:
                    for obj in listed.get("items") or []:
                        out[obj["metadata"]["name"]] = (KIND_RAYJOB, obj)
        return out

    def _status_in(self, ns: str, wanted: Mapping[str, Handle]) -> dict[str, WorkloadStatus]:
        # Handles do not carry the install id; this fleet entry's label narrows enough.
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_FLEET}={_label_value(self.fleet_name)}"
        rayjobs = any(handle_extra(h).get("kind") == KIND_RAYJOB for h in wanted.values())
        objs = self._list_workloads(ns, selector, rayjobs=rayjobs)
        pods_by: dict[str, list[Any]] = defaultdict(list)
        # Pods tell running from pending, and a failure from an eviction; a workload that
        # succeeded needs none of that.
        need_pods = any(
            name in objs and self._state_of(*objs[name], [], 1).state is not WorkloadState.SUCCEEDED
            for name in wanted
        )
        if need_pods:
            with translated(self.fleet_name, doing=f"listing pods in {ns}"):
                pods = (
                    self._core()
                    .list_namespaced_pod(ns, label_selector=f"{LABEL_WORKLOAD}", **self._timeout)
                    .items
                    or []
                )
            for pod in pods:
                owner = str((pod.metadata.labels or {}).get(LABEL_WORKLOAD))
                if owner in wanted:
                    pods_by[owner].append(pod)
        out = {}
        for name, handle in wanted.items():
            if name not in objs:
                out[name] = WorkloadStatus(WorkloadState.UNKNOWN, "no such workload")
                continue
            kind, obj = objs[name]
            out[name] = self._state_of(kind, obj, pods_by.get(name, []), handle.nodes)
        return out

    def _state_of(
        self, kind: str, obj: Mapping[str, Any], pods: list[Any], nodes: int
    ) -> WorkloadStatus:
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return WorkloadStatus(WorkloadState.TERMINATED, "being deleted")
        disrupted = next((m for p in pods if (m := self._disruption(p))), None)
        exit_code = next((c for p in pods if (c := self._exit_code(p)) not in (None, 0)), None)
        status = obj.get("status") or {}
        if kind == KIND_RAYJOB:
            job_status = status.get("jobStatus")
            deployment = status.get("jobDeploymentStatus")
            message = str(status.get("message") or "")
            if job_status == "SUCCEEDED" or (deployment == "Complete" and job_status != "FAILED"):
                return WorkloadStatus(WorkloadState.SUCCEEDED, "ray job succeeded", 0)
            if job_status in ("FAILED", "STOPPED") or deployment == "Failed":
                if disrupted:
                    return WorkloadStatus(WorkloadState.PREEMPTED, disrupted)
                return WorkloadStatus(WorkloadState.FAILED, message or "ray job failed", exit_code)
            live = job_status == "RUNNING"
        else:
            conditions = {
                c.get("type"): c
                for c in status.get("conditions") or []
                if c.get("status") == "True"
            }
            if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
                return WorkloadStatus(WorkloadState.SUCCEEDED, "job complete", 0)
            failed = conditions.get("Failed") or conditions.get("FailureTarget")
            if failed is not None:
                if disrupted:
                    return WorkloadStatus(WorkloadState.PREEMPTED, disrupted)
                if failed.get("reason") == _POD_FAILURE_POLICY:
                    # The Job's only rule (FailJob on DisruptionTarget) fired: a pod was
                    # preempted or evicted, and Kubernetes may have deleted it since.
                    detail = str(failed.get("message") or "a pod was disrupted")
                    return WorkloadStatus(WorkloadState.PREEMPTED, f"disrupted: {detail}")
                message = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}"
                return WorkloadStatus(WorkloadState.FAILED, message.strip(": "), exit_code)
            live = False
        if disrupted:
            return WorkloadStatus(WorkloadState.PREEMPTED, disrupted)
        ann = meta.get("annotations") or {}
        scope = self._scope(str(ann.get(ANN_REGION, "")), ann.get(ANN_ZONE) or None)
        blocked = self._capacity_blocked(pods, scope)
        if blocked is not None:
            return blocked
        if kind != KIND_RAYJOB:
            missing = self._pods_missing(meta, pods, nodes, scope)
            if missing is not None:
                return missing
        running = sum(1 for p in pods if p.status is not None and p.status.phase == "Running")
        if running >= max(1, nodes) or (kind == KIND_RAYJOB and live):
            return WorkloadStatus(WorkloadState.RUNNING, f"{running}/{nodes} pod(s) running")
        return WorkloadStatus(WorkloadState.PROVISIONING, f"{running}/{nodes} pod(s) running")

    @staticmethod
    def _disruption(pod: Any) -> str | None:
        status = pod.status
        if status is None:
            return None
        if status.reason in _DISRUPTION_REASONS:
            return f"pod {pod.metadata.name} {status.reason}: {status.message or ''}".strip(": ")
        for c in status.conditions or []:
            if c.type == "DisruptionTarget" and c.status == "True":
                return (
                    f"pod {pod.metadata.name} disrupted: {c.reason or ''} {c.message or ''}".strip()
                )
        return None

    @staticmethod
    def _exit_code(pod: Any) -> int | None:
        for cs in (pod.status.container_statuses if pod.status else None) or []:
            terminated = cs.state.terminated if cs.state else None
            if terminated is not None and terminated.exit_code is not None:
                return int(terminated.exit_code)
        return None

    def _capacity_blocked(self, pods: Iterable[Any], scope: str) -> WorkloadStatus | None:
        """Report a gang whose pods cannot be scheduled for lack of GPUs.

        Another tenant may take the free nodes between ``offers`` and ``launch``; the pods
        then wait Unschedulable. After ``unschedulable_grace_s`` this is reported PREEMPTED
        (capacity lost), with ``scope`` to block, so the scheduler re-places the job
        elsewhere; before, PROVISIONING.
        """
        now = datetime.now(timezone.utc)
        for pod in pods:
            status = pod.status
            if status is None or status.phase != "Pending" or (pod.spec and pod.spec.node_name):
                continue
            for c in status.conditions or []:
                message = c.message or ""
                if not (
                    c.type == "PodScheduled"
                    and c.status == "False"
                    and c.reason == "Unschedulable"
                    and f"Insufficient {GPU_RESOURCE}" in message
                ):
                    continue
                created = _parse_time(pod.metadata.creation_timestamp) or now
                waited = (now - created).total_seconds()
                text = f"capacity: pod {pod.metadata.name} unschedulable: {message}"
                if waited >= self.unschedulable_grace_s:
                    return WorkloadStatus(WorkloadState.PREEMPTED, text, blocked_scope=scope)
                return WorkloadStatus(WorkloadState.PROVISIONING, text)
        return None

    def _pods_missing(
        self, meta: Mapping[str, Any], pods: Sequence[Any], nodes: int, scope: str
    ) -> WorkloadStatus | None:
        """Report a Job the Job controller could not create all pods of.

        The GPU quota probe at launch cannot see a concurrent launch that takes the quota
        between the probe and the pods, nor a ``count/pods`` quota: the Job controller's
        pod creation is refused (an Event, nothing on the Job) and it retries for ever.
        A Job still short of pods ``unschedulable_grace_s`` after its creation is reported
        PREEMPTED with ``scope`` to block, so the scheduler re-places the job; before,
        PROVISIONING.
        """
        want = max(1, nodes)
        if len(pods) >= want:
            return None
        created = _parse_time(meta.get("creationTimestamp"))
        now = datetime.now(timezone.utc)
        waited = (now - created).total_seconds() if created is not None else 0.0
        text = f"capacity: {want - len(pods)} of {want} pod(s) not created (quota?)"
        if waited >= self.unschedulable_grace_s:
            return WorkloadStatus(
                WorkloadState.PREEMPTED, f"{text} after {waited:.0f}s", blocked_scope=scope
            )
        return WorkloadStatus(WorkloadState.PROVISIONING, text)

    def _handle_from(self, name: str, kind: str, obj: Mapping[str, Any]) -> Handle:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        spec = obj.get("spec") or {}
        if kind == KIND_RAYJOB:
            groups = (spec.get("rayClusterSpec") or {}).get("workerGroupSpecs") or []
            nodes = 1 + sum(_int(g.get("replicas")) for g in groups)
        else:
            nodes = _int(spec.get("parallelism")) or 1
        return Handle(
            provider=self.fleet_name,
            id=name,
            request_id=str(ann.get(ANN_REQUEST_ID, "")),
            region=str(ann.get(ANN_REGION, "")),
            zone=str(ann.get(ANN_ZONE) or "") or None,
            instance_type=str(ann.get(ANN_INSTANCE_TYPE, "")),
            nodes=nodes,
            market=MarketKind.ON_DEMAND,
            job_id=str(ann.get(ANN_JOB_ID, (meta.get("labels") or {}).get(LABEL_JOB, ""))),
            extra=(("namespace", str(meta.get("namespace") or self.namespace)), ("kind", kind)),
        )
