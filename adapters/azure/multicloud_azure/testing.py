"""A fake Azure Resource Manager on 127.0.0.1, and the VM side of Azure for node programs.

The adapter's real ``ComputeManagementClient`` reaches it through ``base_url`` (its real
serialisation, paging and long-running-operation polling): VMs (PUT with
``Azure-AsyncOperation`` polled to ``Succeeded`` or ``Failed``, GET, DELETE, list per resource
group with ``$expand=instanceView``, ``list_all``), resource SKUs with restrictions, vCPU
usages that VMs consume, proximity placement groups, availability sets, "Tags - Update At
Scope", ``deallocate``, and the Retail Prices API.

It refuses what Azure refuses, for the rules multicloud depends on (each cites its source):

* a PUT to an existing VM name is an update, not a second VM (ARM's PUT semantics: the
  deterministic name is the idempotency key), and ``customData`` cannot change on it
  (azure-mgmt-compute ``OSProfile.custom_data``: "cannot be updated after the VM is created")
  — 409 ``PropertyChangeNotAllowed``; decoded custom data over 65535 bytes is refused (same);
* a resource holds at most 50 tags ("Tags - Update At Scope", learn.microsoft.com);
* ``userAssignedIdentities`` keys are ``Microsoft.ManagedIdentity/userAssignedIdentities`` ids
  (azure-mgmt-compute ``VirtualMachineIdentity``);
* a VM without a managed identity gets no token from IMDS (400, "Identity not found"), so it
  can neither tag nor deallocate itself: its node can only power off, which leaves it
  allocated and billed; IMDS answers only requests with ``Metadata: true`` (IMDS docs);
* Spot eviction (:meth:`FakeArm.preempt`) posts a ``Preempt`` scheduled event naming the VM,
  then applies the VM's eviction policy (``Delete``: the VM is gone); only Spot VMs are evicted;
* a placement group or availability set a VM still refers to cannot be deleted (409).

Tests speak the shared vocabulary (``fail_next``, ``preempt``, ``finish``, ``launches``). A
node program runs here with :meth:`FakeArm.node_answers` (stand-ins answering as IMDS, Key
Vault and Azure DNS answer that VM) and :meth:`FakeArm.replay` (its ARM calls, exactly as it
made them, applied to the fake).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multicloud.catalog import load_catalog
from multicloud.testing.fakecloud import Call, FakeCloud, serve_json
from multicloud.testing.nodes import Answer
from multicloud_azure.errors import CAPACITY_CODES
from multicloud_azure.node import CUSTOM_DATA_LIMIT, EXIT_TAG, IMDS
from multicloud_azure.options import IDENTITY_ID

__all__ = ["FAMILIES", "FakeArm", "Request", "family_of", "serve", "vcpus_of"]

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

# How Azure shows an error code when no status is given: its usual HTTP status, or None for
# a failure inside the long-running operation (where Azure reports allocation failures).
_SHOWN_AS: dict[str, int | None] = {code: None for code in CAPACITY_CODES}
for _status, _codes in {
    409: "SkuNotAvailable QuotaExceeded OperationNotAllowed Conflict",
    403: "RequestDisallowedByPolicy AuthorizationFailed LinkedAuthorizationFailed",
    401: "AuthenticationFailed InvalidAuthenticationToken",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}.items():
    _SHOWN_AS.update(dict.fromkeys(_codes.split(), _status))


def family_of(size: str) -> str:
    """Return the quota family of a VM size (a plausible name for sizes not in FAMILIES)."""
    series = re.sub(r"\d+", "", size.removeprefix("Standard_").split("_")[0])
    return FAMILIES.get(size, f"standard{series}Family")


def vcpus_of(size: str) -> int:
    """Return the vCPUs of a VM size from its name (``Standard_ND96isr_H100_v5`` → 96)."""
    match = re.match(r"Standard_[A-Za-z]+?(\d+)", size)
    return int(match.group(1)) if match else 8


@dataclass(frozen=True)
class Request:
    """One request the fake answered: method, operation name, path and query."""

    method: str
    op: str
    path: str
    query: Mapping[str, str]


@dataclass(frozen=True)
class _Fault:
    code: str
    status: int | None
    message: str
    details: tuple[dict[str, Any], ...] = ()

    def error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        return {**out, "details": list(self.details)} if self.details else out


@dataclass
class _Operation:
    polls_left: int
    kind: str
    key: tuple[str, str]
    error: dict[str, Any] | None = None


@dataclass
class _Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _err(status: int, code: str, message: str) -> _Answer:
    return _Answer(status, {"error": {"code": code, "message": message}})


class FakeArm(FakeCloud):
    """State and controls of one fake Resource Manager (use it through :func:`serve`).

    Args:
        subscription_id: The only subscription it knows.
        resource_group: The resource group its options name.
        lro_polls: Polls a long-running operation answers ``InProgress`` before it ends.
        prices_page_size: Items per Retail Prices page (small, so paging is exercised).
    """

    def __init__(
        self,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "rg-multicloud",
        lro_polls: int = 1,
        prices_page_size: int = 3,
    ) -> None:
        super().__init__()
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.lro_polls = lro_polls
        self.prices_page_size = prices_page_size
        self.base_url = ""
        self.identity_id = (
            f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/mc-nodes"
        )
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._vms: dict[tuple[str, str], dict[str, Any]] = {}
        self._groups: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            k: {} for k in ("proximityplacementgroups", "availabilitysets")
        }
        self._ops: dict[str, _Operation] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._gone: dict[str, dict[str, Any]] = {}
        self._secrets: dict[tuple[str, str], str] = {}
        self._tokens: dict[str, tuple[str, str]] = {}
        self._skus: dict[str, dict[str, dict[str, Any]]] = {}
        self._usage: dict[str, dict[str, list[int]]] = {}
        self._prices: list[dict[str, Any]] = []
        for row in load_catalog().rows:
            if row.provider != "azure":
                continue
            capabilities = [{"name": "vCPUs", "value": str(vcpus_of(row.instance_type))}]
            self._skus.setdefault(row.region, {})[row.instance_type] = {
                "resourceType": "virtualMachines",
                "name": row.instance_type,
                "tier": "Standard",
                "family": family_of(row.instance_type),
                "locations": [row.region],
                "locationInfo": [{"location": row.region, "zones": ["1", "2", "3"]}],
                "capabilities": capabilities,
                "restrictions": [],
            }
            usage = self._usage.setdefault(
                row.region, {"cores": [0, 10000], "lowPriorityCores": [0, 2000]}
            )
            usage.setdefault(family_of(row.instance_type), [0, 2000])

    @property
    def options(self) -> dict[str, Any]:
        """Fleet-entry options that point the Azure adapter at this fake (plain JSON)."""
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
            "identity_id": self.identity_id,
            "retail_prices_url": f"{self.base_url}/retail/prices",
            "polling_interval": 0.01,
            "retries": 0,
            "launch_wait_s": 30.0,
            "terminate_wait_s": 30.0,
        }

    # -- the shared vocabulary ---------------------------------------------------------------

    def fail_next(
        self,
        operation: str,
        error: str,
        *,
        times: int = 1,
        status: int | None = None,
        in_operation: bool | None = None,
        message: str = "injected",
        details: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Answer the next ``times`` calls of an operation with an ARM error.

        Args:
            operation: ARM operation (``virtualMachines.createOrUpdate``, ``.get``,
                ``.delete``, ``.list``, ``.listAll``, ``.deallocate``, ``resourceSkus.list``,
                ``usage.list``, ``proximityPlacementGroups.createOrUpdate``/``.delete``,
                ``availabilitySets.createOrUpdate``/``.delete``, ``tags.updateAtScope``,
                ``retailPrices.list``).
            error: ARM error code.
            times: How many calls.
            status: HTTP status (default: how Azure usually shows the code).
            in_operation: Accept the request, then fail its long-running operation (default:
                for the allocation failures Azure reports there).
            message: The message.
            details: Nested errors (``{"code", "message"}``).
        """
        shown = _SHOWN_AS.get(error, 400)
        if in_operation is None:
            in_operation = status is None and shown is None
        code = None if in_operation else (status or shown or 409)
        self.faults.add(operation, _Fault(error, code, message, tuple(map(dict, details))), times)

    def preempt(self, workload: str) -> None:
        """Evict the Spot VMs of a gang (or one VM): a ``Preempt`` scheduled event, then the
        eviction policy (``Delete``: the VM and its usage are gone; ``Deallocate``: stopped).

        Raises:
            ValueError: If a VM is not a Spot VM (Azure evicts only those).
        """
        with self._lock:
            for key, vm in self._of(workload):
                props = vm["properties"]
                if props.get("priority") != "Spot":
                    raise ValueError(f"{vm['name']} is not a Spot VM")
                self._events.setdefault(vm["name"], []).append(
                    {
                        "EventId": f"evt-{next(self._ids)}",
                        "EventType": "Preempt",
                        "ResourceType": "VirtualMachine",
                        "Resources": [vm["name"]],
                        "EventStatus": "Scheduled",
                        "NotBefore": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
                        "EventSource": "Platform",
                        "DurationInSeconds": -1,
                    }
                )
                self._release(vm)
                if props.get("evictionPolicy") == "Delete":
                    self._gone[vm["name"]] = self._vms.pop(key)
                else:
                    vm["_power"] = "deallocated"

    def finish(self, workload: str, exit_code: int) -> None:
        """End a gang's (or one VM's) command as its node program reports it.

        A VM with a managed identity tags itself ``multicloud:exit`` and deallocates; one
        without can do neither (IMDS issues it no token) and only powers off — stopped,
        still allocated, no exit code.
        """
        with self._lock:
            for _, vm in self._of(workload):
                if self._has_identity(vm):
                    vm["tags"][EXIT_TAG] = str(exit_code)
                    self._release(vm)
                    vm["_power"] = "deallocated"
                else:
                    vm["_power"] = "stopped"

    # -- other controls and views ------------------------------------------------------------

    def restrict(
        self,
        region: str,
        size: str,
        *,
        kind: str = "Location",
        zones: Sequence[str] = (),
        reason: str = "NotAvailableForSubscription",
    ) -> None:
        """Add a ``Location`` (or ``Zone``, for ``zones``) restriction to a resource SKU."""
        info: dict[str, Any] = {"locations": [region], **({"zones": list(zones)} if zones else {})}
        with self._lock:
            self._skus[region][size]["restrictions"].append(
                {"type": kind, "values": [region], "restrictionInfo": info, "reasonCode": reason}
            )

    def remove_sku(self, region: str, size: str) -> None:
        """Stop listing a VM size in a region."""
        with self._lock:
            self._skus.get(region, {}).pop(size, None)

    def set_quota(self, region: str, name: str, limit: int, current: int | None = None) -> None:
        """Set a usage limit (``cores``, ``lowPriorityCores``, a family), and its current value."""
        with self._lock:
            entry = self._usage.setdefault(region, {}).setdefault(name, [0, limit])
            entry[1] = limit
            entry[0] = entry[0] if current is None else current

    def usage(self, region: str, name: str) -> tuple[int, int]:
        """Return ``(current, limit)`` of a usage."""
        with self._lock:
            current, limit = self._usage[region][name]
            return current, limit

    def set_price(
        self, region: str, size: str, price: float, spot_price: float | None = None
    ) -> None:
        """Publish Retail Prices meters: Linux pay-as-you-go (and Spot), plus the Windows and
        Low Priority meters a client must ignore."""
        short = size.removeprefix("Standard_").replace("_", " ")
        product = f"Virtual Machines {short.split()[0]} Series"
        base = {
            "currencyCode": "USD",
            "armRegionName": region,
            "armSkuName": size,
            "serviceName": "Virtual Machines",
            "unitOfMeasure": "1 Hour",
            "type": "Consumption",
            "productName": product,
        }
        meters = [
            (price, short, product),
            (price * 1.5, short, f"{product} Windows"),
            (price / 10, f"{short} Low Priority", product),
        ]
        if spot_price is not None:
            meters.append((spot_price, f"{short} Spot", product))
        with self._lock:
            self._prices += [
                {**base, "retailPrice": p, "skuName": s, "productName": n} for p, s, n in meters
            ]

    def set_secret(self, vault: str, name: str, value: str) -> None:
        """Store a Key Vault secret (``name`` as Key Vault spells it, with dashes)."""
        with self._lock:
            self._secrets[(vault, name)] = value

    def vm(self, name: str) -> dict[str, Any]:
        """Return a VM as GET answers it (with its instance view)."""
        with self._lock:
            return _public(self._find(name), view=True)

    def vm_body(self, name: str) -> dict[str, Any]:
        """Return the body of the PUT that created a VM (custom data included)."""
        with self._lock:
            body: dict[str, Any] = json.loads(json.dumps(self._find(name)["_body"]))
            return body

    def custom_data(self, name: str) -> str:
        """Return a VM's node program, decoded, exactly as its PUT sent it."""
        data = self.vm_body(name)["properties"]["osProfile"]["customData"]
        return base64.b64decode(data).decode()

    def vm_names(self) -> list[str]:
        """Return the names of every VM, sorted."""
        with self._lock:
            return sorted(str(v["name"]) for v in self._vms.values())

    def placement_groups(self) -> list[str]:
        """Return the names of every proximity placement group, sorted."""
        return self._names("proximityplacementgroups")

    def availability_sets(self) -> list[str]:
        """Return the names of every availability set, sorted."""
        return self._names("availabilitysets")

    def count(self, method: str, op: str) -> int:
        """Return how many requests of one method and operation were answered."""
        with self._lock:
            return sum(1 for r in self.requests if (r.method, r.op) == (method, op))

    def clear_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    def complete_operations(self) -> None:
        """End every pending long-running operation now, as if polled to the end."""
        for op_id in list(self._ops):
            for _ in range(self.lro_polls + 1):
                self._poll(op_id)

    # -- the VM side -------------------------------------------------------------------------

    def node_answers(self, name: str, *, address: str = "127.0.0.1") -> dict[str, list[Answer]]:
        """Return stand-ins answering as Azure answers the node program of VM ``name``.

        IMDS (only with ``Metadata: true``): tokens for the VM's identity (none without one),
        its private IP (``address``) and its scheduled events; Key Vault: the secrets set
        with :meth:`set_secret`, for a Key Vault token; Azure DNS (``getent hosts``): every
        VM name resolves to ``address``; ARM (the report and the halt) answers success —
        :meth:`replay` applies those calls to the fake afterwards.

        Args:
            name: The VM.
            address: What every VM's private address is, here.

        Returns:
            Stand-in rules by command.
        """
        with self._lock:
            vm = self._find(name)
            posted = list(self._events.get(name, []))
            events = {"DocumentIncarnation": len(posted), "Events": posted}
            names = [v["name"] for v in self._vms.values()] + list(self._gone)
            secrets = dict(self._secrets)
        md = r"^-sf -H Metadata: true " + re.escape(IMDS)
        curl: list[Answer] = []
        for audience, resource in (("arm", re.escape(self.base_url)), ("vault", "https://vault")):
            token = self._issue(vm, audience) if self._has_identity(vm) else None
            doc = json.dumps({"access_token": token, "token_type": "Bearer"})
            pattern = f"{md}/identity/oauth2/token.*&resource={resource}"
            curl.append(Answer(pattern, doc) if token else Answer(pattern, exit=22))
        curl += [
            Answer(f"{md}/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress", address),
            Answer(f"{md}/scheduledevents", json.dumps(events)),
            Answer(r"-X (PATCH|POST) .*" + re.escape(self.base_url)),
        ]
        vault_token = self._issue(vm, "vault") if self._has_identity(vm) else "-"
        for (vault, secret), value in secrets.items():
            curl.append(
                Answer(
                    f"Bearer {vault_token}.* https://{vault}.vault.azure.net/secrets/{secret}\\?",
                    json.dumps({"value": value, "id": f"https://{vault}.vault.azure.net/{secret}"}),
                )
            )
        curl.append(Answer(r"vault\.azure\.net/secrets/", exit=22))  # SecretNotFound (404)
        getent = [Answer(f"^hosts {re.escape(n)}$", f"{address}  {n}\n") for n in names]
        return {"curl": curl, "getent": [*getent, Answer("^hosts ", exit=2)]}

    def replay(self, calls: Sequence[Sequence[str]]) -> list[int]:
        """Send a node's ARM calls (its ``curl`` argument lists) to the fake, as it made them.

        Args:
            calls: ``curl`` argument lists; those not to this fake's ARM are skipped.

        Returns:
            The HTTP status of each call sent.
        """
        statuses = []
        for argv in calls:
            url = argv[-1]
            if not url.startswith(self.base_url):
                continue
            opts = dict(itertools.pairwise(argv))
            headers = dict(
                h.split(": ", 1) for i, h in enumerate(argv) if i and argv[i - 1] == "-H"
            )
            data = opts.get("-d", "").encode() or None
            request = urllib.request.Request(url, data, headers, method=opts.get("-X", "GET"))
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        return statuses

    # -- internals ---------------------------------------------------------------------------

    def _of(self, workload: str) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """The VMs of a gang (``<gang>-<rank>``), or the one VM of that name."""
        w = workload.lower()
        found = [(k, v) for k, v in self._vms.items() if k[1] == w or k[1].startswith(w + "-")]
        if not found:
            raise KeyError(workload)
        return sorted(found)

    def _find(self, name: str) -> dict[str, Any]:
        """A VM by name, live or evicted (its node ran during the eviction notice)."""
        return self._gone.get(name) or next(v for _, v in self._of(name))

    def _names(self, kind: str) -> list[str]:
        with self._lock:
            return sorted(str(g["name"]) for g in self._groups[kind].values())

    @staticmethod
    def _has_identity(vm: Mapping[str, Any]) -> bool:
        return bool((vm.get("identity") or {}).get("userAssignedIdentities"))

    def _issue(self, vm: Mapping[str, Any], audience: str) -> str:
        token = f"imds-{audience}-{vm['name']}"
        self._tokens[token] = (str(vm["name"]), audience)
        return token

    def _charge(self, vm: dict[str, Any], sign: int) -> None:
        props = vm["properties"]
        size = props["hardwareProfile"]["vmSize"]
        spot = props.get("priority") == "Spot"
        usage = self._usage.setdefault(vm["location"], {})
        for name in ["lowPriorityCores"] if spot else [family_of(size), "cores"]:
            usage.setdefault(name, [0, 0])[0] += vcpus_of(size) * sign
        vm["_charged"] = sign > 0

    def _release(self, vm: dict[str, Any]) -> None:
        if vm.get("_charged"):
            self._charge(vm, -1)

    def _operation(self, kind: str, key: tuple[str, str], error: dict[str, Any] | None) -> str:
        op_id = f"op-{next(self._ids)}"
        self._ops[op_id] = _Operation(self.lro_polls, kind, key, error)
        return (
            f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/"
            f"locations/any/operations/{op_id}?api-version=2024-07-01"
        )

    def _poll(self, op_id: str) -> dict[str, Any] | None:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return None
            if op.polls_left > 0:
                op.polls_left -= 1
                return {"name": op_id, "status": "InProgress"}
            vm = self._vms.get(op.key)
            if vm is not None and op.error is not None:
                vm["properties"]["provisioningState"] = "Failed"
                vm["_failure"] = op.error
            elif vm is not None and op.kind == "create" and not vm.get("_charged"):
                vm["properties"]["provisioningState"] = "Succeeded"
                vm["_power"] = "running"
                self._charge(vm, +1)
            elif vm is not None and op.kind == "delete":
                self._release(vm)
                del self._vms[op.key]
            if op.error is not None:
                return {"name": op_id, "status": "Failed", "error": op.error}
            return {"name": op_id, "status": "Succeeded"}

    # -- the HTTP side -----------------------------------------------------------------------

    def answer(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Any,
    ) -> _Answer:
        """Answer one request (the server's handler)."""
        for pattern, ops in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            groups = match.groupdict()
            op = ops.get(method, "")
            op = op.replace("{kind}", _KIND_OP.get(groups.get("kind", "").lower(), ""))
            with self._lock:
                self.requests.append(Request(method, op, path, dict(query)))
            if not op:
                return _err(405, "MethodNotAllowed", f"{method} {path}")
            if groups.get("sub") not in (None, self.subscription_id):
                return _err(404, "SubscriptionNotFound", "unknown subscription")
            auth = headers.get("Authorization", "").removeprefix("Bearer ")
            if op != "retailPrices.list" and not self._valid_token(auth):
                return _err(401, "InvalidAuthenticationToken", "no valid bearer token")
            fault = self.faults.take(op)
            if fault is not None and fault.status is not None:
                return _Answer(fault.status, {"error": fault.error()})
            name = "retail" if op == "retailPrices.list" else op.split(".")[1]
            handler: Callable[..., _Answer] = getattr(self, f"_{name}")
            return handler(op, groups, query, body, fault)
        return _err(404, "NotFound", f"no route for {method} {path}")

    def _valid_token(self, token: str) -> bool:
        # The scheduler's credential, or a token IMDS issued for ARM to a VM with an identity.
        with self._lock:
            issued = self._tokens.get(token, ("", ""))[1] == "arm"
        return issued if token.startswith("imds-") else bool(token)

    def _list(self, op: str, g: Mapping[str, str], q: Mapping[str, str], *_: Any) -> _Answer:
        with self._lock:
            if op == "resourceSkus.list":
                wanted = re.search(r"location\s+eq\s+'([^']+)'", q.get("$filter", ""))
                regions = [wanted.group(1)] if wanted else sorted(self._skus)
                items = [s for r in regions for s in self._skus.get(r, {}).values()]
            elif op == "usage.list":
                usage = sorted(self._usage.get(g["loc"], {}).items())
                items = [
                    {"unit": "Count", "currentValue": c, "limit": lim, "name": {"value": n}}
                    for n, (c, lim) in usage
                ]
            else:
                rg = g.get("rg", "").lower()
                view = q.get("$expand", "").lower() == "instanceview"
                items = [_public(v, view=view) for k, v in self._vms.items() if rg in ("", k[0])]
            return _Answer(200, {"value": json.loads(json.dumps(items))})

    _listAll = _list

    def _get(self, op: str, g: Mapping[str, str], q: Mapping[str, str], *_: Any) -> _Answer:
        with self._lock:
            if op == "operations.get":
                answer = self._poll(g["op"])
                return _Answer(200, answer) if answer else _err(404, "NotFound", "no operation")
            store = self._groups.get(g.get("kind", "").lower(), self._vms)
            item = store.get((g["rg"].lower(), g["name"].lower()))
            if item is None:
                return _err(404, "ResourceNotFound", f"{g['name']} not found")
            return _Answer(200, _public(item, view=q.get("$expand", "").lower() == "instanceview"))

    def _createOrUpdate(
        self, op: str, g: Mapping[str, str], q: Mapping[str, str], body: Any, fault: Any
    ) -> _Answer:
        if not isinstance(body, dict) or "location" not in body:
            return _err(400, "InvalidRequestContent", "the body needs a location")
        if len(body.get("tags") or {}) > 50:
            return _err(400, "InvalidParameter", "a resource holds at most 50 tags")
        key = (g["rg"].lower(), g["name"].lower())
        rid = f"/subscriptions/{self.subscription_id}/resourceGroups/{g['rg']}/providers/"
        if "kind" in g:  # a placement group or availability set: a synchronous PUT
            store = self._groups[g["kind"].lower()]
            kind = _KIND_OP[g["kind"].lower()]
            item = {**body, "name": g["name"], "id": f"{rid}Microsoft.Compute/{kind}/{g['name']}"}
            with self._lock:
                # ARM answers 201 for a new placement group, 200 for any availability set.
                status = 200 if key in store or kind == "availabilitySets" else 201
                store[key] = item
            return _Answer(status, item)
        props = body.get("properties") or {}
        data = (props.get("osProfile") or {}).get("customData", "")
        if len(base64.b64decode(data)) > CUSTOM_DATA_LIMIT:
            return _err(400, "InvalidParameter", "customData is over 65535 bytes")
        identities = (body.get("identity") or {}).get("userAssignedIdentities") or {}
        if any(not IDENTITY_ID.match(i) for i in identities):
            return _err(400, "InvalidParameter", "userAssignedIdentities keys must be ids")
        with self._lock:
            existing = self._vms.get(key)
            if existing is not None:
                old = (existing["_body"]["properties"].get("osProfile") or {}).get("customData")
                if old != data:
                    return _err(
                        409,
                        "PropertyChangeNotAllowed",
                        "Changing property 'customData' is not allowed.",
                    )
                existing["tags"] = dict(body.get("tags") or {})
                return _Answer(200, _public(existing))
            vm = {
                **{k: v for k, v in body.items() if k in ("location", "tags", "zones", "identity")},
                "id": f"{rid}Microsoft.Compute/virtualMachines/{g['name']}",
                "name": g["name"],
                "type": "Microsoft.Compute/virtualMachines",
                "properties": {**props, "provisioningState": "Creating"},
                "_body": json.loads(json.dumps(body)),
            }
            vm["tags"] = dict(vm.get("tags") or {})
            self._vms[key] = vm
            self.launches[g["name"]] += 1
            url = self._operation("create", key, fault.error() if fault else None)
        return _Answer(201, _public(vm), {"Azure-AsyncOperation": url})

    def _delete(
        self, op: str, g: Mapping[str, str], q: Mapping[str, str], body: Any, fault: Any
    ) -> _Answer:
        key = (g["rg"].lower(), g["name"].lower())
        with self._lock:
            if "kind" in g:
                store = self._groups[g["kind"].lower()]
                own = str(store.get(key, {}).get("id", "")).lower()
                users = [*self._vms.values(), *self._groups["availabilitysets"].values()]
                refs = {
                    str(((u.get("properties") or {}).get(r) or {}).get("id", "")).lower()
                    for u in users
                    for r in ("proximityPlacementGroup", "availabilitySet")
                }
                if key in store and own in refs:
                    return _err(409, "OperationNotAllowed", f"{g['name']} is still in use")
                return _Answer(200 if store.pop(key, None) else 204)
            vm = self._vms.get(key)
            if vm is None:
                return _Answer(204)
            vm["properties"]["provisioningState"] = "Deleting"
            url = self._operation("delete", key, fault.error() if fault else None)
        return _Answer(202, None, {"Azure-AsyncOperation": url})

    def _deallocate(self, op: str, g: Mapping[str, str], *_: Any) -> _Answer:
        with self._lock:
            vm = self._vms.get((g["rg"].lower(), g["name"].lower()))
            if vm is None:
                return _err(404, "ResourceNotFound", f"VM {g['name']} not found")
            self._release(vm)
            vm["_power"] = "deallocated"
            url = self._operation("deallocate", (g["rg"].lower(), g["name"].lower()), None)
        return _Answer(202, None, {"Azure-AsyncOperation": url})

    def _updateAtScope(
        self, op: str, g: Mapping[str, str], q: Mapping[str, str], body: Any, *_: Any
    ) -> _Answer:
        body = body if isinstance(body, dict) else {}
        tags = {
            str(k): str(v) for k, v in ((body.get("properties") or {}).get("tags") or {}).items()
        }
        if body.get("operation") not in ("Merge", "Replace", "Delete"):
            return _err(400, "InvalidRequestContent", "operation must be Merge, Replace or Delete")
        with self._lock:
            vm = self._vms.get((g["rg"].lower(), g["name"].lower()))
            if vm is None:
                return _err(404, "ResourceNotFound", f"VM {g['name']} not found")
            merged = {**vm["tags"], **tags} if body["operation"] == "Merge" else tags
            if body["operation"] == "Delete":
                merged = {k: v for k, v in vm["tags"].items() if k not in tags}
            if len(merged) > 50:
                return _err(400, "InvalidParameter", "a resource holds at most 50 tags")
            vm["tags"] = merged
            return _Answer(200, {"properties": {"tags": merged}})

    def _retail(self, op: str, g: Mapping[str, str], q: Mapping[str, str], *_: Any) -> _Answer:
        text = q.get("$filter", "")
        region = re.search(r"armRegionName eq '([^']+)'", text)
        skus = set(re.findall(r"armSkuName eq '([^']+)'", text))
        with self._lock:
            items = [
                p
                for p in self._prices
                if (region is None or p["armRegionName"] == region.group(1))
                and (not skus or p["armSkuName"] in skus)
            ]
        skip = int(q.get("$skip", "0"))
        page, rest = items[skip : skip + self.prices_page_size], dict(q)
        rest["$skip"] = str(skip + self.prices_page_size)
        more = skip + self.prices_page_size < len(items)
        link = f"{self.base_url}/retail/prices?{urllib.parse.urlencode(rest)}" if more else None
        return _Answer(200, {"BillingCurrency": "USD", "Items": page, "NextPageLink": link})


