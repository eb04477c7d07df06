"""Error translation of the CoreWeave adapter: every mapping of the issue, table-driven.

Errors are injected into the fake API server, so each one travels through the kubernetes
client's real HTTP handling before the adapter translates it; no SDK exception may leak.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from multicloud_coreweave import CoreWeaveProvider
from multicloud_coreweave.errors import translate
from multicloud_coreweave.testing import FakeKube, serve, write_kubeconfig

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import Handle, LaunchSpec, MarketKind, ResourceRequest

QUOTA_MESSAGE = (
    'jobs.batch "x" is forbidden: exceeded quota: compute, requested: count/jobs.batch=1, '
    "used: count/jobs.batch=10, limited: count/jobs.batch=10"
)

# (status, reason, message, expected error)
API_ERRORS: list[tuple[int, str, str, type[ProviderError]]] = [
    (403, "Forbidden", QUOTA_MESSAGE, QuotaError),
    (401, "Unauthorized", "Unauthorized", AuthError),
    (403, "Forbidden", 'jobs.batch is forbidden: User "x" cannot create resource', AuthError),
    (400, "BadRequest", "bad request body", InvalidRequestError),
    (
        422,
        "Invalid",
        'Job.batch "x" is invalid: spec.template.spec.containers[0].image',
        InvalidRequestError,
    ),
    (429, "TooManyRequests", "too many requests, please try again later", TransientError),
    (500, "InternalError", "etcdserver: request timed out", TransientError),
    (
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
        TransientError,
    ),
    (
        504,
        "Timeout",
        "the server was unable to return a response in the time allotted",
        TransientError,
    ),
]


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        k.add_nodes(2, gpu_class="H100_NVLINK_80GB")
        yield k


def _spec(nodes: int = 1) -> LaunchSpec:
    return LaunchSpec(
        job_id="err",
        job_name="err",
        attempt=1,
        nodes=nodes,
        market=MarketKind.ON_DEMAND,
        image="busybox:1.36",
        command="true",
    )


def _call(provider: CoreWeaveProvider, what: str) -> Callable[[], object]:
    """The adapter call that the injected error hits."""
    if what == "check":
        return provider.check
    if what == "offers":
        return lambda: provider.offers(ResourceRequest())
    if what == "launch":
        (offer,) = provider.offers(ResourceRequest())
        return lambda: provider.launch(offer, _spec(), request_id="err-1")
    if what == "launch-rayjob":
        (offer,) = provider.offers(ResourceRequest())
        return lambda: provider.launch(offer, _spec(2), request_id="err-2")
    handle = Handle("coreweave", "mc-x", "r", "US-EAST-04", None, "t", 1, MarketKind.ON_DEMAND, "j")
    if what == "status":
        return lambda: provider.status([handle])
    if what == "terminate":
        return lambda: provider.terminate(handle, request_id="t")
    if what == "owned":
        return lambda: provider.owned("default")
    raise AssertionError(what)


# Which request each adapter call is failed at.
CALLS = [
    ("check", "GET", r"/jobs$"),
    ("offers", "GET", r"/nodes$"),
    ("launch", "POST", r"/jobs$"),
    ("launch-rayjob", "POST", r"/rayjobs$"),
    ("status", "GET", r"/jobs$"),
    ("terminate", "DELETE", r"/jobs/"),
    ("owned", "GET", r"/jobs$"),
]


@pytest.mark.parametrize(("what", "method", "path"), CALLS)
@pytest.mark.parametrize(("status", "reason", "message", "expected"), API_ERRORS)
def test_api_errors_are_translated(
    kube: FakeKube,
    what: str,
    method: str,
    path: str,
    status: int,
    reason: str,
    message: str,
    expected: type[ProviderError],
) -> None:
    provider = CoreWeaveProvider(**kube.options)
    call = _call(provider, what)
    kube.inject(status, method=method, path=path, reason=reason, message=message)
    with pytest.raises(ProviderError) as err:
        call()
    assert type(err.value) is expected, (what, status, err.value)
    assert not isinstance(err.value, ApiException)
    assert isinstance(err.value.__cause__, ApiException)
    assert err.value.provider == "coreweave"
    if expected is QuotaError:
        launching = what.startswith("launch")
        assert err.value.scope == ("coreweave/US-EAST-04" if launching else "coreweave")


def test_not_found_on_terminate_is_a_noop(kube: FakeKube) -> None:
    provider = CoreWeaveProvider(**kube.options)
    kube.inject(404, method="DELETE", path=r"/jobs/", reason="NotFound")
    _call(provider, "terminate")()


def test_unschedulable_gang_is_a_capacity_error(kube: FakeKube) -> None:
    provider = CoreWeaveProvider(**kube.options)
    (offer,) = provider.offers(ResourceRequest())
    with pytest.raises(CapacityError) as err:
        provider.launch(offer, _spec(3), request_id="big")
    assert err.value.scope == "coreweave/US-EAST-04"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    write_kubeconfig(config, f"http://127.0.0.1:{_closed_port()}")
    provider = CoreWeaveProvider(kubeconfig=str(config), request_timeout_s=2.0)
    for call in (provider.check, lambda: provider.offers(ResourceRequest())):
        with pytest.raises(TransientError):
            call()


@pytest.mark.parametrize("problem", ["missing", "bad-context", "bad-token", "not-yaml-mapping"])
def test_credential_problems_are_auth_errors(kube: FakeKube, tmp_path: Path, problem: str) -> None:
    options: dict[str, Any] = dict(kube.options)
    if problem == "missing":
        options["kubeconfig"] = str(tmp_path / "nope")
    elif problem == "not-yaml-mapping":
        (tmp_path / "garbage").write_text("just a string\n")
        options["kubeconfig"] = str(tmp_path / "garbage")
    elif problem == "bad-context":
        options["context"] = "no-such-context"
    else:
        config = tmp_path / "kubeconfig"
        write_kubeconfig(config, kube.url, token="wrong-token")
        options["kubeconfig"] = str(config)
    with pytest.raises(AuthError):
        CoreWeaveProvider(**options).check()


def test_in_cluster_outside_a_pod_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="configuration"):
        CoreWeaveProvider(in_cluster=True).check()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ApiException(status=403, reason="Forbidden"), AuthError),
        (ApiException(status=409, reason="Conflict"), TransientError),
        (ApiException(status=502, reason="Bad Gateway"), TransientError),
        (ConfigException("Invalid kube-config file. No configuration found."), AuthError),
        (urllib3.exceptions.MaxRetryError(None, "/api", "refused"), TransientError),  # type: ignore[arg-type]
        (urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"), TransientError),  # type: ignore[arg-type]
        (urllib3.exceptions.SSLError("certificate verify failed"), AuthError),
        (ConnectionResetError("reset"), TransientError),
        (ValueError("bad value for a typed field"), InvalidRequestError),
    ],
)
def test_translate_table(exc: BaseException, expected: type[ProviderError]) -> None:
    error = translate(exc, provider="cw", scope="cw/US-EAST-04")
    assert type(error) is expected
    assert error.provider == "cw"
