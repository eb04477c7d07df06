"""A fake of the Compute Engine, Cloud TPU and Cloud Billing REST APIs, served on 127.0.0.1.

The real ``google-cloud-compute`` and ``google-cloud-tpu`` clients reach it through their REST
transport (``api_endpoint`` + anonymous credentials), so the adapter is tested through the SDK's
own request and error paths; the fake plays Google's side and refuses what Google refuses:

* a gVNIC-only machine series (A3 High/Mega/Edge/Ultra, A4) inserted without
  ``networkInterfaces[0].nicType: GVNIC`` (Compute Engine "GPUDirect": "The VMs must also use
  the Google Virtual NIC (gVNIC)"; "Networking and GPU machines" lists gVNIC NICs only), and an
  MRDMA NIC on a type without ConnectX-7 NICs (VPC "RDMA network profile");
* an unknown machine type in the zone; an insert beyond the region's GPU quota (403
  ``quotaExceeded``, "Quota 'NVIDIA_H100_GPUS' exceeded.  Limit: 0.0 in region ...") — spot
  VMs counting against ``PREEMPTIBLE_<metric>`` only where that quota was granted, else
  against the standard one (Compute Engine "Create and use Spot VMs");
* a repeated ``requestId``: answered with the first request's operation, nothing created;
* ``setLabels`` with a stale label fingerprint (412 ``conditionNotMet``).

It shows a reclaim as Google does (:meth:`FakeGCP.preempt`: spot VMs ``TERMINATED`` with a
``compute.instances.preempted`` zone operation; a TPU node ``PREEMPTED``, its queued resource
``SUSPENDED``) and speaks the shared test vocabulary of ``multicloud.testing.fakecloud``
(``fail_next``, ``preempt``, ``finish``, ``launches``)::

    with serve() as fake:
        provider = GCPProvider(regions=["us-central1"], **fake.options)
        fake.fail_next("instances.insert", "ZONE_RESOURCE_POOL_EXHAUSTED")
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multicloud.catalog import load_catalog
from multicloud.testing.fakecloud import FakeCloud, block_external_network, serve_json
from multicloud_gcp.offers import GPU_QUOTA_METRICS, quota_metric

__all__ = [
    "GPU_METRICS",
    "Call",
    "FakeGCP",
    "Fault",
    "block_external_network",
    "serve",
    "serve_offline",
]

MACHINE_SHAPES: dict[str, tuple[int, int, int]] = {
    # Public vCPUs, memory (MB) and GPUs of the accelerator-optimized machine types.
    "a2-highgpu-1g": (12, 87040, 1),
    "a2-highgpu-2g": (24, 174080, 2),
    "a2-highgpu-4g": (48, 348160, 4),
    "a2-highgpu-8g": (96, 696320, 8),
    "a2-megagpu-16g": (96, 1392640, 16),
    "a2-ultragpu-1g": (12, 174080, 1),
    "a2-ultragpu-2g": (24, 348160, 2),
    "a2-ultragpu-4g": (48, 696320, 4),
    "a2-ultragpu-8g": (96, 1392640, 8),
    "a3-highgpu-1g": (26, 239616, 1),
    "a3-highgpu-2g": (52, 479232, 2),
    "a3-highgpu-4g": (104, 958464, 4),
    "a3-highgpu-8g": (208, 1916928, 8),
    "a3-megagpu-8g": (208, 1916928, 8),
    "a3-ultragpu-8g": (224, 3022848, 8),
    "a4-highgpu-8g": (224, 4063232, 8),
    "g2-standard-4": (4, 16384, 1),
    "g2-standard-24": (24, 98304, 2),
    "g2-standard-48": (48, 196608, 4),
    "g2-standard-96": (96, 393216, 8),
}
GVNIC_ONLY = ("a3-highgpu", "a3-megagpu", "a3-edgegpu", "a3-ultragpu", "a4-highgpu")
MRDMA_TYPES = ("a3-ultragpu", "a4-highgpu")
TPU_TOPOLOGIES: dict[str, tuple[str, str]] = {
    "v5litepod-1": ("V5LITE_POD", "1x1"),
    "v5litepod-4": ("V5LITE_POD", "2x2"),
    "v5litepod-8": ("V5LITE_POD", "2x4"),
    "v5litepod-16": ("V5LITE_POD", "4x4"),
    "v5p-8": ("V5P", "2x2x1"),
    "v5p-16": ("V5P", "2x2x2"),
    "v5p-32": ("V5P", "2x2x4"),
    "v6e-1": ("V6E", "1x1"),
    "v6e-4": ("V6E", "2x2"),
    "v6e-8": ("V6E", "2x4"),
    "v6e-16": ("V6E", "4x4"),
    "v6e-32": ("V6E", "4x8"),
    "v6e-64": ("V6E", "8x8"),
    "v6e-128": ("V6E", "8x16"),
    "v6e-256": ("V6E", "16x16"),
}
GPU_METRICS = tuple(dict.fromkeys(metric for _, metric, _ in GPU_QUOTA_METRICS))
_STEPS = ("PENDING", "RUNNING", "DONE")
_BOOT = ("PROVISIONING", "STAGING", "RUNNING")
_QR_STEPS = ("CREATING", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE")
_ALIVE = frozenset((*_BOOT, "REPAIRING"))
_GRPC = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass
class Fault:
    """An error the fake answers instead of doing a call.

    Attributes:
        status: HTTP status of the answer (inside an operation: its ``httpErrorStatusCode``).
        reason: Compute ``errors[].reason`` of an HTTP error, or ``errors[].code`` of an error
            inside a Compute operation.
        message: Error message.
        in_operation: Accept the call and fail its long-running operation instead.
        grpc_code: For TPU operation errors: the ``google.rpc.Status`` code.
    """

    status: int = 400
    reason: str = ""
    message: str = "injected error"
    in_operation: bool = False
    grpc_code: int = 0


_STOCKOUT = (
    "The zone '{where}' does not have enough resources available to fulfill the request. "
    "Try a different zone, or try again later."
)
_CANNED: dict[str, Fault] = {
    # How Google answers each error code that tests name with fail_next().
    "ZONE_RESOURCE_POOL_EXHAUSTED": Fault(503, "ZONE_RESOURCE_POOL_EXHAUSTED", _STOCKOUT, True),
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": Fault(
        503, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", _STOCKOUT, True
    ),
    "QUOTA_EXCEEDED": Fault(403, "QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 0.0", True),
    "quotaExceeded": Fault(403, "quotaExceeded", "Quota 'CPUS' exceeded.  Limit: 0.0"),
    "rateLimitExceeded": Fault(403, "rateLimitExceeded", "Rate Limit Exceeded"),
    "RESOURCE_EXHAUSTED": Fault(
        message='There is no more capacity in the zone "{where}"; you can try in another zone '
        "where Cloud TPU Nodes are offered",
        in_operation=True,
        grpc_code=8,
    ),
}


@dataclass(frozen=True)
class Call:
    """One request the fake received.

    Attributes:
        api: The call, e.g. ``instances.insert``.
        method: HTTP method.
        path: URL path.
        query: Query parameters (first value each).
        body: Decoded JSON body, if any.
    """

    api: str
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


class _HTTPError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, rpc: bool = False) -> None:
        super().__init__(message)
        self.status = status
        error: dict[str, Any] = {"code": status, "message": message}
        if rpc:
            error["status"] = _GRPC.get(status, "")
        else:
            error["errors"] = [{"message": message, "domain": "global", "reason": reason}]
        self.payload = {"error": error}


def _default_listings() -> tuple[dict[str, set[str]], dict[str, dict[str, str]], set[str]]:
    rows = [r for r in load_catalog().rows if r.provider == "gcp"]
    machine: dict[str, set[str]] = {}
    tpus: dict[str, dict[str, str]] = {}
    zones_of: dict[str, set[str]] = {}
    for row in rows:
        if row.zone:
            zones_of.setdefault(row.region, set()).add(row.zone)
    for row in rows:
        if row.instance_type.startswith("tpu-"):
            name = row.instance_type.removeprefix("tpu-")
            for zone in [row.zone] if row.zone else sorted(zones_of.get(row.region, ())):
                tpus.setdefault(zone, {})[name] = TPU_TOPOLOGIES.get(name, ("", ""))[1]
        elif row.zone:
            machine.setdefault(row.zone, set()).add(row.instance_type)
    return machine, tpus, {r.region for r in rows}


def _matches(expression: str, resource: dict[str, Any]) -> bool:
    """The subset of Compute's list ``filter`` the adapter sends, joined by ``AND``."""
    labels = resource.get("labels") or {}
    for term in filter(None, (t.strip().strip("()") for t in expression.split(" AND "))):
        if m := re.fullmatch(r"labels\.([\w-]+):\*", term):
            ok = m.group(1) in labels
        elif m := re.fullmatch(r'labels\.([\w-]+)\s*=\s*"?([^"]*)"?', term):
            ok = labels.get(m.group(1)) == m.group(2)
        elif m := re.fullmatch(r'name eq "?([^"]*)"?', term):
            ok = re.fullmatch(m.group(1), str(resource.get("name", ""))) is not None
        elif m := re.fullmatch(r'operationType\s*=\s*"?([^"]*)"?', term):
            ok = resource.get("operationType") == m.group(1)
        else:
            raise _HTTPError(400, "invalid", f"fake cannot parse filter term {term!r}")
        if not ok:
            return False
    return True


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1]


