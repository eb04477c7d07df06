"""Azure Resource Manager plumbing: the client, and the views the adapter reads ARM through.

* :func:`make_client` builds the ``ComputeManagementClient`` from a credential name;
* :class:`Vm` is one VM as status and the sweep see it (tags, provisioning and power state,
  the failure code of a VM that ended ``Failed``);
* :class:`Sku` is what matters of one ``resourceSkus`` entry in one region (family, vCPUs,
  zones, restrictions);
* :class:`TtlCache` keeps region reads (SKUs, usages) for a while.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient

__all__ = [
    "ARM_SCOPE",
    "CREDENTIALS",
    "Sku",
    "StaticTokenCredential",
    "TtlCache",
    "Vm",
    "as_dict",
    "is_loopback_http",
    "make_client",
    "parse_skus",
]

ARM_SCOPE = "https://management.azure.com/.default"
"""Token scope of Azure Resource Manager (public cloud)."""

CREDENTIALS = ("default", "environment", "managed-identity", "workload-identity", "cli", "static")
"""Names the ``credential`` option accepts."""

T = TypeVar("T")


class StaticTokenCredential:
    """A credential that always hands out the same token; for fakes on 127.0.0.1 only.

    Args:
        token: The bearer token.
    """

    def __init__(self, token: str = "multicloud-fake-token") -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """Return the token, valid for an hour from now."""
        return AccessToken(self._token, int(time.time()) + 3600)


class _LoopbackBearerPolicy(SansIOHTTPPolicy[Any, Any]):
    """Adds the bearer token without azure-core's TLS check; only ever used on loopback http.

    azure-core's BearerTokenCredentialPolicy refuses to send a token over plain http, which is
    right for real endpoints and the only obstacle to pointing the real client at a fake ARM.
    """

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        super().__init__()
        self._credential = credential
        self._scope = scope

    def on_request(self, request: PipelineRequest[Any]) -> None:
        token = self._credential.get_token(self._scope)
        request.http_request.headers["Authorization"] = f"Bearer {token.token}"


def is_loopback_http(url: str | None) -> bool:
    """Return True for an ``http://`` URL on a loopback address (a fake, never a cloud)."""
    parsed = urllib.parse.urlparse(url or "")
    if parsed.scheme != "http" or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False


def _credential(choice: str | TokenCredential) -> TokenCredential:
    if not isinstance(choice, str):
        return choice
    if choice == "static":
        return StaticTokenCredential()
    # Imported here: azure-identity pulls in msal, which offers() against a fake never needs.
    from azure import identity

    made: dict[str, Callable[[], TokenCredential]] = {
        "environment": identity.EnvironmentCredential,
        "managed-identity": identity.ManagedIdentityCredential,
        "workload-identity": identity.WorkloadIdentityCredential,
        "cli": identity.AzureCliCredential,
    }
    return made.get(choice, identity.DefaultAzureCredential)()


def make_client(
    choice: str | TokenCredential,
    subscription_id: str,
    *,
    base_url: str | None,
    polling_interval: float | None,
    retries: int | None,
) -> ComputeManagementClient:
    """Build the compute client (no call is made).

    Args:
        choice: Credential name (see :data:`CREDENTIALS`) or a ``TokenCredential``.
        subscription_id: The subscription.
        base_url: Resource Manager endpoint (None: the public cloud's).
        polling_interval: Seconds between polls of long-running operations.
        retries: SDK retries.

    Returns:
        The client.

    Raises:
        ValueError: If the credential cannot be built (workload identity without its
            environment, say).
    """
    credential = _credential(choice)
    kwargs: dict[str, Any] = {}
    if base_url:
        kwargs["base_url"] = base_url
    if is_loopback_http(base_url):
        kwargs["authentication_policy"] = _LoopbackBearerPolicy(credential, ARM_SCOPE)
    if polling_interval is not None:
        kwargs["polling_interval"] = polling_interval
    if retries is not None:
        kwargs["retry_total"] = retries
    return ComputeManagementClient(credential, subscription_id, **kwargs)


def as_dict(obj: Any) -> dict[str, Any]:
    """Return an SDK model (or a mapping) as its REST-shaped dict."""
    if isinstance(obj, dict):
        return obj
    out = obj.as_dict() if callable(getattr(obj, "as_dict", None)) else dict(obj)
    return out if isinstance(out, dict) else dict(out)


