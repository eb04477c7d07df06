"""A fake Azure Resource Manager on 127.0.0.1, for tests of the real SDK clients.

It speaks the REST shapes ``azure-mgmt-compute`` uses, so the adapter's real
``ComputeManagementClient`` (pointed at it through the ``base_url`` option) exercises its real
serialisation, paging and long-running-operation polling:

- ``virtualMachines``: PUT (201 + ``Azure-AsyncOperation``, polled to ``Succeeded`` or
  ``Failed``), GET, DELETE (202 + ``Azure-AsyncOperation``; 204 when absent), list per resource
  group (``$expand=instanceView``) and ``list_all`` over the subscription;
- ``skus`` (resource SKUs with ``Location`` / ``Zone`` restrictions), ``usages`` (vCPU quota,
  which created VMs consume), ``proximityPlacementGroups``, ``availabilitySets``;
- the Retail Prices API at ``/retail/prices`` (OData ``$filter``, ``NextPageLink`` paging).

The VM side exists too, so the custom-data runner can be run on this machine against it: the
managed-identity token endpoint of IMDS (``/metadata/identity/oauth2/token``), Key Vault
secrets (``/vault/<vault>/secrets/<name>``), "Tags - Update At Scope" and ``deallocate`` on a VM.

Controls: :meth:`FakeArm.inject` (an HTTP error with an ARM code, nested details, or a failure
inside the long-running operation), :meth:`FakeArm.evict` (spot eviction),
:meth:`FakeArm.finish` (the workload ends with an exit code, as the VM's runner reports it),
:meth:`FakeArm.restrict`, :meth:`FakeArm.set_quota`, :meth:`FakeArm.set_price`, and a request
log; ``POST /_fake/finish/<vm>?code=N`` and ``POST /_fake/evict/<vm>`` do the same over HTTP for
another process, and ``serve(auto_finish_s=...)`` ends running VMs by themselves. Use it
through :func:`serve`; ``fake.options`` are fleet-entry options pointing the adapter
at it (plain JSON, usable from another process on the same machine).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from multicloud.catalog import load_catalog

__all__ = ["FAMILIES", "FakeArm", "Fault", "Request", "family_of", "serve", "vcpus_of"]

FAMILIES: Mapping[str, str] = {
    "Standard_ND96isr_H100_v5": "standardNDSH100v5Family",
    "Standard_ND96isr_H200_v5": "standardNDSH200v5Family",
    "Standard_ND96amsr_A100_v4": "standardNDAMSv4_A100Family",
    "Standard_ND96asr_v4": "standardNDASv4_A100Family",
    "Standard_NC24ads_A100_v4": "StandardNCADSA100v4Family",
    "Standard_NC48ads_A100_v4": "StandardNCADSA100v4Family",
    "Standard_NC96ads_A100_v4": "StandardNCADSA100v4Family",
    "Standard_NC40ads_H100_v5": "standardNCadsH100v5Family",
    "Standard_NC80adis_H100_v5": "standardNCadsH100v5Family",
}
"""Quota families of the main GPU sizes, as Azure names them."""

_OPERATIONS = (
    "vm_put",
    "vm_get",
    "vm_delete",
    "vm_list",
    "vm_list_all",
    "skus",
    "usages",
    "ppg_put",
    "ppg_delete",
    "avset_put",
    "avset_delete",
    "prices",
)


def family_of(size: str) -> str:
    """Return the quota family of a VM size (a plausible name for sizes not in FAMILIES)."""
    known = FAMILIES.get(size)
    if known:
        return known
    series = re.sub(r"\d+", "", size.removeprefix("Standard_").split("_")[0])
    return f"standard{series}Family"


def vcpus_of(size: str) -> int:
    """Return the vCPUs of a VM size from its name (``Standard_ND96isr_H100_v5`` → 96)."""
    match = re.match(r"Standard_[A-Za-z]+?(\d+)", size)
    return int(match.group(1)) if match else 8


@dataclass
class Fault:
    """An error the fake answers instead of doing an operation.

    Attributes:
        op: Operation it applies to (``vm_put``, ``vm_get``, ``vm_delete``, ``vm_list``,
            ``vm_list_all``, ``skus``, ``usages``, ``ppg_put``, ``ppg_delete``, ``avset_put``,
            ``avset_delete``, ``prices``).
        status: HTTP status of the answer (ignored when ``in_operation``).
        code: ARM error code.
        message: Error message.
        details: Nested ARM errors (``{"code", "message", "details"?}`` dicts).
        in_operation: Accept the request, then fail its long-running operation.
        times: How many requests it answers before it is used up.
    """

    op: str
    status: int = 400
    code: str = "BadRequest"
    message: str = "injected"
    details: list[dict[str, Any]] = field(default_factory=list)
    in_operation: bool = False
    times: int = 1

    def error(self) -> dict[str, Any]:
        """Return the ARM error object."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Request:
    """One request the fake answered.

    Attributes:
        method: HTTP method.
        op: Operation name (see :class:`Fault`), or ``operation`` for LRO polls.
        path: URL path.
        query: Query parameters.
    """

    method: str
    op: str
    path: str
    query: Mapping[str, str]


