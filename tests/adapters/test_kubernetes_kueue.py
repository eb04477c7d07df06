"""Kueue decides when: admission, waiting, preemption and finishing, as the adapter reads them.

First the reader alone (a Workload's conditions → a workload status, table-driven), then the
adapter against the fake cluster running Kueue, through the real kubernetes client: a
ClusterQueue with room for one 2-node H100 gang, a LocalQueue ``team`` on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes.kueue import kueue_status
from multicloud_kubernetes.status import Reading
from multicloud_kubernetes.testing import FakeKube, serve

from multicloud.errors import InvalidRequestError, QuotaError, error_scope
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
)

S = WorkloadState
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
SCOPE = "lab/us-east-1"
READING = Reading(SCOPE, 60.0, NOW, queue_grace_s=300.0)
Obj = dict[str, Any]


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job(*, queued: bool = True, suspend: bool = True, deployment: str | None = None,
         age: float = 10) -> Obj:
    labels = {"kueue.x-k8s.io/queue-name": "team"} if queued else {}
    obj: Obj = {"kind": "RayJob" if deployment else "Job",
                "metadata": {"name": "mc-x", "uid": "u1", "labels": labels,
                             "creationTimestamp": _ago(age)},
                "spec": {"suspend": suspend}, "status": {}}
    if deployment:
        obj["status"]["jobDeploymentStatus"] = deployment
    return obj


def _wl(*conditions: tuple[str, str, str, float], active: bool = True, age: float = 100) -> Obj:
    """A Workload with ``(type, status, reason, seconds ago)`` conditions."""
    return {"metadata": {"name": "job-mc-x-1a2b3", "creationTimestamp": _ago(age)},
            "spec": {"queueName": "team", "active": active},
            "status": {"conditions": [
                {"type": t, "status": st, "reason": r, "message": f"{t} says {r}",
                 "lastTransitionTime": _ago(s)} for t, st, r, s in conditions]}}


ADMITTED = (("QuotaReserved", "True", "QuotaReserved", 50), ("Admitted", "True", "Admitted", 50))
PREEMPTED = (("Evicted", "True", "Preempted", 10), ("Preempted", "True", "InClusterQueue", 10),
             ("QuotaReserved", "False", "Pending", 10), ("Requeued", "True", "Preempted", 10))

# (case, the Job or RayJob, its Workload, the reading: state, blocked, words; None = the
# Job and its pods decide)
TABLE: list[tuple[str, Obj, Obj | None, tuple[S, bool, str] | None]] = [
    ("not Kueue's", _job(queued=False, suspend=False), None, None),
    ("queued, no Workload yet", _job(), None, (S.PROVISIONING, False, "no Kueue Workload")),
    ("queued, Kueue never made a Workload", _job(age=600), None,
     (S.PREEMPTED, True, "is Kueue managing")),
    ("pending for quota", _job(), _wl(("QuotaReserved", "False", "Pending", 100)),
     (S.PROVISIONING, False, "queued in LocalQueue team (Pending): QuotaReserved says")),
    ("pending past queue_grace_s", _job(), _wl(("QuotaReserved", "False", "Pending", 900),
                                               age=900),
     (S.PREEMPTED, True, "queued in LocalQueue team")),
    ("inadmissible", _job(), _wl(("QuotaReserved", "False", "Inadmissible", 10)),
     (S.PROVISIONING, False, "(Inadmissible)")),
    ("not yet looked at", _job(), _wl(), (S.PROVISIONING, False, "waiting for quota")),
    ("quota reserved, checks pending", _job(), _wl(ADMITTED[0]),
     (S.PROVISIONING, False, "admission checks pending")),
    ("admitted, not yet unsuspended", _job(), _wl(*ADMITTED), (S.PROVISIONING, False, "admitted")),
    ("admitted RayJob KubeRay still shows Suspended", _job(suspend=False, deployment="Suspended"),
     _wl(*ADMITTED), (S.PROVISIONING, False, "starting")),
    ("admitted and running", _job(suspend=False), _wl(*ADMITTED), None),
    ("preempted, requeued", _job(), _wl(*PREEMPTED),
     (S.PROVISIONING, False, "evicted (Preempted/InClusterQueue) and requeued")),
    ("preempted past queue_grace_s", _job(), _wl(
        ("Evicted", "True", "Preempted", 900), ("QuotaReserved", "False", "Pending", 900)),
     (S.PREEMPTED, True, "evicted (Preempted)")),
    ("PodsReady timeout, requeued with back-off", _job(), _wl(
        ("Evicted", "True", "PodsReadyTimeout", 10)), (S.PROVISIONING, False, "PodsReadyTimeout")),
    ("ClusterQueue stopped", _job(), _wl(("Evicted", "True", "ClusterQueueStopped", 10)),
     (S.PROVISIONING, False, "ClusterQueueStopped")),
    ("requeuing limit reached (v0.9+)", _job(), _wl(
        ("Evicted", "True", "DeactivatedDueToRequeuingLimitExceeded", 1)),
     (S.PREEMPTED, True, "deactivated")),
    ("deactivated (before v0.9)", _job(), _wl(("Evicted", "True", "InactiveWorkload", 1)),
     (S.PREEMPTED, True, "deactivated")),
    ("spec.active false", _job(), _wl(active=False), (S.PREEMPTED, True, "deactivated")),
    ("readmitted after a preemption", _job(suspend=False), _wl(
        ("Evicted", "False", "QuotaReserved", 5), ("Preempted", "False", "QuotaReserved", 5),
        *ADMITTED), None),
    ("finished", _job(suspend=False), _wl(*ADMITTED, ("Finished", "True", "Succeeded", 1)),
     None),
]


@pytest.mark.parametrize(("case", "obj", "wl", "expected"), TABLE, ids=[r[0] for r in TABLE])
def test_a_workload_reads_as_kueue_says(
    case: str, obj: Obj, wl: Obj | None, expected: tuple[S, bool, str] | None
) -> None:
    status = kueue_status(obj, wl, READING)
    if expected is None:
        assert status is None, status
        return
    state, blocked, words = expected
    assert status is not None and status.state is state, status
    assert (status.blocked_scope == SCOPE) is blocked and words in status.message, status


def test_without_a_queue_grace_a_queued_workload_waits_for_ever() -> None:
    reading = dataclasses.replace(READING, queue_grace_s=None)
    wl = _wl(("QuotaReserved", "False", "Pending", 86_400), age=86_400)
    status = kueue_status(_job(), wl, reading)
    assert status is not None and status.state is S.PROVISIONING


# ---------------------------------------------------------------------------- the adapter


@pytest.fixture(params=["v1", "v1beta2", "v1beta1"])
def kube(request: pytest.FixtureRequest) -> Iterator[FakeKube]:
    with serve(kueue=request.param) as k:
        k.add_nodes(4, region="us-east-1")
        k.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16"})  # one 2-node gang
        k.kueue.add_local_queue("team", "gpus")
        yield k


def _provider(kube: FakeKube, **options: Any) -> KubernetesProvider:
    return KubernetesProvider(**{**kube.options, "fleet_name": "lab", "price_card": {
        "H100": 40.0}, "local_queue": "team", "queue_grace_s": 300.0, **options})


def _launch(provider: KubernetesProvider, job: str, *, nodes: int = 2,
            ray: bool = False) -> Handle:
    (offer,) = provider.offers(ResourceRequest())
    spec = LaunchSpec(job, job, 1, nodes, MarketKind.ON_DEMAND, image="ghcr.io/acme/t:1",
                      command="torchrun train.py", install_id="i", ray=ray)
    return provider.launch(offer, spec, request_id=f"req-{job}")


def _read(provider: KubernetesProvider, handle: Handle) -> WorkloadStatus:
    return provider.status([handle])[handle.id]


def _sent(kube: FakeKube, plural: str) -> Obj:
    """The body of the last create of ``plural``, as the client sent it."""
    call = next(r for r in reversed(kube.requests) if r.method == "POST"
                and r.path.endswith(f"/{plural}"))
    assert isinstance(call.body, dict)
    return call.body


@pytest.mark.parametrize(("ray", "plural"), [(False, "jobs"), (True, "rayjobs")])
def test_a_workload_is_submitted_through_the_local_queue_suspended(
    kube: FakeKube, ray: bool, plural: str
) -> None:
    handle = _launch(_provider(kube), "a", ray=ray)
    body = _sent(kube, plural)
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
    assert body["spec"]["suspend"] is True
    # Kueue's label is the workload's only: not its pods', nor its Service's.
    pod_labels = (body["spec"]["template"] if not ray else body["spec"]["rayClusterSpec"][
        "headGroupSpec"]["template"])["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in pod_labels
    service = kube.object("services", handle.id)
    assert ray or "kueue.x-k8s.io/queue-name" not in (service or {})["metadata"]["labels"]
    workload = kube.kueue.workload(handle.id) or {}
    assert workload["metadata"]["labels"]["kueue.x-k8s.io/job-uid"] == (
        kube.object(plural, handle.id) or {})["metadata"]["uid"]


def test_admission_waiting_and_finish(kube: FakeKube) -> None:
    provider = _provider(kube)
    first, second = _launch(provider, "a"), _launch(provider, "b")
    # The ClusterQueue holds one gang: the first runs, the second waits in the queue.
    assert _read(provider, first).state is S.RUNNING
    waiting = _read(provider, second)
    assert waiting.state is S.PROVISIONING and waiting.blocked_scope is None
    assert ("queued in LocalQueue team (Pending): couldn't assign flavors to pod set main: "
            "insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 16 more "
            "needed") in waiting.message
    assert kube.pods_of(second.id) == []
    # Kueue frees the quota when the first ends, and admits the second.
    kube.finish(first.id, 0)
    assert _read(provider, first).state is S.SUCCEEDED
    finished = kube.kueue.workload(first.id) or {}
    assert any(c["type"] == "Finished" and c["reason"] == "Succeeded"
               for c in finished["status"]["conditions"])
    assert _read(provider, second).state is S.RUNNING
    assert len(kube.pods_of(second.id)) == 2


def test_terminating_a_workload_releases_its_quota(kube: FakeKube) -> None:
    provider = _provider(kube)
    first, second = _launch(provider, "a"), _launch(provider, "b")
    provider.terminate(first, request_id="t")
    assert kube.kueue.workload(first.id) is None  # owned by the Job: collected with it
    assert _read(provider, second).state is S.RUNNING


def test_a_workload_waiting_past_the_grace_gives_its_place_up(kube: FakeKube) -> None:
    provider = _provider(kube)
    _launch(provider, "a")
    kube.now -= timedelta(hours=1)  # the second was created an hour ago
    second = _launch(provider, "b")
    status = _read(provider, second)
    assert status.state is S.PREEMPTED and status.blocked_scope == error_scope("lab", "us-east-1")
    assert "insufficient unused quota" in status.message


@pytest.mark.parametrize(("ray", "plural"), [(False, "jobs"), (True, "rayjobs")])
def test_a_kueue_preemption_requeues_then_gives_the_place_up(
    kube: FakeKube, ray: bool, plural: str
) -> None:
    provider = _provider(kube)
    handle = _launch(provider, "a", ray=ray)
    assert _read(provider, handle).state is S.RUNNING
    kube.preempt(handle.id)  # a more important workload took the quota
    assert kube.pods_of(handle.id) == [] and (kube.object(plural, handle.id) or {})["spec"][
        "suspend"] is True
    status = _read(provider, handle)
    assert status.state is S.PROVISIONING and status.blocked_scope is None
    assert "evicted (Preempted/InClusterQueue) and requeued" in status.message
    # Still waiting long after: the place is given up, so the job can run elsewhere.
    late = _provider(kube, queue_grace_s=0.0)
    lost = _read(late, handle)
    assert lost.state is S.PREEMPTED and lost.blocked_scope == error_scope("lab", "us-east-1")


def test_a_requeued_workload_kueue_readmits_runs_again(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, "a")
    kube.preempt(handle.id)
    kube.kueue.readmit(handle.id)  # the preemptor finished: Kueue admits it again
    assert _read(provider, handle).state is S.RUNNING
    conditions = {c["type"]: c for c in (kube.kueue.workload(handle.id) or {})["status"][
        "conditions"]}
    assert conditions["Evicted"]["status"] == "False"
    assert conditions["Evicted"]["message"].startswith("Previously: ")


@pytest.mark.parametrize(
    ("reason", "state", "words"),
    [
        ("PodsReadyTimeout", S.PROVISIONING, "PodsReadyTimeout"),
        ("DeactivatedDueToRequeuingLimitExceeded", S.PREEMPTED, "deactivated"),
    ],
)
def test_other_evictions(kube: FakeKube, reason: str, state: WorkloadState, words: str) -> None:
    provider = _provider(kube)
    handle = _launch(provider, "a")
    kube.kueue.evict(handle.id, reason)
    status = _read(provider, handle)
    assert status.state is state and words in status.message, status
    assert (status.blocked_scope is not None) is (state is S.PREEMPTED)


def test_a_command_that_fails_under_kueue_fails(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, "a")
    kube.finish(handle.id, 3)
    status = _read(provider, handle)
    assert (status.state, status.exit_code) == (S.FAILED, 3)


def test_a_resource_the_cluster_queue_does_not_cover_keeps_the_gang_out() -> None:
    """Kueue admits only what its ClusterQueue covers: an InfiniBand pool's rdma/ib too."""
    with serve(kueue="v1beta2") as kube:
        kube.add_nodes(2, rdma=True)
        kube.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16"})
        kube.kueue.add_local_queue("team", "gpus")
        provider = _provider(kube)
        status = _read(provider, _launch(provider, "a"))
        assert status.state is S.PROVISIONING
        assert "resource rdma/ib unavailable in ClusterQueue" in status.message


