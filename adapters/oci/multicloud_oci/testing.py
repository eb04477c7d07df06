"""A fake Oracle Cloud REST API on 127.0.0.1, reached through the real ``oci`` SDK.

Serves the Compute (core), Identity and Limits calls the adapter makes, at
``<url>/<region>/<service>/...`` (the adapter's ``endpoint`` option). Every request must carry
a valid OCI request signature (RSA-SHA256 over the signed headers, as ``oci.signer.Signer``
makes it) from the throwaway API key :func:`serve` generates; anything else is
``401 NotAuthenticated``.

It refuses what the real API refuses, for the rules the adapter relies on (sources in
comments): shapes the availability domain does not offer, preemptible capacity on bare metal
or in a capacity reservation, edits of a preemptible instance other than its name, a compute
cluster in another availability domain or for a shape without RDMA, deleting a compute
cluster that still has instances, over-long metadata, malformed hostname labels and freeform
tags, a retry token reused for another body or after its resource was deleted, GPU limits,
and host capacity per availability domain.

Test controls follow ``multicloud.testing.fakecloud.FakeCloud``: ``fail_next`` with an OCI
error code (``OutOfHostCapacity``, ``LimitExceeded``, ``TooManyRequests``, ...),
``preempt``, ``finish``, ``launches``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from multicloud.catalog import load_catalog
from multicloud.provider import Offer, ResourceRequest
from multicloud.testing.fakecloud import Call, FakeCloud, serve_json
from multicloud_oci.provider import OCIProvider

__all__ = ["COMPARTMENT", "ERRORS", "FakeOCI", "pick", "serve"]

COMPARTMENT = "ocid1.compartment.oc1..fakecompartment"
TENANCY = "ocid1.tenancy.oc1..faketenancy"
USER = "ocid1.user.oc1..fakeuser"
FINGERPRINT = "12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0"

ERRORS: dict[str, tuple[int, str, str]] = {
    # code → (status, code on the wire, message); apierrors.htm, and the launch failure.
    "OutOfHostCapacity": (500, "InternalError", "Out of host capacity."),
    "LimitExceeded": (400, "LimitExceeded", "The service limit for this shape is exceeded."),
    "QuotaExceeded": (400, "QuotaExceeded", "The compartment quota is exceeded."),
    "InvalidParameter": (400, "InvalidParameter", "A parameter is invalid."),
    "NotAuthenticated": (401, "NotAuthenticated", "The required information to complete "
                         "authentication was not provided or was incorrect."),
    "NotAuthorized": (403, "NotAuthorized", "You do not have authorization."),
    "NotAuthorizedOrNotFound": (404, "NotAuthorizedOrNotFound",
                                "Authorization failed or requested resource not found."),
    "IncorrectState": (409, "IncorrectState", "The resource is in a conflicting state."),
    "InvalidatedRetryToken": (409, "InvalidatedRetryToken",
                              "The retry token was used for another request."),
    "TooManyRequests": (429, "TooManyRequests", "Too many requests for the tenancy."),
    "InternalServerError": (500, "InternalServerError", "Internal server error."),
    "ServiceUnavailable": (503, "ServiceUnavailable", "Service unavailable."),
}

# Shapes with RDMA ports (cluster networking), and the GPU limit each counts against.
_RDMA = {"BM.GPU.H100.8", "BM.GPU.H200.8", "BM.GPU.B200.8", "BM.GPU.B300.8", "BM.GPU.GB200.4",
         "BM.GPU.A100-v2.8", "BM.GPU4.8", "BM.GPU.MI300X.8"}
_METADATA_MAX = 32_000  # metadata + extendedMetadata bytes (LaunchInstanceDetails.metadata)
_HOSTNAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$")  # RFC 952/1123 (CreateVnicDetails)
_DEAD = ("TERMINATING", "TERMINATED")


def _limit_of(shape: str) -> str:
    family = shape.split(".")[2 if shape.startswith(("BM.GPU.", "VM.GPU.")) else 1]
    return f"gpu-{family.lower()}-count" if shape.count(".") > 2 else f"{family.lower()}-count"


class _Refused(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        status, wire, default = ERRORS[code]
        super().__init__(message or default)
        self.answer = (status, {"code": wire, "message": message or default})


class FakeOCI(FakeCloud):
    """The fake cloud's state and controls.

    Args:
        regions: Regions served (each with three availability domains).
        public_key: The API key the requests must be signed with.
    """

    def __init__(self, regions: tuple[str, ...], public_key: rsa.RSAPublicKey) -> None:
        super().__init__()
        self.url = ""
        self.key_content = ""
        self._public = public_key
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.calls: list[Call] = []
        self.ads = {r: [f"FAKE:{r.upper()}-AD-{i}" for i in (1, 2, 3)] for r in regions}
        rows = [r for r in load_catalog().rows if r.provider == "oci"]
        counts = {r.instance_type: r.count for r in rows}
        self.shapes: dict[str, dict[str, int]] = {
            ad: dict(counts) for ads in self.ads.values() for ad in ads
        }
        self.host_capacity: dict[tuple[str, str], int] = {}
        self.default_capacity = 4
        self.limits: dict[tuple[str, str], int] = {}
        self.default_limit = 10_000
        self.subnets = {r: f"ocid1.subnet.oc1.{r}.fake" for r in regions}
        self.images = {r: f"ocid1.image.oc1.{r}.fake" for r in regions}
        self.reservations: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.launch_bodies: dict[str, dict[str, Any]] = {}
        self.clusters: dict[str, dict[str, Any]] = {}
        self._tokens: dict[tuple[str, str], tuple[str, str]] = {}
        self.report_permission = True
        self.terminate_to = "TERMINATED"  # "TERMINATING": instances take a while to go

    # -- controls ---------------------------------------------------------------------------

    @property
    def options(self) -> dict[str, Any]:
        """Options that point an ``OCIProvider`` at this fake."""
        return {
            "compartment_id": COMPARTMENT,
            "subnets": dict(self.subnets),
            "images": dict(self.images),
            "endpoint": self.url,
            "config": {"user": USER, "tenancy": TENANCY, "fingerprint": FINGERPRINT,
                       "key_content": self.key_content},
        }

    def provider(self, **options: Any) -> OCIProvider:
        """Return an adapter (fleet entry ``oci``) on this fake's first region."""
        first = next(iter(self.ads))
        return OCIProvider(**{"fleet_name": "oci", "regions": [first], **self.options, **options})

    def count(self, method: str, path_part: str) -> int:
        """Return how many requests of ``method`` had ``path_part`` in their path."""
        return sum(1 for c in self.calls if c.method == method and path_part in c.path)

    def fail_next(self, operation: str, error: str, *, times: int = 1) -> None:
        """Answer the next calls of an OCI operation (``LaunchInstance``) with an error code.

        An empty ``error`` lets that many calls through first.
        """
        if error and error not in ERRORS:
            raise ValueError(f"unknown OCI error {error!r}; known: {', '.join(ERRORS)}")
        super().fail_next(operation, error, times=times)

    def add_reservation(self, region: str, ad: str, shape: str, count: int) -> str:
        """Create an active capacity reservation of ``count`` nodes; return its OCID."""
        rid = f"ocid1.capacityreservation.oc1.{region}.{next(self._ids)}"
        self.reservations[rid] = {"region": region, "ad": ad, "shape": shape, "reserved": count}
        return rid

    def members(self, workload: str) -> list[dict[str, Any]]:
        """Return the instances of a launch (handle id), by rank."""
        with self._lock:
            found = [i for i in self.instances.values()
                     if i["displayName"].split(" ")[0].rsplit("-", 1)[0] == workload]
        return sorted(found, key=lambda i: int(i["metadata"].get("multicloud_rank", 0)))

    def programs(self, workload: str) -> list[str]:
        """Return each node's program, decoded from the ``user_data`` the SDK sent."""
        return [base64.b64decode(i["metadata"]["user_data"]).decode()
                for i in self.members(workload) if i["lifecycleState"] not in _DEAD]

    def settle(self) -> None:
        """Finish every termination in progress."""
        with self._lock:
            for inst in self.instances.values():
                if inst["lifecycleState"] == "TERMINATING":
                    inst["lifecycleState"] = "TERMINATED"

    def preempt(self, workload: str) -> None:
        """Reclaim a preemptible launch: OCI terminates its instances."""
        for inst in self.members(workload):
            if inst.get("preemptibleInstanceConfig") is None:
                raise ValueError(f"{inst['displayName']} is not preemptible (OCI reclaims those)")
            inst.update(lifecycleState="TERMINATED", _preempted=True)

    def finish(self, workload: str, exit_code: int) -> None:
        """End a launch's command as its node program does: rename with the end, terminate."""
        for inst in self.members(workload):
            name = inst["displayName"].split(" ")[0]
            end = "preempted" if inst.get("_preempted") else str(exit_code)
            inst.update(displayName=f"{name} exit={end}", lifecycleState="TERMINATED")

    # -- the server -------------------------------------------------------------------------

    def answer(self, call: Call) -> tuple[int, Any]:
        """Answer one request (the ``serve_json`` handler)."""
        with self._lock:
            self.calls.append(call)
            url = urllib.parse.urlsplit(call.path)
            _, region, service, rest = [*url.path.split("/", 3), ""][:4]
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            try:
                self._authenticate(call)
                for method, svc, pattern, operation, handler in self._routes():
                    hit = re.fullmatch(pattern, "/" + rest)
                    if call.method == method and svc == service and hit:
                        fault = self.faults.take(operation)
                        if fault:  # "" lets one call through (fail the second, say)
                            raise _Refused(fault)
                        if region not in self.ads:
                            raise _Refused("NotAuthorizedOrNotFound", f"no region {region}")
                        return handler(region, query, call.body, *hit.groups())
                return 404, {"code": "NotFound", "message": f"no route {call.method} {url.path}"}
            except _Refused as refused:
                return refused.answer

    def _authenticate(self, call: Call) -> None:
        # OCI request signatures (draft-cavage HTTP signatures, rsa-sha256): the signing
        # string is "<name>: <value>" per signed header, "(request-target)" as method + path.
        headers = {k.lower(): v for k, v in call.headers.items()}
        fields = dict(re.findall(r'(\w+)="([^"]*)"', headers.get("authorization", "")))
        if fields.get("keyId") != f"{TENANCY}/{USER}/{FINGERPRINT}":
            raise _Refused("NotAuthenticated")
        lines = [
            f"(request-target): {call.method.lower()} {call.path}" if h == "(request-target)"
            else f"{h}: {headers.get(h, '')}"
            for h in fields.get("headers", "").split()
        ]
        try:
            self._public.verify(base64.b64decode(fields.get("signature", "")),
                                "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError) as exc:
            raise _Refused("NotAuthenticated") from exc

    def _routes(self) -> list[tuple[str, str, str, str, Callable[..., tuple[int, Any]]]]:
        v1, lim = "/20160918", "/20190729"
        return [
            ("GET", "identity", f"{v1}/availabilityDomains", "ListAvailabilityDomains", self._ads),
            ("GET", "core", f"{v1}/shapes", "ListShapes", self._shapes),
            ("POST", "core", f"{v1}/computeCapacityReports", "CreateComputeCapacityReport",
             self._report),
            ("GET", "core", f"{v1}/computeCapacityReservations", "ListComputeCapacityReservations",
             self._list_reservations),
            ("GET", "core", f"{v1}/computeCapacityReservations/([^/]+)",
             "GetComputeCapacityReservation", self._get_reservation),
            ("GET", "core", f"{v1}/computeClusters", "ListComputeClusters", self._list_clusters),
            ("POST", "core", f"{v1}/computeClusters", "CreateComputeCluster",
             self._create_cluster),
            ("DELETE", "core", f"{v1}/computeClusters/([^/]+)", "DeleteComputeCluster",
             self._delete_cluster),
            ("GET", "core", f"{v1}/instances", "ListInstances", self._list_instances),
            ("POST", "core", f"{v1}/instances", "LaunchInstance", self._launch),
            ("GET", "core", f"{v1}/instances/([^/]+)", "GetInstance", self._get_instance),
            ("PUT", "core", f"{v1}/instances/([^/]+)", "UpdateInstance", self._update),
            ("DELETE", "core", f"{v1}/instances/([^/]+)", "TerminateInstance", self._terminate),
            ("GET", "limits", f"{lim}/services/compute/limits/([^/]+)/resourceAvailability",
             "GetResourceAvailability", self._availability),
        ]

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _compartment(value: str | None) -> None:
        if value != COMPARTMENT:
            raise _Refused("NotAuthorizedOrNotFound", f"compartment {value} not found")

    def _live(self, ad: str, shape: str, reservation: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.instances.values()
                if i["availabilityDomain"] == ad and i["shape"] == shape
                and i["lifecycleState"] not in _DEAD
                and (reservation is None or i.get("capacityReservationId") == reservation)]

    def _free(self, ad: str, shape: str) -> int:
        capacity = self.host_capacity.get((ad, shape), self.default_capacity)
        unreserved = [i for i in self._live(ad, shape) if not i.get("capacityReservationId")]
        return max(capacity - len(unreserved), 0)

    def _used_gpus(self, ad: str, limit: str) -> int:
        return sum(self.shapes[ad].get(i["shape"], 0) for i in self.instances.values()
                   if i["availabilityDomain"] == ad and i["lifecycleState"] not in _DEAD
                   and _limit_of(i["shape"]) == limit)

    def _replay(self, operation: str, token: str | None, body: Any,
                store: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """Return the resource an earlier request with this retry token created, if any."""
        if not token:
            return None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        seen = self._tokens.get((operation, token))
        if seen is None:
            return None
        made = store[seen[1]]
        # A retry token names one request: another body, or a resource since deleted,
        # is refused (apierrors.htm, 409 InvalidatedRetryToken).
        if seen[0] != digest or made["lifecycleState"] in (*_DEAD, "DELETED"):
            raise _Refused("InvalidatedRetryToken")
        return made

    def _remember(self, operation: str, token: str | None, body: Any, rid: str) -> None:
        if token:
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self._tokens[(operation, token)] = (digest, rid)

    # -- identity, shapes, capacity, limits ----------------------------------------------------

    def _ads(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        return 200, [{"name": ad, "id": f"ocid1.ad.{ad}", "compartmentId": TENANCY}
                     for ad in self.ads[region]]

    def _shapes(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        ad = query.get("availabilityDomain", "")
        if ad not in self.ads[region]:
            raise _Refused("InvalidParameter", f"unknown availability domain {ad}")
        return 200, [
            {"shape": s, "gpus": g, "rdmaPorts": 2 if s in _RDMA else 0,
             "quotaNames": [_limit_of(s)], "isFlexible": False}
            for s, g in sorted(self.shapes[ad].items())
        ]

    def _report(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if not self.report_permission:
            raise _Refused("NotAuthorizedOrNotFound")
        self._compartment(body.get("compartmentId"))
        ad = body["availabilityDomain"]
        rows = []
        for item in body.get("shapeAvailabilities", []):
            shape = item["instanceShape"]
            if shape not in self.shapes.get(ad, {}):
                rows.append({"instanceShape": shape,
                             "availabilityStatus": "HARDWARE_NOT_SUPPORTED"})
                continue
            free = self._free(ad, shape)
            status = "AVAILABLE" if free else "OUT_OF_HOST_CAPACITY"
            rows.append({"instanceShape": shape, "availableCount": free,
                         "availabilityStatus": status})
        return 200, {"compartmentId": COMPARTMENT, "availabilityDomain": ad,
                     "shapeAvailabilities": rows}

    def _reservation_json(self, rid: str) -> dict[str, Any]:
        res = self.reservations[rid]
        used = len(self._live(res["ad"], res["shape"], rid))
        return {
            "id": rid, "compartmentId": COMPARTMENT, "availabilityDomain": res["ad"],
            "displayName": f"reservation-{rid[-4:]}", "lifecycleState": "ACTIVE",
            "reservedInstanceCount": res["reserved"], "usedInstanceCount": used,
            "instanceReservationConfigs": [{"instanceShape": res["shape"],
                                            "reservedCount": res["reserved"], "usedCount": used}],
        }

    def _list_reservations(self, region: str, query: dict[str, str], body: Any
                           ) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        return 200, [self._reservation_json(r) for r, v in self.reservations.items()
                     if v["region"] == region]

    def _get_reservation(self, region: str, query: dict[str, str], body: Any, rid: str
                         ) -> tuple[int, Any]:
        if rid not in self.reservations:
            raise _Refused("NotAuthorizedOrNotFound")
        return 200, self._reservation_json(rid)

    def _availability(self, region: str, query: dict[str, str], body: Any, limit: str
                      ) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        ad = query.get("availabilityDomain", "")
        total = self.limits.get((ad, limit), self.default_limit)
        used = self._used_gpus(ad, limit)
        return 200, {"used": used, "available": max(total - used, 0)}

    # -- compute clusters ---------------------------------------------------------------------

    def _list_clusters(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        name = query.get("displayName")
        items = [c for c in self.clusters.values() if c["_region"] == region
                 and (name is None or c["displayName"] == name)]
        return 200, {"items": [{k: v for k, v in c.items() if not k.startswith("_")}
                               for c in items]}

    def _create_cluster(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        token = self._headers_token()
        made = self._replay("CreateComputeCluster", token, body, self.clusters)
        if made is None:
            self._compartment(body.get("compartmentId"))
            if body.get("availabilityDomain") not in self.ads[region]:
                raise _Refused("InvalidParameter", "unknown availability domain")
            self._check_tags(body.get("freeformTags") or {})
            cid = f"ocid1.computecluster.oc1.{region}.{next(self._ids)}"
            made = {**body, "id": cid, "lifecycleState": "ACTIVE", "_region": region}
            self.clusters[cid] = made
            self._remember("CreateComputeCluster", token, body, cid)
        return 200, {k: v for k, v in made.items() if not k.startswith("_")}

    def _delete_cluster(self, region: str, query: dict[str, str], body: Any, cid: str
                        ) -> tuple[int, Any]:
        cluster = self.clusters.get(cid)
        if cluster is None or cluster["lifecycleState"] == "DELETED":
            raise _Refused("NotAuthorizedOrNotFound")
        if any(b.get("computeClusterId") == cid and self.instances[i]["lifecycleState"]
               != "TERMINATED" for i, b in self.launch_bodies.items()):
            raise _Refused("IncorrectState", "the compute cluster still has instances")
        cluster["lifecycleState"] = "DELETED"
        return 204, None

    # -- instances ------------------------------------------------------------------------------

    def _headers_token(self) -> str | None:
        headers = {k.lower(): v for k, v in self.calls[-1].headers.items()}
        return headers.get("opc-retry-token")

    @staticmethod
    def _check_tags(tags: dict[str, str]) -> None:
        # Tagging overview, "Limits on Tags": 10 freeform tags, keys <= 100 characters without
        # periods or spaces, values <= 256 characters.
        if len(tags) > 10 or any(len(k) > 100 or "." in k or " " in k or len(v) > 256
                                 for k, v in tags.items()):
            raise _Refused("InvalidParameter", f"freeform tags are not valid: {sorted(tags)}")

    def _launch(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        token = self._headers_token()
        made = self._replay("LaunchInstance", token, body, self.instances)
        if made is None:
            made = self._create_instance(region, body)
            self._remember("LaunchInstance", token, body, made["id"])
            self.launches[made["displayName"]] += 1
        return 200, self._public_view(made, "PROVISIONING")

    def _create_instance(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self._compartment(body.get("compartmentId"))
        ad, shape = body.get("availabilityDomain", ""), body.get("shape", "")
        if ad not in self.ads[region] or shape not in self.shapes[ad]:
            raise _Refused("InvalidParameter", f"shape {shape} is not available in {ad}")
        vnic, source = body.get("createVnicDetails") or {}, body.get("sourceDetails") or {}
        if vnic.get("subnetId") != self.subnets[region] or (
                source.get("imageId") != self.images[region]):
            raise _Refused("InvalidParameter", "subnet or image not found")  # RelatedResource…
        label = vnic.get("hostnameLabel")
        if label is not None and (not _HOSTNAME.match(label) or any(
                b["createVnicDetails"].get("hostnameLabel") == label
                and self.instances[i]["lifecycleState"] not in _DEAD
                for i, b in self.launch_bodies.items())):
            raise _Refused("InvalidParameter", f"hostname label {label} is invalid or in use")
        metadata = body.get("metadata") or {}
        if len(json.dumps(metadata)) + len(json.dumps(body.get("extendedMetadata") or {})) > (
                _METADATA_MAX):
            raise _Refused("InvalidParameter", "metadata exceeds 32,000 bytes")
        try:
            base64.b64decode(metadata.get("user_data", ""), validate=True)
        except ValueError as exc:
            raise _Refused("InvalidParameter", "user_data is not base64") from exc
        self._check_tags(body.get("freeformTags") or {})
        reservation = body.get("capacityReservationId")
        # Preemptible instances: not on bare metal, not in a capacity reservation (Compute
        # docs, "Preemptible Instances", Support and Limitations).
        if body.get("preemptibleInstanceConfig") is not None and (
                shape.startswith("BM.") or reservation):
            raise _Refused("InvalidParameter", "preemptible capacity is not available "
                               "for bare metal shapes or in capacity reservations")
        cluster = body.get("computeClusterId")
        if cluster is not None:
            # CreateComputeCluster: instances join in the cluster's compartment and AD.
            cc = self.clusters.get(cluster)
            if cc is None or cc["lifecycleState"] != "ACTIVE" or cc["availabilityDomain"] != ad \
                    or shape not in _RDMA:
                raise _Refused("InvalidParameter", "the compute cluster cannot take this instance")
        if reservation is not None:
            res = self.reservations.get(reservation)
            if res is None or res["ad"] != ad or res["shape"] != shape:
                raise _Refused("InvalidParameter", f"reservation {reservation} does not fit")
            if len(self._live(ad, shape, reservation)) >= res["reserved"]:
                raise _Refused("OutOfHostCapacity")
        else:
            if self._free(ad, shape) < 1:
                raise _Refused("OutOfHostCapacity")
            limit = _limit_of(shape)
            total = self.limits.get((ad, limit), self.default_limit)
            if self._used_gpus(ad, limit) + self.shapes[ad][shape] > total:
                raise _Refused("LimitExceeded")
        iid = f"ocid1.instance.oc1.{region}.{next(self._ids)}"
        self.launch_bodies[iid] = body
        made = {
            "id": iid, "compartmentId": COMPARTMENT, "availabilityDomain": ad, "region": region,
            "shape": shape, "displayName": body.get("displayName", iid),
            "freeformTags": dict(body.get("freeformTags") or {}), "metadata": dict(metadata),
            "lifecycleState": "RUNNING", "faultDomain": "FAULT-DOMAIN-1",
            "capacityReservationId": reservation, "imageId": source.get("imageId"),
            "preemptibleInstanceConfig": body.get("preemptibleInstanceConfig"),
            "timeCreated": "2026-12-06T00:00:00.000Z",
        }
        self.instances[iid] = made
        return made

    @staticmethod
    def _public_view(inst: dict[str, Any], state: str | None = None) -> dict[str, Any]:
        view = {k: v for k, v in inst.items() if not k.startswith("_")}
        if state is not None:
            view["lifecycleState"] = state
        return view

    def _list_instances(self, region: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self._compartment(query.get("compartmentId"))
        return 200, [self._public_view(i) for i in self.instances.values()
                     if i["region"] == region]

    def _instance(self, iid: str) -> dict[str, Any]:
        inst = self.instances.get(iid)
        if inst is None:
            raise _Refused("NotAuthorizedOrNotFound")
        return inst

    def _get_instance(self, region: str, query: dict[str, str], body: Any, iid: str
                      ) -> tuple[int, Any]:
        return 200, self._public_view(self._instance(iid))

    def _update(self, region: str, query: dict[str, str], body: Any, iid: str
                ) -> tuple[int, Any]:
        inst = self._instance(iid)
        if inst["lifecycleState"] in _DEAD:
            raise _Refused("IncorrectState", "the instance is terminated")
        if inst.get("preemptibleInstanceConfig") is not None and set(body) - {"displayName"}:
            # "When you edit an instance that uses preemptible capacity, only the name of the
            # instance can be changed" (Compute docs, "Preemptible Instances").
            raise _Refused("InvalidParameter", "a preemptible instance can only be renamed")
        if "freeformTags" in body:
            self._check_tags(body["freeformTags"])
        inst.update({k: v for k, v in body.items() if k in ("displayName", "freeformTags")})
        return 200, self._public_view(inst)

    def _terminate(self, region: str, query: dict[str, str], body: Any, iid: str
                   ) -> tuple[int, Any]:
        inst = self._instance(iid)
        if inst["lifecycleState"] != "TERMINATED":
            inst["lifecycleState"] = self.terminate_to
        return 204, None


@contextlib.contextmanager
def serve(regions: tuple[str, ...] = ("us-ashburn-1",)) -> Iterator[FakeOCI]:
    """Run a fake OCI on 127.0.0.1 with a throwaway API signing key.

    Args:
        regions: Regions it serves (each with three availability domains).

    Yields:
        The fake; ``fake.options`` configures an ``OCIProvider`` for it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = FakeOCI(regions, key.public_key())
    fake.key_content = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with serve_json(fake.answer, name="fake-oci") as url:
        fake.url = url
        yield fake


def pick(
    provider: OCIProvider, shape: str = "BM.GPU.H100.8", zone: int = 1, reserved: bool = False
) -> Offer:
    """Return the adapter's offer of ``shape`` in availability domain number ``zone``."""
    return next(
        o for o in provider.offers(ResourceRequest())
        if o.instance_type == shape and str(o.zone).endswith(f"-AD-{zone}")
        and (o.reservation is not None) == reserved
    )
