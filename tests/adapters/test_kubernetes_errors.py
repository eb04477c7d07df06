"""The Kubernetes adapters' error table, row by row, through the real kubernetes client.

Errors are answered by the fake API server (``fail_next``), so each travels the client's own
HTTP handling before the kit's error boundary translates it: first the Kubernetes rows
(``multicloud_kubernetes.errors.RULES``), then the kit's one HTTP fallback. No SDK exception
may leak. Every row runs on the generic adapter (with Kueue) and on its CoreWeave preset.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from multicloud_coreweave import CoreWeaveProvider
from multicloud_coreweave.testing import serve as serve_coreweave
from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes.errors import RULES, boundary, to_failure
from multicloud_kubernetes.testing import FakeCluster, serve, write_kubeconfig

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import Handle, LaunchSpec, MarketKind, ResourceRequest

QUOTA = (
    "Forbidden: jobs.batch \"x\" is forbidden: exceeded quota: compute, requested: "
    "count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10"
)
WEBHOOK = ("Forbidden: admission webhook \"vjob.kb.io\" denied the request: metadata.labels"
           "[kueue.x-k8s.io/queue-name]: Invalid value: \"Bad_Queue\"")


def rule(words: str) -> str:
    """The name of the Kubernetes row whose name says ``words``."""
    return next(r.name for r in RULES if words in r.name)


# (the API server's answer, the error, the row of the table that decides it)
ROWS: list[tuple[str, type[ProviderError], str]] = [
    (QUOTA, QuotaError, rule("ResourceQuota")),
    (WEBHOOK, InvalidRequestError, rule("admission webhook")),
    ("Unauthorized", AuthError, "unauthenticated (401)"),
    ("Forbidden: jobs.batch is forbidden: User \"x\" cannot create", AuthError,
     "permission denied (403)"),
    ("BadRequest: bad request body", InvalidRequestError, "bad request (other 4xx)"),
    ("Invalid: spec.template.spec.containers[0].image: Required value", InvalidRequestError,
     "bad request (other 4xx)"),
    ("NotFound: namespaces \"jobs\" not found", InvalidRequestError, "bad request (other 4xx)"),
    ("MethodNotAllowed", InvalidRequestError, "bad request (other 4xx)"),
    ("Conflict: the object has been modified", TransientError, "conflict (409)"),
    ("TooManyRequests: please try again later", TransientError, "throttled (429)"),
    ("InternalError: etcdserver: request timed out", TransientError, "server error (5xx)"),
    ("ServiceUnavailable", TransientError, "server error (5xx)"),
    ("Timeout: the server was unable to return a response", TransientError,
     "server error (5xx)"),
]


@dataclass
class Flavour:
    """One adapter on its fake: the generic one with Kueue, or the CoreWeave preset."""

    name: str
    kube: FakeCluster
    make: Callable[..., KubernetesProvider]

    def provider(self, **options: Any) -> KubernetesProvider:
        return self.make(**{**self.kube.options, **options})


@pytest.fixture(params=["kubernetes", "coreweave"])
def flavour(request: pytest.FixtureRequest) -> Iterator[Flavour]:
    if request.param == "coreweave":
        with serve_coreweave() as kube:
            kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
            yield Flavour("coreweave", kube, CoreWeaveProvider)
        return
    with serve(kueue="v1beta2") as kube:
        kube.add_nodes(2, region="US-EAST-04")
        kube.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "64"})
        kube.kueue.add_local_queue("team", "gpus")
        yield Flavour("kubernetes", kube, lambda **o: KubernetesProvider(
            price_card={"H100": 40.0}, local_queue="team", **o))


def _spec(nodes: int = 1, ray: bool = False) -> LaunchSpec:
    return LaunchSpec(job_id="err", job_name="err", attempt=1, nodes=nodes,
                      market=MarketKind.ON_DEMAND, image="busybox:1.36", command="true", ray=ray)


def _call(provider: KubernetesProvider, what: str) -> Callable[[], object]:
    """The adapter call that the fake's error answers."""
    if what in ("launch", "launch-rayjob"):
        (offer,) = provider.offers(ResourceRequest())
        spec = _spec(2, ray=what == "launch-rayjob")
        return lambda: provider.launch(offer, spec, request_id=what)
    handle = Handle(provider.fleet_name, "mc-x", "r", "US-EAST-04", None, "t", 1,
                    MarketKind.ON_DEMAND, "j")
    return {
        "check": provider.check,
        "offers": lambda: provider.offers(ResourceRequest()),
        "status": lambda: provider.status([handle]),
        "terminate": lambda: provider.terminate(handle, request_id="t"),
        "owned": lambda: provider.owned("default"),
    }[what]


# Which operation of the API each adapter call is failed at.
CALLS = [
    ("check", "list Job"),
    ("offers", "list Node"),
    ("launch", "create Job"),
    ("launch-rayjob", "create RayJob"),
    ("status", "list Job"),
    ("terminate", "delete Job"),
    ("owned", "list Job"),
]
# Kueue's own calls (the generic flavour submits through a LocalQueue).
KUEUE_CALLS = [("check", "get LocalQueue"), ("launch", "get LocalQueue")]


