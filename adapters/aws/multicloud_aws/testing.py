"""A fake AWS for tests and demos: moto's server plus what moto does not know.

:func:`serve` runs moto's EC2 (and STS, SSM) on 127.0.0.1 behind a WSGI layer and yields a
:class:`FakeAWS`, which speaks the fakes' shared vocabulary (``multicloud.testing.fakecloud``):
``fail_next`` answers the next calls of an action with an AWS error (through botocore's real
error parsing), ``preempt`` reclaims spot instances as EC2 does, ``finish`` ends a gang as its
node program would, ``launches`` counts accepted ``RunInstances``. ``options`` point
``AWSProvider`` at the fake from any process.

The layer answers what moto lacks (Service Quotas for EC2, spot prices, capacity reservations
and Capacity Blocks, cluster placement groups) and refuses what EC2 refuses and moto accepts:

* ``ClientToken``: the same token with the same parameters returns the first launch's answer
  (the same reservation, no new instances); the same token with other parameters is
  ``IdempotentParameterMismatch`` (EC2 API reference, "Ensuring idempotency in Amazon EC2 API
  requests").
* A placement group that does not exist is ``InvalidPlacementGroup.Unknown`` (EC2 API error
  codes).
* A launch targeting a capacity reservation in a placement group other than the one the
  reservation was created in (or in a group when it has none) is refused: such a reservation
  does not serve the launch (EC2 User Guide, "Capacity Reservations for cluster placement
  groups"; the error code, ``InvalidParameterCombination``, is the fake's choice — EC2's
  exact code for this case is not published). A Capacity Block needs the ``capacity-block``
  market type (EC2 User Guide, "Launch instances into Capacity Blocks").

Needs the ``test`` extra (``moto[ec2,server]``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import boto3
import botocore.loaders
import botocore.session
from moto import settings as moto_settings
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason
from moto.server import ThreadedMotoServer

from multicloud.testing.fakecloud import FakeCloud
from multicloud_aws.node import EXIT_TAG
from multicloud_aws.provider import TAG_REQUEST

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
_TARGET = "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"

Start = Callable[..., Any]
Answer = Iterable[bytes]


@dataclass
class _Fault:
    code: str
    message: str
    status: int
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
    group: str | None


def _indexed(params: Mapping[str, Any], prefix: str) -> list[str]:
    """Values of ``Prefix.1``, ``Prefix.2``, ... in a query-protocol request."""
    return [
        str(params[f"{prefix}.{i}"])
        for i in itertools.takewhile(lambda i: f"{prefix}.{i}" in params, itertools.count(1))
    ]


def _xml(action: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{_EC2_NS}">'
        f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>"
    ).encode()


def _leaf(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _error(start: Start, json_protocol: bool, code: str, message: str, status: int) -> Answer:
    if json_protocol:
        start(
            f"{status} Error",
            [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)],
        )
        return [json.dumps({"__type": code, "message": message}).encode()]
    start(f"{status} Error", [("Content-Type", "text/xml")])
    return [
        (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"{_leaf('Code', code)}{_leaf('Message', message)}</Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        ).encode()
    ]


def _ok(start: Start, body: bytes, content_type: str = "text/xml") -> Answer:
    start("200 OK", [("Content-Type", content_type)])
    return [body]


class _Layer:
    """The WSGI layer in front of moto: records calls, injects faults, fills moto's gaps."""

    def __init__(self, app: Callable[..., Answer], fake: FakeAWS) -> None:
        self.app = app
        self.fake = fake

    def __call__(self, environ: dict[str, Any], start: Start) -> Answer:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match is None:
            return self.app(environ, start)  # moto's own API (/moto-api/...) and the like
        region, service = match.groups()
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            action, params = target.rsplit(".", 1)[-1], json.loads(body or b"{}")
        else:
            raw = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            raw.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
            params = {k: v[0] if len(v) == 1 else v for k, v in raw.items()}
            action = str(params.get("Action", ""))
        with self.fake.lock:
            self.fake.log.append((region, action, params))
        fault = self.fake.faults.take(action)
        if isinstance(fault, _Fault):
            time.sleep(fault.delay)
            return _error(start, bool(target), fault.code, fault.message, fault.status)
        handler = getattr(self, f"_{service.replace('-', '_')}_{action}", None)
        answer = handler(region, params, start, environ) if handler else None
        return self.app(environ, start) if answer is None else answer

    def _servicequotas_GetServiceQuota(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer | None:
        key = (region, str(params.get("QuotaCode")))
        if params.get("ServiceCode") != "ec2" or key not in self.fake.quotas:
            return None
        quota = {"ServiceCode": "ec2", "QuotaCode": key[1], "Value": self.fake.quotas[key]}
        return _ok(start, json.dumps({"Quota": quota}).encode(), "application/x-amz-json-1.1")

    def _ssm_GetParameter(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer | None:
        # AWS's public parameters (/aws/service/...), which no account can write.
        value = self.fake.public_parameters.get(str(params.get("Name")))
        if value is None:
            return None
        doc = {"Parameter": {"Name": params["Name"], "Type": "String", "Value": value}}
        return _ok(start, json.dumps(doc).encode(), "application/x-amz-json-1.1")

    def _ec2_DescribeSpotPriceHistory(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer | None:
        prices = {k: v for k, v in self.fake.spot.items() if k[0] == region}
        if not prices:
            return None
        types = set(_indexed(params, "InstanceType"))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        items = "".join(
            f"<item>{_leaf('instanceType', itype)}{_leaf('productDescription', 'Linux/UNIX')}"
            f"{_leaf('spotPrice', f'{price:.6f}')}{_leaf('timestamp', stamp)}"
            f"{_leaf('availabilityZone', zone)}</item>"
            for (_, itype, zone), price in sorted(prices.items())
            if not types or itype in types
        )
        body = f"<spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken></nextToken>"
        return _ok(start, _xml("DescribeSpotPriceHistory", body))

    def _ec2_DescribeCapacityReservations(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer:
        ids = set(_indexed(params, "CapacityReservationId"))
        filters: dict[str, list[str]] = {}
        for i in itertools.takewhile(lambda i: f"Filter.{i}.Name" in params, itertools.count(1)):
            filters[str(params[f"Filter.{i}.Name"])] = _indexed(params, f"Filter.{i}.Value")
        zone_ids = self.fake.zone_ids(region)
        items = []
        for r in sorted(self.fake.reservations.values(), key=lambda r: r.id):
            if (
                r.region != region
                or (ids and r.id not in ids)
                or ("state" in filters and r.state not in filters["state"])
                or ("tag:Name" in filters and r.name not in filters["tag:Name"])
            ):
                continue
            tags = f"<item>{_leaf('key', 'Name')}{_leaf('value', r.name)}</item>" if r.name else ""
            arn = f"arn:aws:ec2:{region}:{r.owner}:placement-group/{r.group}"
            items.append(
                f"<item>{_leaf('capacityReservationId', r.id)}{_leaf('ownerId', r.owner)}"
                f"{_leaf('instanceType', r.instance_type)}"
                f"{_leaf('instancePlatform', 'Linux/UNIX')}"
                f"{_leaf('availabilityZone', r.zone_name)}"
                f"{_leaf('availabilityZoneId', zone_ids.get(r.zone_name, ''))}"
                f"{_leaf('totalInstanceCount', r.total)}"
                f"{_leaf('availableInstanceCount', r.available)}{_leaf('state', r.state)}"
                f"{_leaf('reservationType', r.kind)}"
                + (_leaf("placementGroupArn", arn) if r.group else "")
                + f"<tagSet>{tags}</tagSet></item>"
            )
        body = f"<capacityReservationSet>{''.join(items)}</capacityReservationSet>"
        return _ok(start, _xml("DescribeCapacityReservations", body))

    def _ec2_CreatePlacementGroup(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer:
        name = str(params.get("GroupName", ""))
        tags = {
            str(params[f"TagSpecification.1.Tag.{i}.Key"]): str(
                params.get(f"TagSpecification.1.Tag.{i}.Value", "")
            )
            for i in range(1, 51)
            if f"TagSpecification.1.Tag.{i}.Key" in params
        }
        with self.fake.lock:
            if (region, name) in self.fake.groups:
                message = f"The placement group '{name}' already exists."
                return _error(start, False, "InvalidPlacementGroup.Duplicate", message, 400)
            self.fake.groups[(region, name)] = {"strategy": params.get("Strategy"), "tags": tags}
        body = (
            f"<placementGroup>{_leaf('groupName', name)}"
            f"{_leaf('strategy', params.get('Strategy', 'cluster'))}"
            f"{_leaf('state', 'available')}</placementGroup>"
        )
        return _ok(start, _xml("CreatePlacementGroup", body))

    def _ec2_DeletePlacementGroup(
        self, region: str, params: dict[str, Any], start: Start, environ: Any
    ) -> Answer:
        name = str(params.get("GroupName", ""))
        with self.fake.lock:
            group = self.fake.groups.get((region, name))
            if group is None:
                message = f"The Placement Group '{name}' is unknown."
                return _error(start, False, "InvalidPlacementGroup.Unknown", message, 400)
            # moto does not record an instance's group; the gang's request tag does.
            request = group["tags"].get(TAG_REQUEST)
            backend = ec2_backends[ACCOUNT_ID][region]
            if request and any(
                backend.tags.get(i.id, {}).get(TAG_REQUEST) == request and i.state != "terminated"
                for i in backend.all_instances()
            ):
                message = f"The placement group '{name}' is in use and may not be deleted."
                return _error(start, False, "InvalidPlacementGroup.InUse", message, 400)
            del self.fake.groups[(region, name)]
        return _ok(start, _xml("DeletePlacementGroup", _leaf("return", "true")))

    def _ec2_RunInstances(
        self, region: str, params: dict[str, Any], start: Start, environ: dict[str, Any]
    ) -> Answer:
        token = (region, str(params.get("ClientToken", uuid.uuid4())))
        with self.fake.lock:
            first = self.fake.tokens.get(token)
        if first is not None:
            if first[0] != params:
                message = "The client token you have provided is associated with a resource "
                message += "that is already deleted or with different parameters."
                return _error(start, False, "IdempotentParameterMismatch", message, 400)
            return _ok(start, first[1])
        refused = self._refuse_launch(region, params)
        if refused is not None:
            return _error(start, False, "InvalidParameterCombination", refused, 400)
        group = params.get("Placement.GroupName")
        if group and (region, str(group)) not in self.fake.groups:
            message = f"The Placement Group '{group}' is unknown."
            return _error(start, False, "InvalidPlacementGroup.Unknown", message, 400)
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            answer.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        start(answer["status"], answer["headers"])
        if str(answer["status"]).startswith("200"):
            with self.fake.lock:
                self.fake.tokens[token] = (params, body)
                self.fake.launches[token[1]] += 1
                r = self.fake.reservations.get(str(params.get(_TARGET)))
                if r is not None:
                    r.available = max(0, r.available - int(params.get("MaxCount", 1)))
        return [body]

    def _refuse_launch(self, region: str, params: Mapping[str, Any]) -> str | None:
        r = self.fake.reservations.get(str(params.get(_TARGET)))
        if r is None:
            return None
        group = params.get("Placement.GroupName")
        if group is not None and group != r.group:
            where = f"placement group {r.group}" if r.group else "no placement group"
            return f"Capacity Reservation {r.id} is in {where}; it cannot serve group {group}"
        if r.kind == "capacity-block" and params.get("InstanceMarketOptions.MarketType") != (
            "capacity-block"
        ):
            return f"Capacity Block {r.id} needs InstanceMarketOptions MarketType capacity-block"
        return None


_LOADER = botocore.loaders.create_loader()
"""One model loader for every session the fake hands out (loading EC2's model per session
would dominate the test run)."""


def _fake_session() -> Any:
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.Session(
        aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=FAKE_ENV["AWS_DEFAULT_REGION"],
        botocore_session=core,
    )


class FakeAWS(FakeCloud):
    """A running fake: adapter options, tables to fill, and the shared workload controls.

    Attributes:
        endpoint_url: The server's URL (``http://127.0.0.1:PORT``).
        options: Fleet-entry options pointing ``AWSProvider`` at the server.
    """

    def __init__(self) -> None:
        super().__init__()
        self.endpoint_url = ""
        self.options: dict[str, Any] = {
            "image_id": DEFAULT_AMI,
            "max_attempts": 1,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
        }
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        self.quotas: dict[tuple[str, str], float] = {}
        self.spot: dict[tuple[str, str, str], float] = {}
        self.reservations: dict[str, _Reservation] = {}
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[tuple[str, str], tuple[dict[str, Any], bytes]] = {}
        self.public_parameters: dict[str, str] = {}
        """AWS's public SSM parameters (``/aws/service/...``) → value, in every region."""
        self._ids = itertools.count(1)
        self._clients: dict[tuple[str, str], Any] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for another process that should reach the fake through plain boto3."""
        return {**FAKE_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    def reset(self) -> None:
        """Forget every instance, table, fault, token and recorded call.

        Only the instances are dropped from moto's backends: rebuilding a region's backend
        (default VPC, subnets, images) costs up to a second.
        """
        for backend in list((ec2_backends.get(ACCOUNT_ID) or {}).values()):
            backend.reservations.clear()
        for table in (
            self.quotas,
            self.spot,
            self.reservations,
            self.groups,
            self.tokens,
            self.public_parameters,
        ):
            table.clear()
        self.log.clear()
        self.faults.clear()
        self.launches.clear()

    def session(self) -> Any:
        """Return a boto3 session with fake credentials that refuses to leave 127.0.0.1."""
        session = _fake_session()

        def loopback_only(request: Any, **_: Any) -> None:
            if urlsplit(str(request.url)).hostname != "127.0.0.1":
                raise RuntimeError(f"request to {request.url} would leave 127.0.0.1")

        session.events.register("before-send", loopback_only)
        return session

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """Return a boto3 client talking to the fake (cached per service and region)."""
        if (service, region) not in self._clients:
            self._clients[(service, region)] = _fake_session().client(
                service, region_name=region, endpoint_url=self.endpoint_url
            )
        return self._clients[(service, region)]

    @staticmethod
    def zone_ids(region: str) -> dict[str, str]:
        """Return the region's zone names → zone ids."""
        backend = ec2_backends[ACCOUNT_ID][region]
        return {z.name: z.zone_id for z in backend.describe_availability_zones()}

    def set_quota(self, region: str, code: str, value: float) -> None:
        """Make Service Quotas answer ``value`` vCPUs for an EC2 quota code in ``region``."""
        self.quotas[(region, code)] = float(value)

    def set_spot_price(self, region: str, instance_type: str, zone_name: str, price: float) -> None:
        """Make ``DescribeSpotPriceHistory`` in ``region`` answer this price (zone *name*)."""
        self.spot[(region, instance_type, zone_name)] = float(price)

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
        placement_group: str | None = None,
    ) -> str:
        """Add a capacity reservation (``kind="capacity-block"`` for a Capacity Block).

        Args:
            placement_group: The cluster placement group it was created in (created too).

        Returns:
            Its id (``cr-…``).
        """
        rid = f"cr-{next(self._ids):017x}"
        free = total if available is None else available
        self.reservations[rid] = _Reservation(
            rid,
            region,
            instance_type,
            zone_name,
            total,
            free,
            kind,
            owner,
            state,
            name,
            placement_group,
        )
        if placement_group:
            self.groups[(region, placement_group)] = {"strategy": "cluster", "tags": {}}
        return rid

    def reservation_available(self, reservation_id: str) -> int:
        """Return the free instance count of a reservation."""
        return self.reservations[reservation_id].available

    def fail_next(
        self,
        operation: str,
        error: str,
        *,
        times: int = 1,
        status: int = 400,
        message: str = "injected by multicloud_aws.testing",
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` calls of an action with an AWS error.

        Args:
            operation: API action (``RunInstances``, ``GetServiceQuota``, ...).
            error: AWS error code.
            times: How many calls fail.
            status: HTTP status (EC2 sends ``InsufficientInstanceCapacity`` with 500).
            message: Error message.
            delay: Seconds to wait before answering (to provoke read timeouts).
        """
        self.faults.add(operation, _Fault(error, message, status, delay), times)

    def calls(self, action: str, region: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of every call of ``action`` the fake received, in order."""
        return [p for r, a, p in list(self.log) if a == action and region in (None, r)]

    def user_data(self, index: int = -1) -> str:
        """Return the node program of a ``RunInstances`` call, exactly as the SDK sent it."""
        return base64.b64decode(self.calls("RunInstances")[index]["UserData"]).decode()

    def placement_groups(self, region: str) -> dict[str, dict[str, Any]]:
        """Return the placement groups in ``region``: name → strategy and tags."""
        return {name: dict(doc) for (r, name), doc in self.groups.items() if r == region}

    def preempt(self, workload: str) -> None:
        """Reclaim spot instances as EC2 does: terminated, ``Server.SpotInstanceTermination``.

        Args:
            workload: A handle id (instance ids, comma-separated) or some of its instances.
        """
        self._end(workload, "Server.SpotInstanceTermination")

    def finish(self, workload: str, exit_code: int | None = 0) -> None:
        """End instances as their node program does: tag the exit code, power off.

        Args:
            workload: A handle id (instance ids, comma-separated) or some of its instances.
            exit_code: The command's exit code; None plays a node whose ``create-tags`` was
                refused (no instance profile): it powers off untagged.
        """
        tags = {EXIT_TAG: str(exit_code)} if exit_code is not None else None
        self._end(workload, "Client.InstanceInitiatedShutdown", tags)

    def _end(self, workload: str, reason: str, tags: dict[str, str] | None = None) -> None:
        ids = set(workload.split(","))
        for backend in list((ec2_backends.get(ACCOUNT_ID) or {}).values()):
            mine = [i.id for i in backend.all_instances() if i.id in ids]
            if not mine:
                continue
            if tags:
                backend.create_tags(mine, tags)
            backend.terminate_instances(mine)
            for iid in mine:
                backend.get_instance(iid).state_reason = StateReason(f"{reason}: fake", reason)


class _Server(ThreadedMotoServer):
    """moto's threaded server with :class:`_Layer` in front of its WSGI app."""

    def __init__(self, fake: FakeAWS) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._fake = fake

    def _server_entry(self) -> None:
        # ThreadedMotoServer._server_entry, with the layer wrapped around the app.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class _Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                """Keep test output free of one access-log line per call."""

        app = _Layer(DomainDispatcherApplication(create_backend_app), self._fake)
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
    # EC2 refuses an instance type it does not sell in the zone; moto only when told to.
    validating = moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION
    moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    fake = FakeAWS()
    server = _Server(fake)
    server.start()
    # The fake's keys as a shared credentials file named in the options, so that another
    # process (a Ray launch task) reaches the fake through the fleet entry alone.
    secrets_dir = tempfile.TemporaryDirectory(prefix="multicloud-fake-aws-")
    credentials = os.path.join(secrets_dir.name, "credentials")
    with open(credentials, "w", encoding="utf-8") as out:
        out.write(
            f"[{FAKE_PROFILE}]\naws_access_key_id = {FAKE_ENV['AWS_ACCESS_KEY_ID']}\n"
            f"aws_secret_access_key = {FAKE_ENV['AWS_SECRET_ACCESS_KEY']}\n"
            f"aws_session_token = {FAKE_ENV['AWS_SESSION_TOKEN']}\n"
        )
    try:
        host, port = server.get_host_and_port()
        fake.endpoint_url = f"http://{host}:{port}"
        fake.options.update(
            endpoint_url=fake.endpoint_url, credentials_file=credentials, profile=FAKE_PROFILE
        )
        yield fake
    finally:
        server.stop()
        secrets_dir.cleanup()
        moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = validating
        for key, value in saved.items() if set_env else ():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