@dataclass(frozen=True, slots=True)
class Vm:
    """One VM as the status and sweep paths see it: where it is, its size and priority, its
    tags, its provisioning state (lower case), its power state when the instance view says
    (``running``, ``deallocated`` …), and the ARM code and message of a
    ``ProvisioningState/failed/<code>`` status."""

    name: str
    resource_group: str
    location: str
    zone: str | None
    size: str
    spot: bool
    tags: Mapping[str, str]
    provisioning: str
    power: str | None = None
    failure_code: str = ""
    failure: str = ""

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Vm:
        """Read a VM from its REST dict (with or without the instance view)."""
        props = raw.get("properties") or {}
        power: str | None = None
        failure_code = failure = ""
        for status in (props.get("instanceView") or {}).get("statuses") or []:
            code = str(status.get("code", ""))
            if code.startswith("PowerState/"):
                power = code.split("/", 1)[1].lower()
            elif code.lower().startswith("provisioningstate/failed"):
                # "ProvisioningState/failed/AllocationFailed": the last part is ARM's code.
                failure_code = code.split("/", 2)[2] if code.count("/") >= 2 else ""
                failure = f"{code}: {status.get('message') or ''}".strip(": ")
        parts = str(raw.get("id", "")).split("/")
        group = next(
            (parts[i + 1] for i, p in enumerate(parts[:-1]) if p.lower() == "resourcegroups"), ""
        )
        zones = raw.get("zones") or []
        return cls(
            name=str(raw.get("name", "")),
            resource_group=group,
            location=str(raw.get("location", "")),
            zone=str(zones[0]) if zones else None,
            size=str((props.get("hardwareProfile") or {}).get("vmSize", "")),
            spot=props.get("priority") == "Spot",
            tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
            provisioning=str(props.get("provisioningState", "")).lower(),
            power=power,
            failure_code=failure_code,
            failure=failure,
        )


@dataclass(frozen=True, slots=True)
class Sku:
    """What the adapter needs from one ``resourceSkus`` entry in one region: its quota family
    (``standardNDSH100v5Family``), vCPUs, the zones it is offered and not restricted in, whether
    a ``Location`` restriction applies to this subscription, and whether the region has zones
    for it at all."""

    family: str
    vcpus: int
    zones: tuple[str, ...]
    restricted: bool
    zonal_region: bool = False


def parse_skus(region: str, listed: Iterable[Mapping[str, Any]]) -> dict[str, Sku]:
    """Read the VM sizes of one region from ``resourceSkus`` entries.

    Args:
        region: The region asked for.
        listed: Entries as REST dicts.

    Returns:
        Lower-case VM size → what matters about it here.
    """
    here = region.lower()
    out: dict[str, Sku] = {}
    for raw in listed:
        locations = [str(x).lower() for x in raw.get("locations") or []]
        if str(raw.get("resourceType", "")).lower() != "virtualmachines" or (
            locations and here not in locations
        ):
            continue
        zones = {
            str(z)
            for info in raw.get("locationInfo") or []
            if str(info.get("location", "")).lower() == here
            for z in info.get("zones") or []
        }
        zonal_region, restricted = bool(zones), False
        for restriction in raw.get("restrictions") or []:
            info = restriction.get("restrictionInfo") or {}
            if restriction.get("type") == "Location":
                where = [
                    str(x).lower() for x in info.get("locations") or restriction.get("values") or []
                ]
                restricted = restricted or not where or here in where
            elif restriction.get("type") == "Zone":
                zones.difference_update(str(z) for z in info.get("zones") or [])
        vcpus = next(
            (c.get("value") for c in raw.get("capabilities") or [] if c.get("name") == "vCPUs"), 0
        )
        out[str(raw.get("name", "")).lower()] = Sku(
            family=str(raw.get("family", "")),
            vcpus=int(vcpus) if str(vcpus).isdigit() else 0,
            zones=tuple(sorted(zones)),
            restricted=restricted,
            zonal_region=zonal_region,
        )
    return out


class TtlCache(Generic[T]):
    """Values by key, each kept for ``ttl`` seconds (thread-safe).

    Args:
        ttl: Seconds a value is reused.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, T]] = {}

    def get(self, key: str, load: Callable[[], T], *, fresh: bool = False) -> T:
        """Return the value under ``key``, loading it when missing, stale or ``fresh``."""
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        value = load()
        with self._lock:
            self._values[key] = (now + self.ttl, value)
        return value