@dataclass
class _Operation:
    polls_left: int
    error: dict[str, Any] | None
    kind: str
    key: tuple[str, str]


class FakeArm:
    """State and controls of one fake Resource Manager.

    Args:
        subscription_id: The only subscription it knows.
        resource_group: The resource group the default options name.
        lro_polls: Polls a long-running operation answers ``InProgress`` before it ends.
        prices_page_size: Items per Retail Prices page (small, so paging is exercised).
        auto_finish_s: When set, a VM that has run this many seconds ends with exit code 0
            (for tests that cannot call :meth:`finish`, e.g. a scheduler in another process).
    """

    def __init__(
        self,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "rg-multicloud",
        lro_polls: int = 1,
        prices_page_size: int = 3,
        auto_finish_s: float | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.lro_polls = lro_polls
        self.prices_page_size = prices_page_size
        self.base_url = ""
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._vms: dict[tuple[str, str], dict[str, Any]] = {}
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._ppgs: dict[tuple[str, str], dict[str, Any]] = {}
        self._avsets: dict[tuple[str, str], dict[str, Any]] = {}
        self._ops: dict[str, _Operation] = {}
        self._faults: list[Fault] = []
        self._secrets: dict[tuple[str, str], str] = {}
        self.auto_finish_s = auto_finish_s
        self._ids = itertools.count(1)
        self.evicted: list[str] = []
        catalog = load_catalog()
        self._skus: dict[str, dict[str, dict[str, Any]]] = {}
        self._usage: dict[str, dict[str, list[int]]] = {}
        self._prices: list[dict[str, Any]] = []
        for row in catalog.rows:
            if row.provider != "azure":
                continue
            self._skus.setdefault(row.region, {})[row.instance_type] = {
                "resourceType": "virtualMachines",
                "name": row.instance_type,
                "tier": "Standard",
                "family": family_of(row.instance_type),
                "locations": [row.region],
                "locationInfo": [{"location": row.region, "zones": ["1", "2", "3"]}],
                "capabilities": [{"name": "vCPUs", "value": str(vcpus_of(row.instance_type))}],
                "restrictions": [],
            }
            usage = self._usage.setdefault(
                row.region, {"cores": [0, 10000], "lowPriorityCores": [0, 2000]}
            )
            usage.setdefault(family_of(row.instance_type), [0, 2000])

    # -- options -------------------------------------------------------------------------------

    @property
    def options(self) -> dict[str, Any]:
        """Fleet-entry options that point the Azure adapter at this fake."""
        sub, rg = self.subscription_id, self.resource_group
        return {
            "subscription_id": sub,
            "resource_group": rg,
            "base_url": self.base_url,
            "credential": "static",
            "subnet_id": (
                f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/"
                "virtualNetworks/mc-vnet/subnets/default"
            ),
            "retail_prices_url": f"{self.base_url}/retail/prices",
            "polling_interval": 0.01,
            "retries": 0,
            "launch_wait_s": 30.0,
            "terminate_wait_s": 30.0,
        }

    # -- controls ------------------------------------------------------------------------------

    def inject(
        self,
        op: str,
        *,
        status: int = 400,
        code: str = "BadRequest",
        message: str = "injected",
        details: Sequence[Mapping[str, Any]] = (),
        in_operation: bool = False,
        times: int = 1,
    ) -> Fault:
        """Make the next ``times`` requests of ``op`` fail.

        Args:
            op: Operation (see :class:`Fault`).
            status: HTTP status.
            code: ARM error code.
            message: Message.
            details: Nested errors.
            in_operation: Fail inside the long-running operation instead.
            times: How many requests.

        Returns:
            The fault.

        Raises:
            ValueError: If ``op`` is unknown.
        """
        if op not in _OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; known: {', '.join(_OPERATIONS)}")
        fault = Fault(op, status, code, message, [dict(d) for d in details], in_operation, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def restrict(
        self,
        region: str,
        size: str,
        *,
        kind: str = "Location",
        zones: Sequence[str] = (),
        reason: str = "NotAvailableForSubscription",
    ) -> None:
        """Add a restriction to a resource SKU, as Azure reports it for this subscription.

        Args:
            region: Region.
            size: VM size.
            kind: ``Location`` or ``Zone``.
            zones: Restricted zones (for ``Zone``).
            reason: ``NotAvailableForSubscription`` or ``QuotaId``.
        """
        with self._lock:
            sku = self._skus[region][size]
            info: dict[str, Any] = {"locations": [region]}
            if kind == "Zone":
                info["zones"] = list(zones)
            sku["restrictions"].append(
                {"type": kind, "values": [region], "restrictionInfo": info, "reasonCode": reason}
            )

    def remove_sku(self, region: str, size: str) -> None:
        """Stop listing a VM size in a region."""
        with self._lock:
            self._skus.get(region, {}).pop(size, None)

    def set_quota(self, region: str, name: str, limit: int, current: int | None = None) -> None:
        """Set a usage limit (and optionally its current value) of a region.

        Args:
            region: Region.
            name: Usage name, e.g. ``standardNDSH100v5Family``, ``cores``, ``lowPriorityCores``.
            limit: vCPU limit.
            current: vCPUs in use (unchanged when None).
        """
        with self._lock:
            entry = self._usage.setdefault(region, {}).setdefault(name, [0, limit])
            entry[1] = limit
            if current is not None:
                entry[0] = current

    def usage(self, region: str, name: str) -> tuple[int, int]:
        """Return ``(current, limit)`` of a usage."""
        with self._lock:
            current, limit = self._usage[region][name]
            return current, limit

    def set_price(
        self, region: str, size: str, price: float, spot_price: float | None = None
    ) -> None:
        """Publish Retail Prices meters (Linux pay-as-you-go, and Spot when given).

        Args:
            region: Region.
            size: VM size.
            price: Hourly price.
            spot_price: Hourly spot price.
        """
        short = size.removeprefix("Standard_").replace("_", " ")
        base = {
            "currencyCode": "USD",
            "armRegionName": region,
            "armSkuName": size,
            "serviceName": "Virtual Machines",
            "unitOfMeasure": "1 Hour",
            "type": "Consumption",
            "productName": f"Virtual Machines {short.split()[0]} Series",
        }
        with self._lock:
            self._prices.append({**base, "retailPrice": price, "skuName": short})
            # Meters the client must ignore: Windows and Low Priority.
            self._prices.append(
                {
                    **base,
                    "retailPrice": price * 1.5,
                    "skuName": short,
                    "productName": base["productName"] + " Windows",
                }
            )
            self._prices.append(
                {**base, "retailPrice": price / 10, "skuName": f"{short} Low Priority"}
            )
            if spot_price is not None:
                self._prices.append({**base, "retailPrice": spot_price, "skuName": f"{short} Spot"})

    def finish(self, name: str, code: int) -> None:
        """End a VM's workload: tag its exit code and deallocate it, as its runner does.

        Args:
            name: VM name (``<gang>-<rank>``).
            code: Exit code.
        """
        with self._lock:
            vm = self._find(name)
            vm["tags"]["multicloud:exit"] = str(code)
            vm["_power"] = "deallocated"

    def evict(self, name: str) -> None:
        """Evict a spot VM: deleted with eviction policy Delete, else deallocated.

        Args:
            name: VM name.

        Raises:
            ValueError: If the VM is not a spot VM.
        """
        with self._lock:
            vm = self._find(name)
            props = vm["properties"]
            if props.get("priority") != "Spot":
                raise ValueError(f"{name} is not a spot VM")
            self.evicted.append(name)
            if props.get("evictionPolicy") == "Delete":
                key = next(k for k, v in self._vms.items() if v is vm)
                self._release(vm)
                del self._vms[key]
            else:
                vm["_power"] = "deallocated"

    def set_secret(self, vault: str, name: str, value: str) -> None:
        """Store a Key Vault secret (``name`` as Key Vault spells it, with dashes)."""
        with self._lock:
            self._secrets[(vault, name)] = value

    @property
    def imds_endpoint(self) -> str:
        """The fake instance metadata service (managed identity tokens)."""
        return f"{self.base_url}/metadata"

    @property
    def vault_url(self) -> str:
        """The fake Key Vault URL template (``{name}`` is the vault name)."""
        return f"{self.base_url}/vault/{{name}}"

    def _auto_finish(self) -> None:
        if self.auto_finish_s is None:
            return
        now = time.monotonic()
        with self._lock:
            for vm in self._vms.values():
                since = vm.get("_running_since")
                if since is not None and now - since >= self.auto_finish_s:
                    vm["tags"].setdefault("multicloud:exit", "0")
                    vm["_power"] = "deallocated"
                    vm["_running_since"] = None

    def vm(self, name: str) -> dict[str, Any]:
        """Return a VM as GET answers it."""
        with self._lock:
            return _public(self._find(name))

    def vm_body(self, name: str) -> dict[str, Any]:
        """Return the body of the PUT that created a VM (custom data included)."""
        with self._lock:
            for (_, vm_name), body in self._bodies.items():
                if vm_name == name.lower():
                    return json.loads(json.dumps(body))  # type: ignore[no-any-return]
        raise KeyError(name)

    def vm_names(self) -> list[str]:
        """Return the names of every VM, sorted."""
        with self._lock:
            return sorted(str(v["name"]) for v in self._vms.values())

    def placement_groups(self) -> list[str]:
        """Return the names of every proximity placement group, sorted."""
        with self._lock:
            return sorted(str(p["name"]) for p in self._ppgs.values())

    def availability_sets(self) -> list[str]:
        """Return the names of every availability set, sorted."""
        with self._lock:
            return sorted(str(a["name"]) for a in self._avsets.values())

    def count(self, method: str, op: str) -> int:
        """Return how many requests of one kind were answered."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.op == op)

    def complete_operations(self) -> None:
        """End every pending long-running operation now, as if it had been polled to the end."""
        with self._lock:
            pending = list(self._ops)
        for op_id in pending:
            for _ in range(self.lro_polls + 1):
                self._poll(op_id)

    def clear_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    # -- internals -------------------------------------------------------------------------------

    def _find(self, name: str) -> dict[str, Any]:
        for (_, vm_name), vm in self._vms.items():
            if vm_name == name.lower():
                return vm
        raise KeyError(name)

    def _take_fault(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op == op and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _charge(self, vm: dict[str, Any], sign: int) -> None:
        size = vm["properties"]["hardwareProfile"]["vmSize"]
        usage = self._usage.setdefault(vm["location"], {})
        cores = vcpus_of(size) * sign
        names = (
            ["lowPriorityCores"]
            if vm["properties"].get("priority") == "Spot"
            else [family_of(size), "cores"]
        )
        for name in names:
            usage.setdefault(name, [0, 0])[0] += cores

    def _release(self, vm: dict[str, Any]) -> None:
        if vm["properties"].get("provisioningState") == "Succeeded":
            self._charge(vm, -1)

    def _new_operation(self, kind: str, key: tuple[str, str], error: dict[str, Any] | None) -> str:
        op_id = f"op-{next(self._ids)}"
        self._ops[op_id] = _Operation(self.lro_polls, error, kind, key)
        return op_id

    def _poll(self, op_id: str) -> dict[str, Any] | None:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return None
            if op.polls_left > 0:
                op.polls_left -= 1
                return {"name": op_id, "status": "InProgress"}
            vm = self._vms.get(op.key)
            if op.error is not None:
                if vm is not None and op.kind == "create":
                    vm["properties"]["provisioningState"] = "Failed"
                    vm["_failure"] = op.error
                return {"name": op_id, "status": "Failed", "error": op.error}
            if vm is not None and op.kind == "create":
                if vm["properties"]["provisioningState"] != "Succeeded":
                    vm["properties"]["provisioningState"] = "Succeeded"
                    vm["_power"] = "running"
                    vm["_running_since"] = time.monotonic()
                    self._charge(vm, +1)
            elif vm is not None and op.kind == "delete":
                self._release(vm)
                del self._vms[op.key]
            return {"name": op_id, "status": "Succeeded"}


def _public(vm: Mapping[str, Any], *, instance_view: bool = False) -> dict[str, Any]:
    """Return a stored VM as ARM shows it (no write-only fields, optional instance view)."""
    out = {k: v for k, v in vm.items() if not k.startswith("_")}
    props = dict(out["properties"])
    os_profile = dict(props.get("osProfile") or {})
    os_profile.pop("customData", None)
    os_profile.pop("adminPassword", None)
    props["osProfile"] = os_profile
    if instance_view:
        state = props.get("provisioningState", "Creating")
        statuses: list[dict[str, Any]] = []
        failure = vm.get("_failure")
        if state == "Failed" and failure:
            statuses.append(
                {
                    "code": f"ProvisioningState/failed/{failure['code']}",
                    "level": "Error",
                    "message": failure.get("message", ""),
                }
            )
        else:
            statuses.append({"code": f"ProvisioningState/{str(state).lower()}", "level": "Info"})
        if vm.get("_power"):
            statuses.append({"code": f"PowerState/{vm['_power']}", "level": "Info"})
        props["instanceView"] = {"statuses": statuses}
    out["properties"] = props
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]


_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern + "$", re.IGNORECASE))
    for name, pattern in (
        ("skus", _SUB + r"/providers/microsoft\.compute/skus"),
        ("usages", _SUB + r"/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/usages"),
        (
            "operation",
            _SUB + r"/providers/microsoft\.compute/locations/[^/]+/operations/(?P<op>[^/]+)",
        ),
        ("vm_list_all", _SUB + r"/providers/microsoft\.compute/virtualmachines"),
        ("vm_list", _RG + r"/virtualmachines"),
        ("vm", _RG + r"/virtualmachines/(?P<name>[^/]+)"),
        ("ppg", _RG + r"/proximityplacementgroups/(?P<name>[^/]+)"),
        ("avset", _RG + r"/availabilitysets/(?P<name>[^/]+)"),
        ("prices", r"/retail/prices"),
        (
            "vm_tags",
            _RG + r"/virtualmachines/(?P<name>[^/]+)/providers/microsoft\.resources/tags/default",
        ),
        ("vm_deallocate", _RG + r"/virtualmachines/(?P<name>[^/]+)/deallocate"),
        ("imds_token", r"/metadata/identity/oauth2/token"),
        ("vault_secret", r"/vault/(?P<vault>[^/]+)/secrets/(?P<secret>[^/]+)"),
        ("control", r"/_fake/(?P<action>finish|evict)/(?P<name>[^/]+)"),
    )
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this each answer waits ~40 ms on
    # delayed ACKs.
    disable_nagle_algorithm = True
    # Idle keep-alive connections close on their own, so the server always stops.
    timeout = 5
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # -- plumbing ----------------------------------------------------------------------------

    def _send(
        self, status: int, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", "fake")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": {"code": code, "message": message}})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        for name, pattern in _ROUTES:
            match = pattern.match(parsed.path)
            if match is None:
                continue
            op = name
            if name == "vm":
                op = {"PUT": "vm_put", "GET": "vm_get", "DELETE": "vm_delete"}.get(method, "vm")
            elif name in ("ppg", "avset"):
                verbs = {"PUT": f"{name}_put", "DELETE": f"{name}_delete"}
                op = verbs.get(method, f"{name}_get")
            with fake._lock:
                fake.requests.append(Request(method, op, parsed.path, query))
            if name == "imds_token" and self.headers.get("Metadata") != "true":
                self._error(400, "BadRequest", "IMDS needs the Metadata: true header")
                return
            if name not in ("prices", "imds_token", "control"):
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
                    self._error(401, "AuthenticationFailed", "no bearer token")
                    return
                sub = match.groupdict().get("sub")
                if sub is not None and sub != fake.subscription_id:
                    self._error(404, "SubscriptionNotFound", "unknown subscription")
                    return
            fake._auto_finish()
            fault = fake._take_fault(op)
            if fault is not None and not fault.in_operation:
                # Read the unused body, or it is taken for the next request on the connection.
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self._send(fault.status, {"error": fault.error()})
                return
            getattr(self, f"_do_{name}")(method, match.groupdict(), query, fault)
            return
        self._error(404, "NotFound", f"no route for {method} {parsed.path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- routes ------------------------------------------------------------------------------

    def _operation_url(self, location: str, op_id: str) -> str:
        fake = self.server.fake
        return (
            f"{fake.base_url}/subscriptions/{fake.subscription_id}/providers/Microsoft.Compute/"
            f"locations/{location}/operations/{op_id}?api-version=2024-07-01"
        )

    def _do_skus(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        wanted = re.search(r"location\s+eq\s+'([^']+)'", query.get("$filter", ""))
        with fake._lock:
            regions = [wanted.group(1)] if wanted else sorted(fake._skus)
            items = [sku for r in regions for sku in fake._skus.get(r, {}).values()]
            self._send(200, {"value": json.loads(json.dumps(items))})

    def _do_usages(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        with fake._lock:
            usage = fake._usage.get(groups["loc"], {})
            items = [
                {
                    "unit": "Count",
                    "currentValue": current,
                    "limit": limit,
                    "name": {"value": name, "localizedValue": name},
                }
                for name, (current, limit) in sorted(usage.items())
            ]
        self._send(200, {"value": items})

    def _do_operation(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        answer = self.server.fake._poll(groups["op"])
        if answer is None:
            self._error(404, "NotFound", "no such operation")
        else:
            self._send(200, answer)

    def _do_vm_list_all(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        with fake._lock:
            items = [_public(vm) for vm in fake._vms.values()]
        self._send(200, {"value": items})

    def _do_vm_list(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        expand = query.get("$expand", "").lower() == "instanceview"
        rg = groups["rg"].lower()
        with fake._lock:
            items = [_public(vm, instance_view=expand) for k, vm in fake._vms.items() if k[0] == rg]
        self._send(200, {"value": items})

    def _do_vm(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        rg, name = groups["rg"], groups["name"]
        key = (rg.lower(), name.lower())
        with fake._lock:
            existing = fake._vms.get(key)
            if method == "GET":
                if existing is None:
                    self._error(404, "ResourceNotFound", f"VM {name} not found")
                else:
                    expand = query.get("$expand", "").lower() == "instanceview"
                    self._send(200, _public(existing, instance_view=expand))
                return
            if method == "DELETE":
                if existing is None:
                    self._send(204)
                    return
                existing["properties"]["provisioningState"] = "Deleting"
                error = fault.error() if fault is not None else None
                op_id = fake._new_operation("delete", key, error)
                self._send(
                    202,
                    None,
                    {"Azure-AsyncOperation": self._operation_url(existing["location"], op_id)},
                )
                return
            if method != "PUT":
                self._error(405, "MethodNotAllowed", method)
                return
            body = self._body()
            if not isinstance(body, dict) or "location" not in body:
                self._error(400, "InvalidRequestContent", "body must have a location")
                return
            fake._bodies[key] = json.loads(json.dumps(body))
            vm_id = (
                f"/subscriptions/{fake.subscription_id}/resourceGroups/{rg}/providers/"
                f"Microsoft.Compute/virtualMachines/{name}"
            )
            props = dict(body.get("properties") or {})
            props["provisioningState"] = "Creating" if existing is None else "Updating"
            props["vmId"] = f"00000000-0000-0000-0000-{next(fake._ids):012d}"
            vm = {
                "id": vm_id,
                "name": name,
                "type": "Microsoft.Compute/virtualMachines",
                "location": body["location"],
                "tags": dict(body.get("tags") or {}),
                "properties": props,
            }
            if body.get("zones"):
                vm["zones"] = list(body["zones"])
            if body.get("identity"):
                vm["identity"] = body["identity"]
            if existing is not None:
                vm["_power"] = existing.get("_power")
                if existing["properties"].get("provisioningState") == "Succeeded":
                    props["provisioningState"] = "Succeeded"
            fake._vms[key] = vm
            error = fault.error() if fault is not None else None
            op_id = fake._new_operation("create", key, error)
            self._send(
                200 if existing is not None else 201,
                _public(vm),
                {"Azure-AsyncOperation": self._operation_url(body["location"], op_id)},
            )

    def _do_ppg(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        self._group_resource(method, "proximityPlacementGroups", groups)

    def _do_avset(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        self._group_resource(method, "availabilitySets", groups)

    def _group_resource(self, method: str, kind: str, groups: Mapping[str, str]) -> None:
        # Placement groups and availability sets behave alike: a synchronous PUT, and a DELETE
        # refused while a VM (or, for a placement group, an availability set) refers to them.
        fake = self.server.fake
        store = fake._ppgs if kind == "proximityPlacementGroups" else fake._avsets
        ref = "proximityPlacementGroup" if store is fake._ppgs else "availabilitySet"
        rg, name = groups["rg"], groups["name"]
        key = (rg.lower(), name.lower())
        with fake._lock:
            if method == "PUT":
                body = self._body() or {}
                item = {
                    "id": (
                        f"/subscriptions/{fake.subscription_id}/resourceGroups/{rg}/providers/"
                        f"Microsoft.Compute/{kind}/{name}"
                    ),
                    "name": name,
                    "type": f"Microsoft.Compute/{kind}",
                    "location": body.get("location", ""),
                    "tags": body.get("tags") or {},
                    "properties": body.get("properties") or {},
                }
                for extra in ("zones", "sku"):
                    if body.get(extra):
                        item[extra] = body[extra]
                # ARM answers 201 for a new placement group but 200 for any availability set
                # (and the SDK accepts only those).
                status = 200 if key in store or store is fake._avsets else 201
                store[key] = item
                self._send(status, item)
            elif method == "DELETE":
                own_id = str(store.get(key, {}).get("id", "")).lower()
                users = [vm["properties"] for vm in fake._vms.values()]
                users += [a["properties"] for a in fake._avsets.values()]
                in_use = any(str((u.get(ref) or {}).get("id", "")).lower() == own_id for u in users)
                if key not in store:
                    self._send(204)
                elif in_use:
                    self._error(409, "OperationNotAllowed", f"{name} is still in use")
                else:
                    del store[key]
                    self._send(200)
            elif key in store:
                self._send(200, store[key])
            else:
                self._error(404, "ResourceNotFound", f"{name} not found")

    def _do_vm_tags(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        # ARM "Tags - Update At Scope", as the VM's runner calls it on its own VM.
        fake = self.server.fake
        body = self._body() or {}
        tags = (body.get("properties") or {}).get("tags") or {}
        with fake._lock:
            vm = fake._vms.get((groups["rg"].lower(), groups["name"].lower()))
            if vm is None:
                self._error(404, "ResourceNotFound", f"VM {groups['name']} not found")
                return
            if body.get("operation") == "Replace":
                vm["tags"] = {}
            vm["tags"].update({str(k): str(v) for k, v in tags.items()})
            self._send(200, {"properties": {"tags": vm["tags"]}})

    def _do_vm_deallocate(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        with fake._lock:
            vm = fake._vms.get((groups["rg"].lower(), groups["name"].lower()))
            if vm is None:
                self._error(404, "ResourceNotFound", f"VM {groups['name']} not found")
                return
            vm["_power"] = "deallocated"
        self._send(200, {})

    def _do_imds_token(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        self._send(
            200,
            {
                "access_token": "fake-imds-token",
                "token_type": "Bearer",
                "resource": query.get("resource", ""),
            },
        )

    def _do_vault_secret(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        with fake._lock:
            value = fake._secrets.get((groups["vault"], groups["secret"]))
        if value is None:
            self._error(404, "SecretNotFound", f"secret {groups['secret']} not found")
        else:
            self._send(200, {"value": value, "id": self.path})

    def _do_control(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        # The controls over HTTP, for a process that only has fake.options (e.g. a scheduler
        # started by an integration test).
        fake = self.server.fake
        try:
            if groups["action"] == "finish":
                fake.finish(groups["name"], int(query.get("code", "0")))
            else:
                fake.evict(groups["name"])
        except (KeyError, ValueError) as exc:
            self._error(404, "NotFound", str(exc))
            return
        self._send(200, {})

    def _do_prices(
        self, method: str, groups: Mapping[str, str], query: Mapping[str, str], fault: Fault | None
    ) -> None:
        fake = self.server.fake
        text = query.get("$filter", "")
        region = re.search(r"armRegionName eq '([^']+)'", text)
        skus = set(re.findall(r"armSkuName eq '([^']+)'", text))
        with fake._lock:
            items = [
                p
                for p in fake._prices
                if (region is None or p["armRegionName"] == region.group(1))
                and (not skus or p["armSkuName"] in skus)
            ]
        skip = int(query.get("$skip", "0"))
        page = items[skip : skip + fake.prices_page_size]
        next_link = None
        if skip + fake.prices_page_size < len(items):
            rest = dict(query)
            rest["$skip"] = str(skip + fake.prices_page_size)
            next_link = f"{fake.base_url}/retail/prices?{urllib.parse.urlencode(rest)}"
        self._send(
            200,
            {
                "BillingCurrency": "USD",
                "Items": page,
                "NextPageLink": next_link,
                "Count": len(page),
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeArm


@contextmanager
def serve(
    *,
    subscription_id: str = "00000000-0000-0000-0000-000000000000",
    resource_group: str = "rg-multicloud",
    lro_polls: int = 1,
    auto_finish_s: float | None = None,
) -> Iterator[FakeArm]:
    """Run a fake Azure Resource Manager on 127.0.0.1 for the duration of the block.

    Args:
        subscription_id: Its subscription.
        resource_group: The resource group its options name.
        lro_polls: ``InProgress`` polls before each long-running operation ends.
        auto_finish_s: Seconds after which a running VM ends with exit code 0 (None: never).

    Yields:
        The fake, with ``options`` for the adapter and its controls.
    """
    fake = FakeArm(
        subscription_id=subscription_id,
        resource_group=resource_group,
        lro_polls=lro_polls,
        auto_finish_s=auto_finish_s,
    )
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    host, port = server.server_address[:2]
    fake.base_url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
