"""A fake AWS for tests and demos: moto's threaded server plus what moto cannot answer.

:func:`serve` starts moto's ``ThreadedMotoServer`` on 127.0.0.1 (a free port) with fake
credentials and yields a :class:`FakeAWS`. Its ``options`` are the fleet-entry options that
point ``AWSProvider`` at the server, so ``multicloud.providers.load("aws", **fake.options)``
or a fleet file works, in this process or any other (the server speaks plain HTTP).

moto covers EC2 instances, instance-type offerings, zones, subnets and tags. What it lacks is
answered by a small WSGI layer in front of it, from tables the test fills in:

- Service Quotas for EC2 (moto's only knows ``vpc``): :meth:`FakeAWS.set_quota`;
- real spot prices (moto returns 0.00001 everywhere): :meth:`FakeAWS.set_spot_price`;
- capacity reservations and Capacity Blocks: :meth:`FakeAWS.add_reservation`;
- cluster placement groups (``CreatePlacementGroup`` and ``DeletePlacementGroup`` are not
  implemented in moto; a group is in use while instances with its request tag are live);
- errors: :meth:`FakeAWS.fail_next` makes the next matching call(s) fail with any AWS error
  code and HTTP status, optionally after a delay, so the adapter's real botocore error
  parsing and translation run.

It also records every call (:meth:`FakeAWS.calls`) and controls workloads the way a host or
EC2 would: :meth:`FakeAWS.finish` (the host tags ``multicloud:exit`` and powers off) and
:meth:`FakeAWS.preempt` (EC2 reclaims a spot instance).

Needs the ``test`` extra (``moto[ec2,server]``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import boto3
import botocore.loaders
import botocore.session
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason
from moto.server import ThreadedMotoServer

from multicloud_aws.userdata import EXIT_TAG, REQUEST_TAG

__all__ = ["ACCOUNT_ID", "DEFAULT_AMI", "FAKE_ENV", "FakeAWS", "serve"]

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
"""The account moto answers as."""

DEFAULT_AMI = "ami-03cf127a"
"""An AMI moto knows in every region (its bundled Amazon Linux image)."""

FAKE_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No profile, no shared files and no instance metadata: nothing but these keys.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Credentials that can only ever sign requests to the fake."""

FAKE_PROFILE = "multicloud-fake"
"""Profile of the fake's shared credentials file (``FakeAWS.options['credentials_file']``)."""

_EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/")

Responder = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class _Fault:
    action: str
    code: str
    message: str
    status: int
    region: str | None
    times: int
    delay: float


@dataclass
class _Reservation:
    id: str
    region: str
    instance_type: str
    zone_name: str
    total: int
    available: int
    kind: str
    owner: str
    state: str
    name: str | None


@dataclass
class _Tables:
    quotas: dict[tuple[str, str], float] = field(default_factory=dict)
    spot: dict[tuple[str, str, str], float] = field(default_factory=dict)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def _query_params(body: bytes, query: str) -> dict[str, Any]:
    raw = parse_qs(query, keep_blank_values=True)
    raw.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    return {k: v[0] if len(v) == 1 else v for k, v in raw.items()}


def _indexed(params: Mapping[str, Any], prefix: str) -> list[str]:
    """Values of ``Prefix.1``, ``Prefix.2``, ... in a query-protocol request."""
    out: list[str] = []
    i = 1
    while (value := params.get(f"{prefix}.{i}")) is not None:
        out.append(str(value))
        i += 1
    return out