def _expect(flavour: Flavour, what: str, operation: str, answer: str,
            expected: type[ProviderError], row: str) -> None:
    provider = flavour.provider()
    call = _call(provider, what)
    flavour.kube.fail_next(operation, answer)
    with pytest.raises(ProviderError) as err:
        call()
    assert type(err.value) is expected, (what, answer, err.value)
    cause = err.value.__cause__
    assert isinstance(cause, ApiException) and not isinstance(err.value, ApiException)
    failure = to_failure(cause)
    assert failure is not None
    assert getattr(provider.errors.rule_for(failure), "name", None) == row
    assert err.value.provider == flavour.name
    if expected is QuotaError:
        # Scoped to the region where the call was about one (a launch, a delete).
        regional = what.startswith("launch") or what == "terminate"
        assert err.value.scope == (f"{flavour.name}/US-EAST-04" if regional else flavour.name)


@pytest.mark.parametrize(("what", "operation"), CALLS)
@pytest.mark.parametrize(("answer", "expected", "row"), ROWS)
def test_api_errors_are_translated_row_by_row(
    flavour: Flavour, what: str, operation: str, answer: str, expected: type[ProviderError],
    row: str,
) -> None:
    if what == "terminate" and answer.startswith("NotFound"):
        pytest.skip("a 404 on delete means gone: a no-op (tested below)")
    _expect(flavour, what, operation, answer, expected, row)


@pytest.mark.parametrize("flavour", ["kubernetes"], indirect=True)
@pytest.mark.parametrize(("what", "operation"), KUEUE_CALLS)
@pytest.mark.parametrize(("answer", "expected", "row"), [
    r for r in ROWS if not r[0].startswith("NotFound")])
def test_kueue_reads_go_through_the_same_table(
    flavour: Flavour, what: str, operation: str, answer: str, expected: type[ProviderError],
    row: str,
) -> None:
    _expect(flavour, what, operation, answer, expected, row)


def test_not_found_on_terminate_is_a_noop(flavour: Flavour) -> None:
    provider = flavour.provider()
    flavour.kube.fail_next("delete Job", "NotFound")
    _call(provider, "terminate")()


def test_already_exists_on_create_is_decided_by_the_launch(flavour: Flavour) -> None:
    # Answered for a name nobody created: it must be the same launch, so the re-read
    # finds nothing and the AlreadyExists surfaces, translated (409: transient).
    provider = flavour.provider()
    flavour.kube.fail_next("create Job", "AlreadyExists")
    with pytest.raises(TransientError):
        _call(provider, "launch")()


def test_unschedulable_gang_is_a_capacity_error(flavour: Flavour) -> None:
    provider = flavour.provider()
    (offer,) = provider.offers(ResourceRequest())
    with pytest.raises(CapacityError) as err:
        provider.launch(offer, _spec(3), request_id="big")
    assert err.value.scope == f"{flavour.name}/US-EAST-04"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("adapter", [KubernetesProvider, CoreWeaveProvider])
def test_connection_refused_is_transient(tmp_path: Path, adapter: type[KubernetesProvider]) -> None:
    config = tmp_path / "kubeconfig"
    write_kubeconfig(config, f"http://127.0.0.1:{_closed_port()}")
    provider = adapter(kubeconfig=str(config), request_timeout_s=2.0)
    for call in (provider.check, lambda: provider.offers(ResourceRequest())):
        with pytest.raises(TransientError):
            call()


@pytest.mark.parametrize("problem", ["missing", "bad-context", "bad-token", "not-yaml-mapping"])
def test_credential_problems_are_auth_errors(
    flavour: Flavour, tmp_path: Path, problem: str
) -> None:
    kube = flavour.kube
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
        flavour.make(**options).check()


@pytest.mark.parametrize("adapter", [KubernetesProvider, CoreWeaveProvider])
def test_in_cluster_outside_a_pod_is_an_auth_error(adapter: type[KubernetesProvider]) -> None:
    with pytest.raises(AuthError, match="configuration"):
        adapter(in_cluster=True).check()


def _validation_error() -> Exception:
    from kubernetes import client

    try:
        client.V1JobSpec(completions="many", template=client.V1PodTemplateSpec())
    except Exception as exc:
        return exc
    raise AssertionError("the client model accepted a non-integer")


@pytest.mark.parametrize(
    ("exc", "expected", "row"),
    [
        (ConfigException("Invalid kube-config file. No configuration found."), AuthError,
         rule("configuration unusable")),
        (urllib3.exceptions.SSLError("certificate verify failed"), AuthError, rule("TLS")),
        (urllib3.exceptions.MaxRetryError(None, "/api", urllib3.exceptions.SSLError("bad cert")),  # type: ignore[arg-type]
         AuthError, rule("TLS")),
        (_validation_error(), InvalidRequestError, rule("client's own models")),
        (urllib3.exceptions.MaxRetryError(None, "/api", "refused"), TransientError,  # type: ignore[arg-type]
         "timeout or connection failure"),
        (urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"), TransientError,  # type: ignore[arg-type]
         "timeout or connection failure"),
        (ConnectionResetError("reset"), TransientError, "timeout or connection failure"),
        (ApiException(status=0, reason="connection dropped"), TransientError,
         "timeout or connection failure"),
    ],
)
def test_rows_without_an_http_answer(
    exc: BaseException, expected: type[ProviderError], row: str
) -> None:
    errors = boundary("cw")
    failure = to_failure(exc)
    assert failure is not None and getattr(errors.rule_for(failure), "name", None) == row
    error = errors.translate(exc, region="US-EAST-04")
    assert type(error) is expected and getattr(error, "provider", None) == "cw"


def test_a_programming_error_passes_the_boundary() -> None:
    assert boundary("cw").translate(KeyError("bug")) is not None
    assert to_failure(KeyError("bug")) is None