@pytest.mark.parametrize(
    ("setup", "error", "words"),
    [
        (lambda k: None, InvalidRequestError, "local_queue: Kueue LocalQueue other"),
        (lambda k: k.kueue.add_local_queue("other", "gpus", stopped=True), QuotaError,
         r"inactive \(Stopped\)"),
        (lambda k: k.kueue.add_local_queue("other", "nowhere"), QuotaError,
         "ClusterQueueDoesNotExist"),
    ],
)
def test_a_local_queue_that_cannot_take_work_is_refused_before_creating(
    kube: FakeKube, setup: Any, error: type[Exception], words: str
) -> None:
    setup(kube)
    provider = _provider(kube, local_queue="other")
    with pytest.raises(error, match=words):
        _launch(provider, "a")
    with pytest.raises(error, match=words):
        provider.check()
    assert kube.objects("jobs") == []


def test_a_local_queue_on_a_cluster_without_kueue_is_refused() -> None:
    with serve() as kube:
        kube.add_nodes(2)
        with pytest.raises(InvalidRequestError, match=r"serves no kueue\.x-k8s\.io API"):
            _launch(_provider(kube), "a")


def test_status_lists_workloads_once_per_namespace_and_only_for_kueues_jobs(
    kube: FakeKube,
) -> None:
    queued = _provider(kube)
    plain = _provider(kube, local_queue=None, fleet_name="plain")
    handles = [_launch(queued, "a"), _launch(queued, "b")]
    before = len(kube.requests)
    queued.status(handles)
    assert sum(r.path.split("?")[0].endswith("/workloads") for r in kube.requests[before:]) == 1
    kube.kueue.add_cluster_queue("spare", {"nvidia.com/gpu": "0"})  # a change, no matter
    alone = _launch(plain, "c", nodes=1)
    before = len(kube.requests)
    assert _read(plain, alone).state is S.RUNNING
    assert not any("/workloads" in r.path for r in kube.requests[before:])
