"""A fake of the Compute Engine and Cloud TPU REST APIs, served on 127.0.0.1.

The real ``google-cloud-compute`` and ``google-cloud-tpu`` clients talk to it through their
REST transport (``client_options={"api_endpoint": "http://127.0.0.1:PORT"}`` and anonymous
credentials), so the adapter is tested through the same SDK code paths it uses in production.
What it models:

* Compute: ``instances`` insert / get / list / aggregatedList / delete, ``zoneOperations``
  get / wait / list, ``machineTypes`` list / aggregatedList, ``regions.get`` with quotas,
  ``resourcePolicies`` insert / get / delete with ``regionOperations`` get / wait;
  long-running operations that go PENDING → RUNNING → DONE over two polls; ``requestId``
  de-duplication (a repeated id returns the first operation and creates nothing); the list
  ``filter`` subset the adapter sends (``labels.K = "V"``, ``labels.K:*``, ``name eq "re"``,
  ``operationType = "X"``, joined by ``AND``).
* TPU v2: ``nodes``, ``queuedResources`` (CREATING → WAITING_FOR_RESOURCES → PROVISIONING →
  ACTIVE over list reads), ``acceleratorTypes``, ``operations``.
* Cloud Billing Catalog: ``services/{id}/skus`` answering :attr:`FakeGCP.skus`.
* Controls: :meth:`FakeGCP.fail` (an HTTP error with a reason, or an error inside the
  operation), :meth:`FakeGCP.preempt`, :meth:`FakeGCP.finish` (the workload exits with a
  code, as the startup script would report it), quotas and listings.

Use :func:`serve`::

    with serve() as fake:
        provider = GCPProvider(regions=["us-central1"], **fake.options)

Standard library only. The server thread always stops when the block exits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multicloud.catalog import load_catalog

__all__ = ["Call", "FakeGCP", "Fault", "block_external_network", "serve"]

MACHINE_SHAPES: dict[str, tuple[int, int]] = {
    # Public vCPU / memory (MB) of the accelerator-optimized machine types.
    "a2-highgpu-1g": (12, 87040),
    "a2-highgpu-2g": (24, 174080),
    "a2-highgpu-4g": (48, 348160),
    "a2-highgpu-8g": (96, 696320),
    "a2-megagpu-16g": (96, 1392640),
    "a2-ultragpu-1g": (12, 174080),
    "a2-ultragpu-2g": (24, 348160),
    "a2-ultragpu-4g": (48, 696320),
    "a2-ultragpu-8g": (96, 1392640),
    "a3-highgpu-1g": (26, 239616),
    "a3-highgpu-2g": (52, 479232),
    "a3-highgpu-4g": (104, 958464),
    "a3-highgpu-8g": (208, 1916928),
    "a3-megagpu-8g": (208, 1916928),
    "a3-ultragpu-8g": (224, 3022848),
    "a4-highgpu-8g": (224, 4063232),
    "g2-standard-4": (4, 16384),
    "g2-standard-24": (24, 98304),
    "g2-standard-48": (48, 196608),
    "g2-standard-96": (96, 393216),
}

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

GPU_METRICS = (
    "NVIDIA_A100_GPUS",
    "NVIDIA_A100_80GB_GPUS",
    "NVIDIA_H100_GPUS",
    "NVIDIA_H100_MEGA_GPUS",
    "NVIDIA_H200_GPUS",
    "NVIDIA_B200_GPUS",
    "NVIDIA_L4_GPUS",
)

_OP_STEPS = ("PENDING", "RUNNING", "DONE")
_INSTANCE_STEPS = ("PROVISIONING", "STAGING", "RUNNING")
_QR_STEPS = ("CREATING", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE")
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass
class Fault:
    """An error the fake answers instead of doing the call.

    Attributes:
        api: Call it applies to, e.g. ``instances.insert``, ``tpu.queuedResources.create``.
        status: HTTP status of the error answer (or, in an operation, its
            ``httpErrorStatusCode``).
        reason: Compute ``errors[].reason`` for an HTTP error, or the ``errors[].code`` of an
            error inside a Compute operation.
        message: Error message.
        in_operation: Accept the call and fail its long-running operation instead.
        grpc_code: For TPU operation errors: the ``google.rpc.Status`` code.
        times: How many calls it hits.
        after: How many matching calls pass untouched first (to hit node 2 of a gang).
    """

    api: str
    status: int = 400
    reason: str = ""
    message: str = "injected error"
    in_operation: bool = False
    grpc_code: int = 0
    times: int = 1
    after: int = 0


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
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


def _compute_error(status: int, reason: str, message: str) -> _HTTPError:
    errors = [{"message": message, "domain": "global", "reason": reason or "invalid"}]
    return _HTTPError(status, {"error": {"code": status, "message": message, "errors": errors}})


def _rpc_error(status: int, message: str) -> _HTTPError:
    return _HTTPError(
        status,
        {"error": {"code": status, "message": message, "status": _GRPC_STATUS.get(status, "")}},
    )


def _default_listings() -> tuple[dict[str, set[str]], dict[str, dict[str, str]], set[str]]:
    catalog = load_catalog()
    machine: dict[str, set[str]] = {}
    tpus: dict[str, dict[str, str]] = {}
    zones_of_region: dict[str, set[str]] = {}
    regions: set[str] = set()
    rows = [r for r in catalog.rows if r.provider == "gcp"]
    for row in rows:
        regions.add(row.region)
        if row.zone:
            zones_of_region.setdefault(row.region, set()).add(row.zone)
    for row in rows:
        if row.instance_type.startswith("tpu-"):
            name = row.instance_type.removeprefix("tpu-")
            for zone in [row.zone] if row.zone else sorted(zones_of_region.get(row.region, ())):
                tpus.setdefault(zone, {})[name] = TPU_TOPOLOGIES.get(name, ("", ""))[1]
        elif row.zone:
            machine.setdefault(row.zone, set()).add(row.instance_type)
    return machine, tpus, regions


def _match_filter(expression: str, resource: dict[str, Any]) -> bool:
    if not expression:
        return True
    for term in expression.split(" AND "):
        term = term.strip().strip("()").strip()
        labels = resource.get("labels") or {}
        if m := re.fullmatch(r"labels\.([\w-]+):\*", term):
            if m.group(1) not in labels:
                return False
        elif m := re.fullmatch(r'labels\.([\w-]+)\s*=\s*"?([^"]*)"?', term):
            if labels.get(m.group(1)) != m.group(2):
                return False
        elif m := re.fullmatch(r'name eq "?([^"]*)"?', term):
            if not re.fullmatch(m.group(1), str(resource.get("name", ""))):
                return False
        elif m := re.fullmatch(r'operationType\s*=\s*"?([^"]*)"?', term):
            if resource.get("operationType") != m.group(1):
                return False
        else:
            raise _compute_error(400, "invalid", f"fake cannot parse filter term {term!r}")
    return True


@dataclass
class FakeGCP:
    """State and controls of the fake Compute + TPU + Billing APIs.

    Attributes:
        project: The one project it serves.
        url: Base URL (``http://127.0.0.1:PORT``) once serving.
        machine_types: Zone → machine types listed there.
        tpu_types: Zone → TPU accelerator type → topology listed there.
        quotas: Region → metric → ``[limit, usage]``.
        queued_resources: False makes the TPU queued-resource API answer 501.
        skus: What the Billing Catalog answers.
        calls: Every request received, in order.
        instances: ``(zone, name)`` → instance JSON.
        operations: Compute operation name → operation JSON.
        tpu_nodes: ``(zone, id)`` → TPU node JSON.
        tpu_queued: ``(zone, id)`` → queued resource JSON.
        policies: ``(region, name)`` → resource (placement) policy JSON.
    """

    project: str = "fake-project"
    url: str = ""
    machine_types: dict[str, set[str]] = field(default_factory=dict)
    tpu_types: dict[str, dict[str, str]] = field(default_factory=dict)
    quotas: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    queued_resources: bool = True
    skus: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    tpu_nodes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tpu_queued: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _faults: list[Fault] = field(default_factory=list)
    _request_ids: dict[str, str] = field(default_factory=dict)
    _tpu_ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    _effects: dict[str, Any] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        machine, tpus, regions = _default_listings()
        if not self.machine_types:
            self.machine_types = machine
        if not self.tpu_types:
            self.tpu_types = tpus
        for region in regions:
            quotas = self.quotas.setdefault(region, {})
            for metric in GPU_METRICS:
                quotas.setdefault(metric, [1024.0, 0.0])
                quotas.setdefault(f"PREEMPTIBLE_{metric}", [1024.0, 0.0])

    # -- controls -------------------------------------------------------------------------------

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

    def fail(self, api: str, **kwargs: Any) -> Fault:
        """Inject an error into the next call(s) of ``api`` (see :class:`Fault`)."""
        fault = Fault(api, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def set_quota(self, region: str, metric: str, limit: float, usage: float = 0.0) -> None:
        """Set one regional quota."""
        with self._lock:
            self.quotas.setdefault(region, {})[metric] = [float(limit), float(usage)]

    def calls_to(self, api: str) -> list[Call]:
        """Return the calls received for ``api``."""
        with self._lock:
            return [c for c in self.calls if c.api == api]

    def _handle_instances(self, handle_id: str) -> list[dict[str, Any]]:
        return [
            i
            for i in self.instances.values()
            if (i.get("labels") or {}).get("multicloud-handle") == handle_id
        ]

    def finish(self, handle_id: str, exit_code: int) -> None:
        """Make a launched workload end with ``exit_code``, as its startup script reports it.

        VMs get the ``multicloud-exit`` label and power off (TERMINATED); a TPU node gets the
        label and stays READY.
        """
        with self._lock:
            for instance in self._handle_instances(handle_id):
                instance["labels"]["multicloud-exit"] = str(exit_code)
                instance["status"] = "TERMINATED"
            for node in self.tpu_nodes.values():
                if (node.get("labels") or {}).get("multicloud-handle") == handle_id:
                    node["labels"]["multicloud-exit"] = str(exit_code)

    def preempt(self, handle_id: str) -> None:
        """Reclaim a spot workload: VMs stop with a ``compute.instances.preempted`` operation,
        a TPU node goes PREEMPTED and its queued resource SUSPENDED."""
        with self._lock:
            for instance in self._handle_instances(handle_id):
                instance["status"] = "TERMINATED"
                zone = instance["zone"].rsplit("/", 1)[-1]
                self._new_op(
                    zone,
                    "compute.instances.preempted",
                    instance["selfLink"],
                    status="DONE",
                )
            for (zone, node_id), node in self.tpu_nodes.items():
                if node_id == handle_id:
                    node["state"] = "PREEMPTED"
                    qr = self.tpu_queued.get((zone, node_id))
                    if qr is not None:
                        qr["state"] = {"state": "SUSPENDED"}

    def fail_queued(self, handle_id: str, code: int, message: str) -> None:
        """Move a queued resource to FAILED with a ``google.rpc.Status`` error."""
        with self._lock:
            for (_, qr_id), qr in self.tpu_queued.items():
                if qr_id == handle_id:
                    qr["state"] = {
                        "state": "FAILED",
                        "failedData": {"error": {"code": code, "message": message}},
                    }

    # -- request handling -------------------------------------------------------------------------

    def _take_fault(self, api: str) -> Fault | None:
        for fault in self._faults:
            if fault.api != api or fault.times <= 0:
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            fault.times -= 1
            return fault
        return None

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        """Answer one request (the HTTP layer calls this).

        Returns:
            ``(HTTP status, JSON payload)``.
        """
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        with self._lock:
            try:
                api, action = self._route(method, path)
                self.calls.append(Call(api, method, path, query, body))
                fault = self._take_fault(api)
                if fault is not None and not fault.in_operation:
                    if api.startswith("tpu."):
                        raise _rpc_error(fault.status, fault.message)
                    raise _compute_error(fault.status, fault.reason, fault.message)
                return 200, action(query, body, fault)
            except _HTTPError as exc:
                return exc.status, exc.payload

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        p = re.escape(self.project)
        compute = f"^/compute/v1/projects/{p}"
        tpu = f"^/v2/projects/{p}/locations/([^/]+)"
        table: list[tuple[str, str, str, Any]] = [
            ("GET", f"{compute}/zones/([^/]+)/instances$", "instances.list", self._list_instances),
            ("POST", f"{compute}/zones/([^/]+)/instances$", "instances.insert", self._insert),
            ("GET", f"{compute}/zones/([^/]+)/instances/([^/]+)$", "instances.get", self._get_i),
            (
                "DELETE",
                f"{compute}/zones/([^/]+)/instances/([^/]+)$",
                "instances.delete",
                self._delete,
            ),
            (
                "GET",
                f"{compute}/aggregated/instances$",
                "instances.aggregatedList",
                self._aggregated_instances,
            ),
            (
                "GET",
                f"{compute}/zones/([^/]+)/operations/([^/]+)$",
                "zoneOperations.get",
                self._op_get,
            ),
            (
                "POST",
                f"{compute}/zones/([^/]+)/operations/([^/]+)/wait$",
                "zoneOperations.wait",
                self._op_get,
            ),
            ("GET", f"{compute}/zones/([^/]+)/operations$", "zoneOperations.list", self._op_list),
            (
                "GET",
                f"{compute}/aggregated/machineTypes$",
                "machineTypes.aggregatedList",
                self._aggregated_machine_types,
            ),
            (
                "GET",
                f"{compute}/zones/([^/]+)/machineTypes$",
                "machineTypes.list",
                self._list_machine_types,
            ),
            ("GET", f"{compute}/regions/([^/]+)$", "regions.get", self._region),
            (
                "POST",
                f"{compute}/regions/([^/]+)/resourcePolicies$",
                "resourcePolicies.insert",
                self._policy_insert,
            ),
            (
                "GET",
                f"{compute}/regions/([^/]+)/resourcePolicies/([^/]+)$",
                "resourcePolicies.get",
                self._policy_get,
            ),
            (
                "DELETE",
                f"{compute}/regions/([^/]+)/resourcePolicies/([^/]+)$",
                "resourcePolicies.delete",
                self._policy_delete,
            ),
            (
                "GET",
                f"{compute}/regions/([^/]+)/operations/([^/]+)$",
                "regionOperations.get",
                self._op_get,
            ),
            (
                "POST",
                f"{compute}/regions/([^/]+)/operations/([^/]+)/wait$",
                "regionOperations.wait",
                self._op_get,
            ),
            ("GET", f"{tpu}/acceleratorTypes$", "tpu.acceleratorTypes.list", self._tpu_types_of),
            ("GET", f"{tpu}/nodes$", "tpu.nodes.list", self._tpu_list_nodes),
            ("POST", f"{tpu}/nodes$", "tpu.nodes.create", self._tpu_create_node),
            ("GET", f"{tpu}/nodes/([^/:]+)$", "tpu.nodes.get", self._tpu_get_node),
            ("DELETE", f"{tpu}/nodes/([^/:]+)$", "tpu.nodes.delete", self._tpu_delete_node),
            ("GET", f"{tpu}/queuedResources$", "tpu.queuedResources.list", self._tpu_list_qr),
            ("POST", f"{tpu}/queuedResources$", "tpu.queuedResources.create", self._tpu_create_qr),
            (
                "GET",
                f"{tpu}/queuedResources/([^/:]+)$",
                "tpu.queuedResources.get",
                self._tpu_get_qr,
            ),
            (
                "DELETE",
                f"{tpu}/queuedResources/([^/:]+)$",
                "tpu.queuedResources.delete",
                self._tpu_delete_qr,
            ),
            ("GET", f"{tpu}/operations/([^/:]+)$", "tpu.operations.get", self._tpu_op_get),
            ("GET", r"^/v1/services/([^/]+)/skus$", "billing.skus.list", self._skus),
        ]
        for verb, pattern, api, fn in table:
            m = re.match(pattern, path)
            if verb == method and m:
                args = m.groups()
                if api.startswith("tpu.queuedResources") and not self.queued_resources:
                    raise _rpc_error(501, "queued resources are not offered here")
                return api, lambda q, b, f, fn=fn, args=args: fn(*args, q, b, f)
        raise _compute_error(404, "notFound", f"fake has no route {method} {path}")

    # -- compute ----------------------------------------------------------------------------------

    def _zone_url(self, zone: str) -> str:
        return f"{self.url}/compute/v1/projects/{self.project}/zones/{zone}"

    def _region_url(self, region: str) -> str:
        return f"{self.url}/compute/v1/projects/{self.project}/regions/{region}"

    def _new_op(
        self,
        zone: str,
        kind: str,
        target: str,
        *,
        status: str = "PENDING",
        fault: Fault | None = None,
        effect: Any = None,
        regional: bool = False,
    ) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        where = self._region_url(zone) if regional else self._zone_url(zone)
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "region" if regional else "zone": where,
            "operationType": kind,
            "targetLink": target,
            "status": status,
            "progress": 100 if status == "DONE" else 0,
            "selfLink": f"{where}/operations/{name}",
        }
        self.operations[name] = op
        if fault is not None:
            self._effects[name] = ("fail", fault)
        elif effect is not None:
            self._effects[name] = ("do", effect)
        return op

    def _advance_op(self, op: dict[str, Any]) -> None:
        if op["status"] == "DONE":
            return
        op["status"] = _OP_STEPS[_OP_STEPS.index(op["status"]) + 1]
        if op["status"] != "DONE":
            return
        op["progress"] = 100
        kind, what = self._effects.pop(op["name"], (None, None))
        if kind == "fail":
            op["httpErrorStatusCode"] = what.status
            op["httpErrorMessage"] = _GRPC_STATUS.get(what.status, "ERROR")
            op["error"] = {"errors": [{"code": what.reason or "ERROR", "message": what.message}]}
        elif kind == "do":
            what()

    def _insert(self, zone: str, query: dict[str, str], body: Any, fault: Fault | None) -> Any:
        rid = query.get("requestId", "")
        if rid and rid in self._request_ids:
            # Like Compute: a repeated requestId returns the first operation, creates nothing.
            return self.operations[self._request_ids[rid]]
        name = body["name"]
        if (zone, name) in self.instances:
            raise _compute_error(409, "alreadyExists", f"The resource '{name}' already exists")
        if zone not in self.machine_types:
            raise _compute_error(400, "invalid", f"Invalid value for field 'zone': '{zone}'")
        for policy in body.get("resourcePolicies") or ():
            if (zone.rsplit("-", 1)[0], policy.rsplit("/", 1)[-1]) not in self.policies:
                raise _compute_error(400, "invalid", f"resource policy {policy} not found")
        link = f"{self._zone_url(zone)}/instances/{name}"
        if fault is None:
            self.instances[(zone, name)] = {
                **body,
                "id": str(next(self._ids)),
                "zone": self._zone_url(zone),
                "status": "PROVISIONING",
                "selfLink": link,
                "labelFingerprint": "42WmSpB8rSM=",
                "labels": dict(body.get("labels") or {}),
            }
        op = self._new_op(zone, "insert", link, fault=fault)
        if rid:
            self._request_ids[rid] = op["name"]
        return op

    def _read_instance(self, instance: dict[str, Any]) -> dict[str, Any]:
        # Each read moves a booting VM one step towards RUNNING.
        if instance["status"] in _INSTANCE_STEPS[:-1]:
            instance["status"] = _INSTANCE_STEPS[_INSTANCE_STEPS.index(instance["status"]) + 1]
        return instance

    def _get_i(self, zone: str, name: str, query: dict[str, str], body: Any, f: Any) -> Any:
        instance = self.instances.get((zone, name))
        if instance is None:
            raise _compute_error(404, "notFound", f"The resource '{name}' was not found")
        return self._read_instance(instance)

    def _list_instances(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        items = [
            self._read_instance(i)
            for (z, _), i in sorted(self.instances.items())
            if z == zone and _match_filter(query.get("filter", ""), i)
        ]
        return {"kind": "compute#instanceList", "items": items}

    def _aggregated_instances(self, query: dict[str, str], body: Any, f: Any) -> Any:
        items: dict[str, Any] = {}
        for (zone, _), instance in sorted(self.instances.items()):
            if _match_filter(query.get("filter", ""), instance):
                scoped = items.setdefault(f"zones/{zone}", {"instances": []})
                scoped["instances"].append(instance)
        return {"kind": "compute#instanceAggregatedList", "items": items}

    def _delete(self, zone: str, name: str, query: dict[str, str], body: Any, f: Any) -> Any:
        rid = query.get("requestId", "")
        if rid and rid in self._request_ids:
            return self.operations[self._request_ids[rid]]
        instance = self.instances.get((zone, name))
        if instance is None:
            raise _compute_error(404, "notFound", f"The resource '{name}' was not found")
        instance["status"] = "STOPPING"
        op = self._new_op(
            zone,
            "delete",
            instance["selfLink"],
            fault=f,
            effect=lambda: self.instances.pop((zone, name), None),
        )
        if rid:
            self._request_ids[rid] = op["name"]
        return op

    def _op_get(self, zone: str, name: str, query: dict[str, str], body: Any, f: Any) -> Any:
        op = self.operations.get(name)
        if op is None:
            raise _compute_error(404, "notFound", f"operation {name} not found")
        self._advance_op(op)
        return op

    def _policy_insert(self, region: str, query: dict[str, str], body: Any, f: Any) -> Any:
        rid = query.get("requestId", "")
        if rid and rid in self._request_ids:
            return self.operations[self._request_ids[rid]]
        name = body["name"]
        if (region, name) in self.policies:
            raise _compute_error(409, "alreadyExists", f"The resource '{name}' already exists")
        link = f"{self._region_url(region)}/resourcePolicies/{name}"

        def create() -> None:
            self.policies[(region, name)] = {**body, "selfLink": link, "region": region}

        op = self._new_op(region, "insert", link, fault=f, effect=create, regional=True)
        if rid:
            self._request_ids[rid] = op["name"]
        return op

    def _policy_get(self, region: str, name: str, query: dict[str, str], b: Any, f: Any) -> Any:
        policy = self.policies.get((region, name))
        if policy is None:
            raise _compute_error(404, "notFound", f"The resource '{name}' was not found")
        return policy

    def _policy_delete(self, region: str, name: str, query: dict[str, str], b: Any, f: Any) -> Any:
        policy = self.policies.get((region, name))
        if policy is None:
            raise _compute_error(404, "notFound", f"The resource '{name}' was not found")
        users = [
            i["name"]
            for i in self.instances.values()
            if any(p.endswith(f"/resourcePolicies/{name}") for p in i.get("resourcePolicies", ()))
        ]
        if users:
            raise _compute_error(
                400, "resourceInUseByAnotherResource", f"{name} is used by {users[0]}"
            )
        return self._new_op(
            region,
            "delete",
            policy["selfLink"],
            fault=f,
            effect=lambda: self.policies.pop((region, name), None),
            regional=True,
        )

    def _op_list(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        items = [
            op
            for op in self.operations.values()
            if op.get("zone", "").endswith(f"/zones/{zone}")
            and _match_filter(query.get("filter", ""), op)
        ]
        return {"kind": "compute#operationList", "items": items}

    def _machine_type(self, zone: str, name: str) -> dict[str, Any]:
        cpus, memory = MACHINE_SHAPES.get(name, (12, 87040))
        return {
            "kind": "compute#machineType",
            "name": name,
            "zone": zone,
            "guestCpus": cpus,
            "memoryMb": memory,
        }

    def _aggregated_machine_types(self, query: dict[str, str], body: Any, f: Any) -> Any:
        items: dict[str, Any] = {}
        for zone, names in sorted(self.machine_types.items()):
            listed = [
                self._machine_type(zone, n)
                for n in sorted(names)
                if _match_filter(query.get("filter", ""), {"name": n})
            ]
            if listed:
                items[f"zones/{zone}"] = {"machineTypes": listed}
        return {"kind": "compute#machineTypeAggregatedList", "items": items}

    def _list_machine_types(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        names = sorted(self.machine_types.get(zone, ()))
        return {"items": [self._machine_type(zone, n) for n in names]}

    def _region(self, region: str, query: dict[str, str], body: Any, f: Any) -> Any:
        if region not in self.quotas:
            raise _compute_error(404, "notFound", f"The resource 'regions/{region}' was not found")
        quotas = [
            {"metric": metric, "limit": limit, "usage": usage}
            for metric, (limit, usage) in sorted(self.quotas[region].items())
        ]
        return {"kind": "compute#region", "name": region, "status": "UP", "quotas": quotas}

    # -- TPU --------------------------------------------------------------------------------------

    def _tpu_types_of(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        if zone not in self.tpu_types:
            raise _rpc_error(404, f"Location {zone} is not found or access is unauthorized.")
        parent = f"projects/{self.project}/locations/{zone}"
        out = []
        for name, topology in sorted(self.tpu_types[zone].items()):
            kind = TPU_TOPOLOGIES.get(name, ("", ""))[0]
            item: dict[str, Any] = {"name": f"{parent}/acceleratorTypes/{name}", "type": name}
            if kind and topology:
                item["acceleratorConfigs"] = [{"type": kind, "topology": topology}]
            out.append(item)
        return {"acceleratorTypes": out}

    def _tpu_op(self, zone: str, fault: Fault | None, effect: Any) -> dict[str, Any]:
        name = f"projects/{self.project}/locations/{zone}/operations/operation-{next(self._ids)}"
        op: dict[str, Any] = {"name": name, "done": False}
        self._tpu_ops[name] = {"op": op, "polls": 0, "fault": fault, "effect": effect}
        return op

    def _tpu_op_get(self, zone: str, op_id: str, query: dict[str, str], body: Any, f: Any) -> Any:
        name = f"projects/{self.project}/locations/{zone}/operations/{op_id}"
        entry = self._tpu_ops.get(name)
        if entry is None:
            raise _rpc_error(404, f"operation {name} not found")
        op = entry["op"]
        if not op["done"]:
            entry["polls"] += 1
            if entry["polls"] >= 2:
                op["done"] = True
                fault = entry["fault"]
                if fault is not None:
                    op["error"] = {"code": fault.grpc_code or 8, "message": fault.message}
                elif entry["effect"] is not None:
                    entry["effect"]()
        return op

    def _node_json(self, zone: str, node_id: str, node: dict[str, Any], qr: str) -> dict[str, Any]:
        return {
            **node,
            "name": f"projects/{self.project}/locations/{zone}/nodes/{node_id}",
            "state": "CREATING",
            "labels": dict(node.get("labels") or {}),
            "metadata": dict(node.get("metadata") or {}),
            **({"queuedResource": qr} if qr else {}),
        }

    def _tpu_read_node(self, node: dict[str, Any]) -> dict[str, Any]:
        if node["state"] == "CREATING":
            node["state"] = "READY"
        return node

    def _tpu_list_nodes(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        nodes = [
            self._tpu_read_node(n) for (z, _), n in sorted(self.tpu_nodes.items()) if z == zone
        ]
        return {"nodes": nodes}

    def _tpu_get_node(self, zone: str, node_id: str, query: dict[str, str], b: Any, f: Any) -> Any:
        node = self.tpu_nodes.get((zone, node_id))
        if node is None:
            raise _rpc_error(404, f"Resource 'nodes/{node_id}' was not found")
        return self._tpu_read_node(node)

    def _tpu_create_node(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        node_id = query.get("nodeId", "")
        if (zone, node_id) in self.tpu_nodes:
            raise _rpc_error(409, f"node {node_id} already exists")
        if body.get("acceleratorType", "") and body["acceleratorType"] not in self.tpu_types.get(
            zone, {}
        ):
            raise _rpc_error(400, f"accelerator type {body['acceleratorType']} not in {zone}")

        def create() -> None:
            self.tpu_nodes[(zone, node_id)] = self._node_json(zone, node_id, body, "")

        return self._tpu_op(zone, f, create)

    def _tpu_delete_node(self, zone: str, node_id: str, q: dict[str, str], b: Any, f: Any) -> Any:
        if (zone, node_id) not in self.tpu_nodes:
            raise _rpc_error(404, f"Resource 'nodes/{node_id}' was not found")
        self.tpu_nodes[(zone, node_id)]["state"] = "DELETING"
        return self._tpu_op(zone, f, lambda: self.tpu_nodes.pop((zone, node_id), None))

    def _qr_read(self, zone: str, qr_id: str, qr: dict[str, Any]) -> dict[str, Any]:
        state = qr["state"]["state"]
        if state in _QR_STEPS[:-1]:
            state = _QR_STEPS[_QR_STEPS.index(state) + 1]
            qr["state"] = {"state": state}
            if state == "ACTIVE":
                spec = qr["tpu"]["nodeSpec"][0]
                node = self._node_json(zone, qr_id, spec["node"], qr["name"])
                if "spot" in qr:
                    node["schedulingConfig"] = {"spot": True}
                node["state"] = "READY"
                self.tpu_nodes[(zone, qr_id)] = node
        return qr

    def _tpu_list_qr(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        items = [
            self._qr_read(z, i, qr) for (z, i), qr in sorted(self.tpu_queued.items()) if z == zone
        ]
        return {"queuedResources": items}

    def _tpu_get_qr(self, zone: str, qr_id: str, query: dict[str, str], b: Any, f: Any) -> Any:
        qr = self.tpu_queued.get((zone, qr_id))
        if qr is None:
            raise _rpc_error(404, f"Resource 'queuedResources/{qr_id}' was not found")
        return qr

    def _tpu_create_qr(self, zone: str, query: dict[str, str], body: Any, f: Any) -> Any:
        rid = query.get("requestId", "")
        if rid and rid in self._request_ids:
            return self._tpu_ops[self._request_ids[rid]]["op"]
        qr_id = query.get("queuedResourceId", "")
        if (zone, qr_id) in self.tpu_queued:
            raise _rpc_error(409, f"queued resource {qr_id} already exists")
        if zone not in self.tpu_types:
            raise _rpc_error(400, f"TPUs are not offered in {zone}")
        name = f"projects/{self.project}/locations/{zone}/queuedResources/{qr_id}"

        def create() -> None:
            self.tpu_queued[(zone, qr_id)] = {**body, "name": name, "state": {"state": "CREATING"}}

        op = self._tpu_op(zone, f, create)
        if rid:
            self._request_ids[rid] = op["name"]
        return op

    def _tpu_delete_qr(self, zone: str, qr_id: str, query: dict[str, str], b: Any, f: Any) -> Any:
        qr = self.tpu_queued.get((zone, qr_id))
        if qr is None:
            raise _rpc_error(404, f"Resource 'queuedResources/{qr_id}' was not found")
        qr["state"] = {"state": "DELETING"}

        def delete() -> None:
            self.tpu_queued.pop((zone, qr_id), None)
            if query.get("force") in ("true", "True", "1"):
                self.tpu_nodes.pop((zone, qr_id), None)

        return self._tpu_op(zone, f, delete)

    # -- billing ----------------------------------------------------------------------------------

    def _skus(self, service: str, query: dict[str, str], body: Any, f: Any) -> Any:
        return {"skus": list(self.skus)}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGCP

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, payload = self.fake.handle(self.command, self.path, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@contextlib.contextmanager
def serve(fake: FakeGCP | None = None) -> Iterator[FakeGCP]:
    """Serve a fake on 127.0.0.1 (a free port) for the duration of the block.

    Args:
        fake: State to serve (a fresh default one when None).

    Yields:
        The fake, with ``url`` and ``options`` set.
    """
    fake = fake or FakeGCP()
    handler = type("FakeGCPHandler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval keeps shutdown (once per test) quick.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-gcp", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def block_external_network() -> Iterator[list[str]]:
    """Refuse every socket connection that is not to 127.0.0.1 / ::1, and record it.

    Proves that nothing (a poller, an auth refresh, a metadata probe) reaches a real Google
    endpoint while the block runs.

    Yields:
        The list of refused addresses, for the test to assert empty.
    """
    refused: list[str] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
            refused.append(str(host))
            raise ConnectionRefusedError(f"external network blocked in tests: {host}")
        real_connect(sock, address)

    socket.socket.connect = guarded  # type: ignore[method-assign,assignment]
    try:
        yield refused
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