class FakeGCP(FakeCloud):
    """State and controls of the fake Compute + TPU + Billing APIs.

    Args:
        project: The one project it serves.
        queued_resources: False makes the TPU queued-resource API answer 501.

    Attributes:
        url: Base URL (``http://127.0.0.1:PORT``) while serving.
        machine_types: Zone -> machine types listed there.
        tpu_types: Zone -> TPU accelerator type -> topology listed there.
        quotas: Region -> metric -> ``[limit, usage by others]`` (live VMs add theirs).
        skus: What the Billing Catalog answers.
        calls: Every request received, in order.
        instances: ``(zone, name)`` -> instance JSON.
        operations: Compute operation name -> operation JSON.
        tpu_nodes: ``(zone, id)`` -> TPU node JSON.
        tpu_queued: ``(zone, id)`` -> queued resource JSON.
        policies: ``(region, name)`` -> resource (placement) policy JSON.
    """

    def __init__(self, project: str = "fake-project", *, queued_resources: bool = True) -> None:
        super().__init__()
        self.project = project
        self.queued_resources = queued_resources
        self.url = ""
        self.machine_types, self.tpu_types, regions = _default_listings()
        self.quotas: dict[str, dict[str, list[float]]] = {
            r: {
                m: [1024.0, 0.0] for p in ("", "PREEMPTIBLE_") for m in (p + g for g in GPU_METRICS)
            }
            for r in regions
        }
        self.skus: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.tpu_nodes: dict[tuple[str, str], dict[str, Any]] = {}
        self.tpu_queued: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self._request_ids: dict[str, dict[str, Any]] = {}
        self._effects: dict[str, tuple[Fault | None, Callable[[], object] | None]] = {}
        self._tpu_ops: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()

    # -- controls ---------------------------------------------------------------------------

    @property
    def options(self) -> dict[str, Any]:
        """Fleet-entry options pointing a GCPProvider at this fake (JSON-serialisable)."""
        return {
            "project": self.project,
            "api_endpoint": self.url,
            "tpu_api_endpoint": self.url,
            "billing_api_endpoint": self.url,
            "poll_interval_s": 0.0,
            "operation_timeout_s": 10.0,
        }

    def fail(self, api: str, *, times: int = 1, after: int = 0, **fault: Any) -> Fault:
        """Answer the next ``times`` calls of ``api`` (after ``after`` good ones) with an error.

        Args:
            api: The call, e.g. ``instances.insert``, ``tpu.queuedResources.create``.
            times: How many calls it hits.
            after: How many calls pass untouched first (to hit node 2 of a gang).
            **fault: The :class:`Fault`'s fields.

        Returns:
            The fault.
        """
        made = Fault(**fault)
        self.faults.add(api, None, after)
        self.faults.add(api, made, times)
        return made

    def set_quota(self, region: str, metric: str, limit: float, usage: float = 0.0) -> None:
        """Set one regional quota (``usage`` is what other VMs use)."""
        with self._lock:
            self.quotas.setdefault(region, {})[metric] = [float(limit), float(usage)]

    def calls_to(self, api: str) -> list[Call]:
        """Return the calls received for ``api``."""
        with self._lock:
            return [c for c in self.calls if c.api == api]

    def _gang(self, handle_id: str) -> list[dict[str, Any]]:
        return [
            i for i in self.instances.values() if i["labels"].get("multicloud-handle") == handle_id
        ]

    def finish(self, workload: str, exit_code: int) -> None:
        """End a workload with ``exit_code`` as its node program reports it.

        VMs get the ``multicloud-exit`` label and power off (TERMINATED); a TPU node gets the
        label (worker 0's report) and stays READY.
        """
        with self._lock:
            for instance in self._gang(workload):
                instance["labels"]["multicloud-exit"] = str(exit_code)
                instance["status"] = "TERMINATED"
            for (_, node_id), node in self.tpu_nodes.items():
                if node_id == workload:
                    node["labels"]["multicloud-exit"] = str(exit_code)

    def preempt(self, workload: str) -> None:
        """Reclaim a workload as Google shows it: spot VMs TERMINATED with a
        ``compute.instances.preempted`` operation; a TPU node PREEMPTED, its queued resource
        SUSPENDED."""
        with self._lock:
            for instance in self._gang(workload):
                instance["status"] = "TERMINATED"
                zone = _last(instance["zone"])
                self._op(zone, "compute.instances.preempted", instance["selfLink"], done=True)
            for (zone, node_id), node in self.tpu_nodes.items():
                if node_id == workload:
                    node["state"] = "PREEMPTED"
                    if (zone, node_id) in self.tpu_queued:
                        self.tpu_queued[(zone, node_id)]["state"] = {"state": "SUSPENDED"}

    def fail_queued(self, workload: str, code: int, message: str) -> None:
        """Move a queued resource to FAILED with a ``google.rpc.Status`` error."""
        with self._lock:
            for (_, qr_id), qr in self.tpu_queued.items():
                if qr_id == workload:
                    failed = {"error": {"code": code, "message": message}}
                    qr["state"] = {"state": "FAILED", "failedData": failed}

    # -- requests ---------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        """Answer one request: ``(HTTP status, JSON payload)``."""
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            try:
                api, action = self._route(method, parts.path)
                self.calls.append(Call(api, method, parts.path, query, body))
                fault = self.faults.take(api)
                if isinstance(fault, str):
                    fault = _CANNED.get(fault, Fault(400, fault, f"injected {fault}"))
                if fault is not None and not fault.in_operation:
                    raise _HTTPError(
                        fault.status, fault.reason, fault.message, rpc=api.startswith("tpu.")
                    )
                return 200, action(query, body or {}, fault)
            except _HTTPError as exc:
                return exc.status, exc.payload

    def _route(self, method: str, path: str) -> tuple[str, Callable[..., Any]]:
        c = f"^/compute/v1/projects/{re.escape(self.project)}"
        t = f"^/v2/projects/{re.escape(self.project)}/locations/([^/]+)"
        i, o = f"{c}/zones/([^/]+)/instances", "/operations/([^/]+)"
        rp, q = f"{c}/regions/([^/]+)/resourcePolicies", f"{t}/queuedResources"
        table = [
            ("GET", f"{i}$", "instances.list", self._list),
            ("POST", f"{i}$", "instances.insert", self._insert),
            ("GET", f"{i}/([^/]+)$", "instances.get", self._get),
            ("DELETE", f"{i}/([^/]+)$", "instances.delete", self._delete),
            ("POST", f"{i}/([^/]+)/setLabels$", "instances.setLabels", self._set_labels),
            ("GET", f"{c}/aggregated/instances$", "instances.aggregatedList", self._aggregated),
            ("GET", f"{c}/zones/([^/]+){o}$", "zoneOperations.get", self._op_get),
            ("POST", f"{c}/zones/([^/]+){o}/wait$", "zoneOperations.wait", self._op_get),
            ("GET", f"{c}/zones/([^/]+)/operations$", "zoneOperations.list", self._op_list),
            ("GET", f"{c}/aggregated/machineTypes$", "machineTypes.aggregatedList", self._types),
            ("GET", f"{c}/regions/([^/]+)$", "regions.get", self._region),
            ("POST", f"{rp}$", "resourcePolicies.insert", self._policy_insert),
            ("DELETE", f"{rp}/([^/]+)$", "resourcePolicies.delete", self._policy_delete),
            ("GET", f"{c}/regions/([^/]+){o}$", "regionOperations.get", self._op_get),
            ("POST", f"{c}/regions/([^/]+){o}/wait$", "regionOperations.wait", self._op_get),
            ("GET", f"{t}/acceleratorTypes$", "tpu.acceleratorTypes.list", self._tpu_types_of),
            ("GET", f"{t}/nodes$", "tpu.nodes.list", self._tpu_list_nodes),
            ("POST", f"{t}/nodes$", "tpu.nodes.create", self._tpu_create_node),
            ("GET", f"{t}/nodes/([^/:]+)$", "tpu.nodes.get", self._tpu_get_node),
            ("PATCH", f"{t}/nodes/([^/:]+)$", "tpu.nodes.patch", self._tpu_patch_node),
            ("DELETE", f"{t}/nodes/([^/:]+)$", "tpu.nodes.delete", self._tpu_delete_node),
            ("GET", f"{q}$", "tpu.queuedResources.list", self._qr_list),
            ("POST", f"{q}$", "tpu.queuedResources.create", self._qr_create),
            ("GET", f"{q}/([^/:]+)$", "tpu.queuedResources.get", self._qr_get),
            ("DELETE", f"{q}/([^/:]+)$", "tpu.queuedResources.delete", self._qr_delete),
            ("GET", f"{t}/operations/([^/:]+)$", "tpu.operations.get", self._tpu_op_get),
            ("GET", r"^/v1/services/([^/]+)/skus$", "billing.skus.list", self._skus),
        ]
        for verb, pattern, api, fn in table:
            m = re.match(pattern, path)
            if verb == method and m:
                if api.startswith("tpu.queuedResources") and not self.queued_resources:
                    raise _HTTPError(501, "", "queued resources are not offered here", rpc=True)
                return api, lambda q, b, f, fn=fn, a=m.groups(): fn(*a, q, b, f)
        raise _HTTPError(404, "notFound", f"fake has no route {method} {path}")

    # -- compute ----------------------------------------------------------------------------

    def _base(self) -> str:
        return f"{self.url}/compute/v1/projects/{self.project}"

    def _op(
        self,
        where: str,
        kind: str,
        target: str,
        *,
        fault: Fault | None = None,
        effect: Callable[[], object] | None = None,
        regional: bool = False,
        done: bool = False,
    ) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        scope = f"{self._base()}/{'regions' if regional else 'zones'}/{where}"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "region" if regional else "zone": scope,
            "operationType": kind,
            "targetLink": target,
            "status": "DONE" if done else "PENDING",
            "selfLink": f"{scope}/operations/{name}",
        }
        self.operations[name] = op
        self._effects[name] = (fault, effect)
        return op

    def _op_get(self, where: str, name: str, q: Any, b: Any, f: Any) -> Any:
        op = self.operations.get(name)
        if op is None:
            raise _HTTPError(404, "notFound", f"operation {name} not found")
        if op["status"] == "DONE":
            return op
        op["status"] = _STEPS[_STEPS.index(op["status"]) + 1]
        if op["status"] != "DONE":
            return op
        fault, effect = self._effects.pop(name, (None, None))
        if fault is not None:
            op["httpErrorStatusCode"] = fault.status
            op["httpErrorMessage"] = _GRPC.get(fault.status, "ERROR")
            message = fault.message.replace("{where}", f"projects/{self.project}/zones/{where}")
            op["error"] = {"errors": [{"code": fault.reason or "ERROR", "message": message}]}
        elif effect is not None:
            effect()
        return op

    def _op_list(self, zone: str, query: dict[str, str], b: Any, f: Any) -> Any:
        items = [
            op
            for op in self.operations.values()
            if op.get("zone", "").endswith(f"/zones/{zone}")
            and _matches(query.get("filter", ""), op)
        ]
        return {"kind": "compute#operationList", "items": items}

    def _deduplicated(self, query: dict[str, str]) -> dict[str, Any] | None:
        # Like Compute: a repeated requestId answers the first operation and creates nothing.
        return self._request_ids.get(query.get("requestId", ""))

    def _remember(self, query: dict[str, str], op: dict[str, Any]) -> dict[str, Any]:
        if query.get("requestId"):
            self._request_ids[query["requestId"]] = op
        return op

    def _usage(self, region: str, metric: str) -> float:
        used = self.quotas.get(region, {}).get(metric, [0.0, 0.0])[1]
        for instance in self.instances.values():
            if instance["status"] in _ALIVE and instance["_quota"] == (region, metric):
                used += MACHINE_SHAPES[_last(instance["machineType"])][2]
        return used

    def _insert(self, zone: str, query: dict[str, str], body: Any, fault: Fault | None) -> Any:
        if (first := self._deduplicated(query)) is not None:
            return first
        name, machine = body["name"], _last(body.get("machineType", ""))
        if (zone, name) in self.instances:
            raise _HTTPError(409, "alreadyExists", f"The resource '{name}' already exists")
        if machine not in self.machine_types.get(zone, ()):
            raise _HTTPError(
                400,
                "invalid",
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                f"Machine type with name '{machine}' does not exist in zone '{zone}'.",
            )
        nics = body.get("networkInterfaces") or [{}]
        if machine.startswith(GVNIC_ONLY) and nics[0].get("nicType") != "GVNIC":
            # Google's rule (see the module docstring); the wording is the fake's.
            raise _HTTPError(
                400,
                "invalid",
                "Invalid value for field 'resource.networkInterfaces[0].nicType': "
                f"'{nics[0].get('nicType', '')}'. {machine} supports only GVNIC interfaces.",
            )
        if any(n.get("nicType") == "MRDMA" for n in nics) and not machine.startswith(MRDMA_TYPES):
            raise _HTTPError(400, "invalid", f"{machine} has no NIC of type MRDMA")
        region = zone.rsplit("-", 1)[0]
        for policy in body.get("resourcePolicies") or ():
            if (region, _last(policy)) not in self.policies:
                raise _HTTPError(400, "invalid", f"resource policy {policy} not found")
        bucket = ("", "")
        if (found := quota_metric(machine)) is not None and machine in MACHINE_SHAPES:
            metric = found[0]
            granted = self.quotas.get(region, {}).get(f"PREEMPTIBLE_{metric}", [0.0])[0] > 0
            if (body.get("scheduling") or {}).get("provisioningModel") == "SPOT" and granted:
                metric = f"PREEMPTIBLE_{metric}"
            limit = self.quotas.get(region, {}).get(metric, [float("inf")])[0]
            if self._usage(region, metric) + MACHINE_SHAPES[machine][2] > limit:
                raise _HTTPError(
                    403,
                    "quotaExceeded",
                    f"Quota '{metric}' exceeded.  Limit: {limit:.1f} in region {region}.",
                )
            bucket = (region, metric)
        link = f"{self._base()}/zones/{zone}/instances/{name}"
        if fault is None:
            self.launches["instances.insert"] += 1
            self.instances[(zone, name)] = {
                **body,
                "id": str(next(self._ids)),
                "zone": f"{self._base()}/zones/{zone}",
                "status": "PROVISIONING",
                "selfLink": link,
                "labelFingerprint": f"fp-{next(self._ids)}",
                "labels": dict(body.get("labels") or {}),
                "_quota": bucket,
            }
        return self._remember(query, self._op(zone, "insert", link, fault=fault))

    @staticmethod
    def _public(instance: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in instance.items() if not k.startswith("_")}

    def _read(self, instance: dict[str, Any]) -> dict[str, Any]:
        # Each read moves a booting VM one step towards RUNNING.
        if instance["status"] in _BOOT[:-1]:
            instance["status"] = _BOOT[_BOOT.index(instance["status"]) + 1]
        return self._public(instance)

    def _instance(self, zone: str, name: str) -> dict[str, Any]:
        if (zone, name) not in self.instances:
            raise _HTTPError(404, "notFound", f"The resource '{name}' was not found")
        return self.instances[(zone, name)]

    def _get(self, zone: str, name: str, q: Any, b: Any, f: Any) -> Any:
        return self._read(self._instance(zone, name))

    def _list(self, zone: str, query: dict[str, str], b: Any, f: Any) -> Any:
        found = [
            self._read(i)
            for (z, _), i in sorted(self.instances.items())
            if z == zone and _matches(query.get("filter", ""), i)
        ]
        return {"kind": "compute#instanceList", "items": found}

    def _aggregated(self, query: dict[str, str], b: Any, f: Any) -> Any:
        items: dict[str, Any] = {}
        for (zone, _), instance in sorted(self.instances.items()):
            if _matches(query.get("filter", ""), instance):
                scoped = items.setdefault(f"zones/{zone}", {"instances": []})
                scoped["instances"].append(self._public(instance))
        return {"kind": "compute#instanceAggregatedList", "items": items}

    def _set_labels(self, zone: str, name: str, query: dict[str, str], body: Any, f: Any) -> Any:
        instance = self._instance(zone, name)
        if body.get("labelFingerprint") != instance["labelFingerprint"]:
            raise _HTTPError(
                412,
                "conditionNotMet",
                "Labels fingerprint either invalid or resource labels have changed",
            )
        instance["labels"] = dict(body.get("labels") or {})
        instance["labelFingerprint"] = f"fp-{next(self._ids)}"
        return self._op(zone, "setLabels", instance["selfLink"], done=True)

    def _delete(self, zone: str, name: str, query: dict[str, str], b: Any, fault: Any) -> Any:
        if (first := self._deduplicated(query)) is not None:
            return first
        instance = self._instance(zone, name)
        instance["status"] = "STOPPING"
        op = self._op(
            zone,
            "delete",
            instance["selfLink"],
            fault=fault,
            effect=lambda: self.instances.pop((zone, name), None),
        )
        return self._remember(query, op)

    def _policy_insert(self, region: str, query: dict[str, str], body: Any, fault: Any) -> Any:
        if (first := self._deduplicated(query)) is not None:
            return first
        name = body["name"]
        if (region, name) in self.policies:
            raise _HTTPError(409, "alreadyExists", f"The resource '{name}' already exists")
        link = f"{self._base()}/regions/{region}/resourcePolicies/{name}"

        def create() -> None:
            self.policies[(region, name)] = {**body, "selfLink": link, "region": region}

        op = self._op(region, "insert", link, fault=fault, effect=create, regional=True)
        return self._remember(query, op)

    def _policy_delete(self, region: str, name: str, q: Any, b: Any, fault: Any) -> Any:
        if (region, name) not in self.policies:
            raise _HTTPError(404, "notFound", f"The resource '{name}' was not found")
        users = [
            i["name"]
            for i in self.instances.values()
            if any(_last(p) == name for p in i.get("resourcePolicies", ()))
        ]
        if users:
            raise _HTTPError(400, "resourceInUseByAnotherResource", f"{name} is used by {users[0]}")
        return self._op(
            region,
            "delete",
            self.policies[(region, name)]["selfLink"],
            fault=fault,
            effect=lambda: self.policies.pop((region, name), None),
            regional=True,
        )

    def _types(self, query: dict[str, str], b: Any, f: Any) -> Any:
        items: dict[str, Any] = {}
        for zone, names in sorted(self.machine_types.items()):
            listed = [
                {
                    "name": n,
                    "zone": zone,
                    "guestCpus": MACHINE_SHAPES.get(n, (12, 87040, 1))[0],
                    "memoryMb": MACHINE_SHAPES.get(n, (12, 87040, 1))[1],
                }
                for n in sorted(names)
                if _matches(query.get("filter", ""), {"name": n})
            ]
            if listed:
                items[f"zones/{zone}"] = {"machineTypes": listed}
        return {"kind": "compute#machineTypeAggregatedList", "items": items}

    def _region(self, region: str, q: Any, b: Any, f: Any) -> Any:
        if region not in self.quotas:
            raise _HTTPError(404, "notFound", f"The resource 'regions/{region}' was not found")
        quotas = [
            {"metric": metric, "limit": limit, "usage": self._usage(region, metric)}
            for metric, (limit, _) in sorted(self.quotas[region].items())
        ]
        return {"kind": "compute#region", "name": region, "status": "UP", "quotas": quotas}

    # -- TPU --------------------------------------------------------------------------------

    def _parent(self, zone: str) -> str:
        return f"projects/{self.project}/locations/{zone}"

    def _tpu_types_of(self, zone: str, q: Any, b: Any, f: Any) -> Any:
        if zone not in self.tpu_types:
            raise _HTTPError(
                404, "", f"Location {zone} is not found or access is unauthorized.", rpc=True
            )
        out = []
        for name, topology in sorted(self.tpu_types[zone].items()):
            item: dict[str, Any] = {
                "name": f"{self._parent(zone)}/acceleratorTypes/{name}",
                "type": name,
            }
            kind = TPU_TOPOLOGIES.get(name, ("", ""))[0]
            if kind and topology:
                item["acceleratorConfigs"] = [{"type": kind, "topology": topology}]
            out.append(item)
        return {"acceleratorTypes": out}

    def _tpu_op(self, zone: str, fault: Fault | None, effect: Callable[[], object] | None) -> Any:
        name = f"{self._parent(zone)}/operations/operation-{next(self._ids)}"
        op: dict[str, Any] = {"name": name, "done": False}
        self._tpu_ops[name] = {"op": op, "polls": 0, "fault": fault, "effect": effect}
        return op

    def _tpu_op_get(self, zone: str, op_id: str, q: Any, b: Any, f: Any) -> Any:
        entry = self._tpu_ops.get(f"{self._parent(zone)}/operations/{op_id}")
        if entry is None:
            raise _HTTPError(404, "", f"operation {op_id} not found", rpc=True)
        op, entry["polls"] = entry["op"], entry["polls"] + 1
        if not op["done"] and entry["polls"] >= 2:
            op["done"] = True
            if (fault := entry["fault"]) is not None:
                message = fault.message.replace("{where}", zone)
                op["error"] = {"code": fault.grpc_code or 8, "message": message}
            elif entry["effect"] is not None:
                entry["effect"]()
        return op

    def _node_json(self, zone: str, node_id: str, node: dict[str, Any], qr: str) -> dict[str, Any]:
        return {
            **node,
            "name": f"{self._parent(zone)}/nodes/{node_id}",
            "state": "CREATING",
            "labels": dict(node.get("labels") or {}),
            "metadata": dict(node.get("metadata") or {}),
            **({"queuedResource": qr} if qr else {}),
        }

    def _tpu_node(self, zone: str, node_id: str) -> dict[str, Any]:
        node = self.tpu_nodes.get((zone, node_id))
        if node is None:
            raise _HTTPError(404, "", f"Resource 'nodes/{node_id}' was not found", rpc=True)
        if node["state"] == "CREATING":
            node["state"] = "READY"
        return node

    def _tpu_list_nodes(self, zone: str, q: Any, b: Any, f: Any) -> Any:
        return {"nodes": [self._tpu_node(z, i) for (z, i) in sorted(self.tpu_nodes) if z == zone]}

    def _tpu_get_node(self, zone: str, node_id: str, q: Any, b: Any, f: Any) -> Any:
        return self._tpu_node(zone, node_id)

    def _tpu_create_node(self, zone: str, query: dict[str, str], body: Any, fault: Any) -> Any:
        node_id = query.get("nodeId", "")
        if (zone, node_id) in self.tpu_nodes:
            raise _HTTPError(409, "", f"node {node_id} already exists", rpc=True)
        kind = body.get("acceleratorType", "")
        if kind and kind not in self.tpu_types.get(zone, {}):
            raise _HTTPError(400, "", f"accelerator type {kind} not in {zone}", rpc=True)
        self.launches["tpu.nodes.create"] += fault is None

        def create() -> None:
            self.tpu_nodes[(zone, node_id)] = self._node_json(zone, node_id, body, "")

        return self._tpu_op(zone, fault, create)

    def _tpu_patch_node(
        self, zone: str, node_id: str, query: dict[str, str], body: Any, f: Any
    ) -> Any:
        node = self._tpu_node(zone, node_id)
        for path in query.get("updateMask", "").split(","):
            if path in body:
                node[path] = body[path]
        return self._tpu_op(zone, None, None)

    def _tpu_delete_node(self, zone: str, node_id: str, q: Any, b: Any, fault: Any) -> Any:
        self._tpu_node(zone, node_id)["state"] = "DELETING"
        return self._tpu_op(zone, fault, lambda: self.tpu_nodes.pop((zone, node_id), None))

    def _qr_read(self, zone: str, qr_id: str, qr: dict[str, Any]) -> dict[str, Any]:
        state = qr["state"]["state"]
        if state in _QR_STEPS[:-1]:
            qr["state"] = {"state": _QR_STEPS[_QR_STEPS.index(state) + 1]}
            if qr["state"]["state"] == "ACTIVE":
                node = self._node_json(zone, qr_id, qr["tpu"]["nodeSpec"][0]["node"], qr["name"])
                if "spot" in qr:
                    node["schedulingConfig"] = {"spot": True}
                node["state"] = "READY"
                self.tpu_nodes[(zone, qr_id)] = node
        return qr

    def _qr_list(self, zone: str, q: Any, b: Any, f: Any) -> Any:
        found = [
            self._qr_read(z, i, qr) for (z, i), qr in sorted(self.tpu_queued.items()) if z == zone
        ]
        return {"queuedResources": found}

    def _qr_get(self, zone: str, qr_id: str, q: Any, b: Any, f: Any) -> Any:
        if (zone, qr_id) not in self.tpu_queued:
            raise _HTTPError(404, "", f"Resource 'queuedResources/{qr_id}' was not found", rpc=True)
        return self.tpu_queued[(zone, qr_id)]

    def _qr_create(self, zone: str, query: dict[str, str], body: Any, fault: Any) -> Any:
        if (first := self._request_ids.get(query.get("requestId", ""))) is not None:
            return first
        qr_id = query.get("queuedResourceId", "")
        if (zone, qr_id) in self.tpu_queued:
            raise _HTTPError(409, "", f"queued resource {qr_id} already exists", rpc=True)
        if zone not in self.tpu_types:
            raise _HTTPError(400, "", f"TPUs are not offered in {zone}", rpc=True)
        name = f"{self._parent(zone)}/queuedResources/{qr_id}"
        self.launches["tpu.queuedResources.create"] += fault is None

        def create() -> None:
            self.tpu_queued[(zone, qr_id)] = {**body, "name": name, "state": {"state": "CREATING"}}

        return self._remember(query, self._tpu_op(zone, fault, create))

    def _qr_delete(self, zone: str, qr_id: str, query: dict[str, str], b: Any, fault: Any) -> Any:
        qr = self._qr_get(zone, qr_id, query, b, fault)
        qr["state"] = {"state": "DELETING"}

        def delete() -> None:
            self.tpu_queued.pop((zone, qr_id), None)
            if query.get("force") in ("true", "True", "1"):
                self.tpu_nodes.pop((zone, qr_id), None)

        return self._tpu_op(zone, fault, delete)

    # -- billing ----------------------------------------------------------------------------

    def _skus(self, service: str, q: Any, b: Any, f: Any) -> Any:
        return {"skus": list(self.skus)}


@contextlib.contextmanager
def serve(fake: FakeGCP | None = None) -> Iterator[FakeGCP]:
    """Serve a fake on 127.0.0.1 (a free port) for the duration of the block.

    Args:
        fake: State to serve (a fresh default one when None).

    Yields:
        The fake, with ``url`` and ``options`` set.
    """
    fake = fake or FakeGCP()
    with serve_json(
        lambda call: fake.handle(call.method, call.path, call.body), name="fake-gcp"
    ) as url:
        fake.url = url
        yield fake


@contextlib.contextmanager
def serve_offline(fake: FakeGCP | None = None) -> Iterator[FakeGCP]:
    """Serve a fake while every connection not to 127.0.0.1 is refused, and fail if one was.

    Proves that nothing (an operation poller, an auth refresh, a metadata probe) reached a
    real Google endpoint during the block.

    Args:
        fake: State to serve (a fresh default one when None).

    Yields:
        The fake, serving.

    Raises:
        AssertionError: At the end, if a connection elsewhere was attempted.
    """
    with block_external_network() as refused, serve(fake) as running:
        yield running
    assert refused == [], f"connections outside 127.0.0.1 were attempted: {refused}"