def _filters(params: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    i = 1
    while (name := params.get(f"Filter.{i}.Name")) is not None:
        out[str(name)] = _indexed(params, f"Filter.{i}.Value")
        i += 1
    return out


def _xml(action: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{_EC2_NS}">'
        f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>"
    ).encode()


def _leaf(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


class _Layer:
    """The WSGI layer in front of moto: records calls, injects faults, fills moto's gaps."""

    def __init__(self, app: Callable[..., Iterable[bytes]], tables: _Tables) -> None:
        self.app = app
        self.t = tables
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match is None:
            return self.app(environ, start)  # moto's own API (/moto-api/...) and the like
        region, service = match.groups()
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            action = target.rsplit(".", 1)[-1]
            params: dict[str, Any] = json.loads(body or b"{}")
        else:
            params = _query_params(body, environ.get("QUERY_STRING", ""))
            action = str(params.get("Action", ""))
        with self.lock:
            self.t.calls.append((region, action, params))
            fault = self._take_fault(action, region)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            return self._error(start, bool(target), fault.code, fault.message, fault.status)
        handler = getattr(self, f"_{service.replace('-', '_')}_{action}", None)
        if handler is not None:
            answer: Iterable[bytes] | None = handler(region, params, start)
            if answer is not None:
                return answer
        return self.app(environ, start)

    # -- faults ---------------------------------------------------------------------------

    def _take_fault(self, action: str, region: str) -> _Fault | None:
        for fault in self.t.faults:
            if fault.action == action and fault.region in (None, region) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    @staticmethod
    def _error(
        start: Callable[..., Any], json_protocol: bool, code: str, message: str, status: int
    ) -> list[bytes]:
        if json_protocol:
            body = json.dumps({"__type": code, "message": message}).encode()
            start(
                f"{status} Error",
                [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)],
            )
            return [body]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"{_leaf('Code', code)}{_leaf('Message', message)}</Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        ).encode()
        start(f"{status} Error", [("Content-Type", "text/xml")])
        return [xml]

    @staticmethod
    def _ok(start: Callable[..., Any], body: bytes, content_type: str = "text/xml") -> list[bytes]:
        start("200 OK", [("Content-Type", content_type)])
        return [body]

    # -- Service Quotas ---------------------------------------------------------------------

    def _servicequotas_GetServiceQuota(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> list[bytes] | None:
        key = (region, str(params.get("QuotaCode")))
        if params.get("ServiceCode") != "ec2" or key not in self.t.quotas:
            return None
        doc = {
            "Quota": {
                "ServiceCode": "ec2",
                "QuotaCode": key[1],
                "QuotaName": key[1],
                "Value": self.t.quotas[key],
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
        }
        return self._ok(start, json.dumps(doc).encode(), "application/x-amz-json-1.1")

    # -- EC2 gaps ---------------------------------------------------------------------------

    def _ec2_DescribeSpotPriceHistory(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> list[bytes] | None:
        prices = {k: v for k, v in self.t.spot.items() if k[0] == region}
        if not prices:
            return None
        types = set(_indexed(params, "InstanceType"))
        items = "".join(
            "<item>"
            + _leaf("instanceType", itype)
            + _leaf("productDescription", "Linux/UNIX")
            + _leaf("spotPrice", f"{price:.6f}")
            + _leaf("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
            + _leaf("availabilityZone", zone)
            + "</item>"
            for (_, itype, zone), price in sorted(prices.items())
            if not types or itype in types
        )
        body = f"<spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken></nextToken>"
        return self._ok(start, _xml("DescribeSpotPriceHistory", body))

    def _ec2_DescribeCapacityReservations(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> list[bytes]:
        ids = set(_indexed(params, "CapacityReservationId"))
        filters = _filters(params)
        zone_ids = self._zone_ids(region)
        items = []
        for r in sorted(self.t.reservations.values(), key=lambda r: r.id):
            if r.region != region or (ids and r.id not in ids):
                continue
            if "state" in filters and r.state not in filters["state"]:
                continue
            if "tag:Name" in filters and r.name not in filters["tag:Name"]:
                continue
            tags = f"<item>{_leaf('key', 'Name')}{_leaf('value', r.name)}</item>" if r.name else ""
            items.append(
                "<item>"
                + _leaf("capacityReservationId", r.id)
                + _leaf("ownerId", r.owner)
                + _leaf("instanceType", r.instance_type)
                + _leaf("instancePlatform", "Linux/UNIX")
                + _leaf("availabilityZone", r.zone_name)
                + _leaf("availabilityZoneId", zone_ids.get(r.zone_name, ""))
                + _leaf("totalInstanceCount", r.total)
                + _leaf("availableInstanceCount", r.available)
                + _leaf("state", r.state)
                + _leaf("reservationType", r.kind)
                + f"<tagSet>{tags}</tagSet></item>"
            )
        body = f"<capacityReservationSet>{''.join(items)}</capacityReservationSet>"
        return self._ok(start, _xml("DescribeCapacityReservations", body))

    def _ec2_CreatePlacementGroup(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> list[bytes]:
        name = str(params.get("GroupName", ""))
        with self.lock:
            if (region, name) in self.t.groups:
                return self._error(
                    start,
                    False,
                    "InvalidPlacementGroup.Duplicate",
                    f"The placement group '{name}' already exists.",
                    400,
                )
            tags = {
                str(params[f"TagSpecification.1.Tag.{i}.Key"]): str(
                    params.get(f"TagSpecification.1.Tag.{i}.Value", "")
                )
                for i in range(1, 51)
                if f"TagSpecification.1.Tag.{i}.Key" in params
            }
            self.t.groups[(region, name)] = {"strategy": params.get("Strategy"), "tags": tags}
        body = (
            "<placementGroup>"
            + _leaf("groupName", name)
            + _leaf("strategy", params.get("Strategy", "cluster"))
            + _leaf("state", "available")
            + "</placementGroup>"
        )
        return self._ok(start, _xml("CreatePlacementGroup", body))

    def _ec2_DeletePlacementGroup(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> list[bytes]:
        name = str(params.get("GroupName", ""))
        with self.lock:
            group = self.t.groups.get((region, name))
            if group is None:
                return self._error(
                    start,
                    False,
                    "InvalidPlacementGroup.Unknown",
                    f"The Placement Group '{name}' is unknown.",
                    400,
                )
            request = group["tags"].get(REQUEST_TAG)
            if request and self._in_use(region, request):
                return self._error(
                    start,
                    False,
                    "InvalidPlacementGroup.InUse",
                    f"The placement group '{name}' is in use and may not be deleted.",
                    400,
                )
            del self.t.groups[(region, name)]
        body = _leaf("return", "true")
        return self._ok(start, _xml("DeletePlacementGroup", body))

    @staticmethod
    def _in_use(region: str, request_id: str) -> bool:
        # moto does not record an instance's placement group; the gang's request tag does.
        backend = ec2_backends[ACCOUNT_ID][region]
        return any(
            backend.tags.get(instance.id, {}).get(REQUEST_TAG) == request_id
            and instance.state != "terminated"
            for instance in backend.all_instances()
        )

    def _ec2_RunInstances(
        self, region: str, params: dict[str, Any], start: Callable[..., Any]
    ) -> None:
        # moto ignores reservations; keep the reservation's free count honest, then let moto
        # launch the instances.
        target = params.get(
            "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"
        )
        with self.lock:
            r = self.t.reservations.get(str(target)) if target else None
            if r is not None:
                r.available = max(0, r.available - int(params.get("MaxCount", 1)))
        return None

    @staticmethod
    def _zone_ids(region: str) -> dict[str, str]:
        backend = ec2_backends[ACCOUNT_ID][region]
        return {z.name: z.zone_id for z in backend.describe_availability_zones()}


_LOADER = botocore.loaders.create_loader()
"""One model loader for every session the fake hands out: loading EC2's API model takes a
few hundred milliseconds per fresh session, which would dominate the test run."""


def _fake_session() -> Any:
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.Session(
        aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=FAKE_ENV["AWS_DEFAULT_REGION"],
        botocore_session=core,
    )


class FakeAWS:
    """Handle on a running fake: adapter options, tables to fill, and workload controls.

    Attributes:
        endpoint_url: The server's URL (``http://127.0.0.1:PORT``).
        options: Fleet-entry options pointing ``AWSProvider`` at the server.
    """

    def __init__(self, endpoint_url: str, tables: _Tables) -> None:
        self.endpoint_url = endpoint_url
        self._t = tables
        self._ids = itertools.count(1)
        self._clients: dict[tuple[str, str], Any] = {}
        self.options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "image_id": DEFAULT_AMI,
            "max_attempts": 1,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment for another process that should talk to the fake through plain boto3.

        The fake credentials plus ``AWS_ENDPOINT_URL`` (honoured by boto3 itself), for code
        that builds its own clients, such as ``examples/aws_plan.py``.
        """
        return {**FAKE_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    # -- set-up -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every instance, table, fault and recorded call.

        Only the instances are dropped from moto's EC2 backends, not the backends themselves:
        re-creating a region's backend (default VPC, subnets, images) costs up to a second,
        and nothing else in them changes between tests.
        """
        accounts: Mapping[str, Any] = ec2_backends.get(ACCOUNT_ID) or {}
        for backend in list(accounts.values()):
            backend.reservations.clear()
        self._t.quotas.clear()
        self._t.spot.clear()
        self._t.reservations.clear()
        self._t.groups.clear()
        self._t.faults.clear()
        self._t.calls.clear()

    def reset_all(self) -> None:
        """Reset every moto backend as well (slow: regions are rebuilt on next use)."""
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
            timeout=10,
        ).read()
        self.reset()

    def session(self) -> Any:
        """Return a boto3 session with fake credentials that refuses to leave 127.0.0.1.

        A ``before-send`` hook fails any request to another host, so a test using this
        session cannot reach the network even by mistake.
        """
        session = _fake_session()

        def loopback_only(request: Any, **_: Any) -> None:
            if urlsplit(str(request.url)).hostname != "127.0.0.1":
                raise RuntimeError(f"request to {request.url} would leave 127.0.0.1")

        session.events.register("before-send", loopback_only)
        return session

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """Return a boto3 client talking to the fake (cached per service and region)."""
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = _fake_session().client(
                service, region_name=region, endpoint_url=self.endpoint_url
            )
        return self._clients[key]

    def set_quota(self, region: str, code: str, value: float) -> None:
        """Make Service Quotas answer ``value`` vCPUs for an EC2 quota code in ``region``."""
        self._t.quotas[(region, code)] = float(value)

    def set_spot_price(self, region: str, instance_type: str, zone_name: str, price: float) -> None:
        """Make ``DescribeSpotPriceHistory`` in ``region`` answer this price (zone *name*)."""
        self._t.spot[(region, instance_type, zone_name)] = float(price)

    def add_reservation(
        self,
        region: str,
        instance_type: str,
        zone_name: str,
        *,
        total: int,
        available: int | None = None,
        kind: str = "default",
        owner: str = ACCOUNT_ID,
        state: str = "active",
        name: str | None = None,
    ) -> str:
        """Add a capacity reservation (``kind="capacity-block"`` for a Capacity Block).

        Returns:
            Its id (``cr-…``).
        """
        rid = f"cr-{next(self._ids):017x}"
        self._t.reservations[rid] = _Reservation(
            rid,
            region,
            instance_type,
            zone_name,
            total,
            total if available is None else available,
            kind,
            owner,
            state,
            name,
        )
        return rid

    def reservation_available(self, reservation_id: str) -> int:
        """Return the free instance count of a reservation."""
        return self._t.reservations[reservation_id].available

    def fail_next(
        self,
        action: str,
        code: str,
        *,
        message: str = "injected by multicloud_aws.testing",
        status: int = 400,
        region: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` calls of ``action`` fail with an AWS error.

        Args:
            action: API action (``RunInstances``, ``GetServiceQuota``, ...).
            code: AWS error code to answer.
            message: Error message.
            status: HTTP status (5xx for server errors, 503 for ``Unavailable``...).
            region: Only calls to this region (None = any).
            times: How many calls fail.
            delay: Seconds to wait before answering (to provoke read timeouts).
        """
        self._t.faults.append(_Fault(action, code, message, status, region, times, delay))

    # -- observation --------------------------------------------------------------------------

    def calls(self, action: str, region: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of every call of ``action`` the fake received, in order."""
        return [p for r, a, p in list(self._t.calls) if a == action and region in (None, r)]

    def placement_groups(self, region: str) -> dict[str, dict[str, Any]]:
        """Return the placement groups created in ``region``: name → strategy and tags."""
        return {name: dict(doc) for (r, name), doc in self._t.groups.items() if r == region}

    # -- workload controls --------------------------------------------------------------------

    def finish(self, region: str, instance_ids: Iterable[str], exit_code: int | None = 0) -> None:
        """Do what the host does when the workload ends: tag the exit code, power off.

        ``exit_code=None`` plays a host whose ``create-tags`` was refused (an instance profile
        without ``ec2:CreateTags``): it powers off without the exit tag.
        """
        ids = list(instance_ids)
        ec2 = self.client("ec2", region)
        if exit_code is not None:
            ec2.create_tags(Resources=ids, Tags=[{"Key": EXIT_TAG, "Value": str(exit_code)}])
        ec2.terminate_instances(InstanceIds=ids)
        self._set_reason(region, ids, "Client.InstanceInitiatedShutdown")

    def preempt(self, region: str, instance_ids: Iterable[str]) -> None:
        """Do what EC2 does when it reclaims spot capacity: terminate with the spot reason."""
        ids = list(instance_ids)
        self.client("ec2", region).terminate_instances(InstanceIds=ids)
        self._set_reason(region, ids, "Server.SpotInstanceTermination")

    @staticmethod
    def _set_reason(region: str, ids: list[str], code: str) -> None:
        backend = ec2_backends[ACCOUNT_ID][region]
        for iid in ids:
            instance = backend.get_instance(iid)
            instance.state_reason = StateReason(f"{code}: set by the fake", code)


class _Server(ThreadedMotoServer):
    """moto's threaded server with :class:`_Layer` in front of its WSGI app."""

    def __init__(self, tables: _Tables) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._tables = tables

    def _server_entry(self) -> None:
        # Same as ThreadedMotoServer._server_entry, with the layer wrapped around the app.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class _Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                """Keep test output free of one access-log line per API call."""

        app = _Layer(DomainDispatcherApplication(create_backend_app), self._tables)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=_Quiet)
        self._server_ready_event.set()
        self._server.serve_forever()


@contextlib.contextmanager
def serve(*, set_env: bool = True) -> Iterator[FakeAWS]:
    """Run a fake AWS on 127.0.0.1 for the duration of the block.

    Args:
        set_env: Also put fake credentials in ``os.environ`` (restored afterwards), so that
            nothing in the process can sign a request for a real account.

    Yields:
        The fake.
    """
    saved = {k: os.environ.get(k) for k in FAKE_ENV}
    if set_env:
        os.environ.update(FAKE_ENV)
    tables = _Tables()
    server = _Server(tables)
    server.start()
    # The fake's keys as a shared credentials file named in the options, so that another
    # process (a Ray launch task) reaches the fake through the fleet entry alone.
    secrets_dir = tempfile.TemporaryDirectory(prefix="multicloud-fake-aws-")
    credentials = os.path.join(secrets_dir.name, "credentials")
    with open(credentials, "w", encoding="utf-8") as out:
        out.write(
            f"[{FAKE_PROFILE}]\n"
            f"aws_access_key_id = {FAKE_ENV['AWS_ACCESS_KEY_ID']}\n"
            f"aws_secret_access_key = {FAKE_ENV['AWS_SECRET_ACCESS_KEY']}\n"
            f"aws_session_token = {FAKE_ENV['AWS_SESSION_TOKEN']}\n"
        )
    try:
        host, port = server.get_host_and_port()
        fake = FakeAWS(f"http://{host}:{port}", tables)
        fake.options.update(credentials_file=credentials, profile=FAKE_PROFILE)
        yield fake
    finally:
        server.stop()
        secrets_dir.cleanup()
        if set_env:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