def _public(item: Mapping[str, Any], *, view: bool = False) -> dict[str, Any]:
    """A stored resource as ARM shows it: no private fields, no write-only secrets."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    props = dict(out.get("properties") or {})
    if "osProfile" in props:
        props["osProfile"] = {
            k: v for k, v in props["osProfile"].items() if k not in ("customData", "adminPassword")
        }
    if view:
        state = str(props.get("provisioningState", "Creating"))
        failure = item.get("_failure")
        statuses = [
            {"code": f"ProvisioningState/failed/{failure['code']}", "message": failure["message"]}
            if state == "Failed" and failure
            else {"code": f"ProvisioningState/{state.lower()}"}
        ]
        if item.get("_power"):
            statuses.append({"code": f"PowerState/{item['_power']}"})
        props["instanceView"] = {"statuses": statuses}
    out["properties"] = props
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]


_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute"
_VM = _RG + r"/virtualmachines/(?P<name>[^/]+)"
_KIND_OP = {
    "proximityplacementgroups": "proximityPlacementGroups",
    "availabilitysets": "availabilitySets",
}
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = tuple(
    (re.compile(pattern + "$", re.IGNORECASE), ops)
    for pattern, ops in (
        (_SUB + r"/providers/microsoft\.compute/skus", {"GET": "resourceSkus.list"}),
        (
            _SUB + r"/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/usages",
            {"GET": "usage.list"},
        ),
        (
            _SUB + r"/providers/microsoft\.compute/locations/[^/]+/operations/(?P<op>[^/]+)",
            {"GET": "operations.get"},
        ),
        (
            _SUB + r"/providers/microsoft\.compute/virtualmachines",
            {"GET": "virtualMachines.listAll"},
        ),
        (_RG + r"/virtualmachines", {"GET": "virtualMachines.list"}),
        (_VM + r"/deallocate", {"POST": "virtualMachines.deallocate"}),
        (_VM + r"/providers/microsoft\.resources/tags/default", {"PATCH": "tags.updateAtScope"}),
        (
            _VM,
            {
                "PUT": "virtualMachines.createOrUpdate",
                "GET": "virtualMachines.get",
                "DELETE": "virtualMachines.delete",
            },
        ),
        (
            _RG + r"/(?P<kind>proximityplacementgroups|availabilitysets)/(?P<name>[^/]+)",
            {"PUT": "{kind}.createOrUpdate", "GET": "{kind}.get", "DELETE": "{kind}.delete"},
        ),
        (r"/retail/prices", {"GET": "retailPrices.list"}),
    )
)


# LOCAL HELPER, to lift into multicloud.testing.fakecloud: serve_json whose handler may also
# answer response headers. ARM's long-running operations need them (``Azure-AsyncOperation``),
# and the kit's serve_json sends none.
@contextlib.contextmanager
def serve(**settings: Any) -> Iterator[FakeArm]:
    """Run a fake Azure Resource Manager on 127.0.0.1 for the duration of the block.

    Args:
        **settings: :class:`FakeArm` settings (``subscription_id``, ``resource_group``,
            ``lro_polls``, ``prices_page_size``).

    Yields:
        The fake, with ``options`` for the adapter and its controls.
    """
    fake = FakeArm(**settings)

    def answer(call: Call) -> tuple[int, Any, Mapping[str, str]]:
        out = fake.answer(call.method, call.route, call.query, call.headers, call.body)
        return out.status, out.body, out.headers

    with serve_json(answer, name="fake-arm") as url:
        fake.base_url = url
        yield fake
