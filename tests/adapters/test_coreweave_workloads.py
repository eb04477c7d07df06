"""Launch, status, terminate and sweep of the CoreWeave adapter against the fake API server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from multicloud_coreweave import CoreWeaveProvider
from multicloud_coreweave.provider import (
    ANN_SPEC_DIGEST,
    LABEL_ATTEMPT,
    LABEL_FLEET,
    LABEL_INSTALL,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_REQUEST_ID,
    LABEL_WORKLOAD,
)
from multicloud_coreweave.testing import FakeKube, serve

from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    QuotaError,
    TransientError,
    error_scope,
)
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    SupportsSweep,
    WorkloadState,
    request_id,
)

H100 = "H100_NVLINK_80GB"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        k.add_nodes(4, gpu_class=H100, region="US-EAST-04")
        yield k


def _provider(kube: FakeKube, **options: Any) -> CoreWeaveProvider:
    return CoreWeaveProvider(**{**kube.options, "unschedulable_grace_s": 0.0, **options})


def _spec(job: str = "job-1", *, nodes: int = 1, **changes: Any) -> LaunchSpec:
    spec = LaunchSpec(
        job_id=job,
        job_name="train",
        attempt=1,
        nodes=nodes,
        market=MarketKind.ON_DEMAND,
        install_id="install-a",
        image="ghcr.io/acme/train:1.0",
        command="python train.py --epochs 3",
        env={"EPOCHS": "3"},
        secrets=("HF_TOKEN",),
    )
    return dataclasses.replace(spec, **changes)


def _offer(provider: CoreWeaveProvider) -> Offer:
    (offer,) = provider.offers(ResourceRequest(accelerators=("H100",)))
    return offer


def _launch(provider: CoreWeaveProvider, spec: LaunchSpec) -> Handle:
    offer = _offer(provider)
    return provider.launch(offer, spec, request_id=request_id(spec.job_id, 1, offer.region))


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


# ---------------------------------------------------------------------------- launch


def test_single_node_job_shape(kube: FakeKube) -> None:
    provider = _provider(kube, image_pull_secrets=["regcred"])
    handle = _launch(provider, _spec())
    job = kube.object("jobs", handle.id)
    assert job is not None
    assert handle.id.startswith("mc-") and dict(handle.extra)["kind"] == "job"
    labels = job["metadata"]["labels"]
    assert labels[LABEL_MANAGED_BY] == "multicloud"
    assert labels[LABEL_JOB] == "job-1"
    assert labels[LABEL_ATTEMPT] == "1"
    assert labels[LABEL_INSTALL] == "install-a"
    assert labels[LABEL_FLEET] == "coreweave"
    assert labels[LABEL_REQUEST_ID] == handle.request_id
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 1
    assert "completionMode" not in job["spec"]
    pod = _pod_spec(job)
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_WORKLOAD] == handle.id
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {
        "gpu.nvidia.com/class": H100,
        "topology.kubernetes.io/region": "US-EAST-04",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/acme/train:1.0"
    assert container["command"] == ["/bin/sh", "-c", "python train.py --epochs 3"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "8"}
    env = {e["name"]: e for e in container["env"]}
    assert env["EPOCHS"] == {"name": "EPOCHS", "value": "3"}
    assert env["MULTICLOUD_JOB_ID"]["value"] == "job-1"
    # The secret travels by reference only: no value anywhere in the object.
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }


def test_pool_taints_become_tolerations(kube: FakeKube) -> None:
    kube.add_node(
        "tainted",
        gpu_class="L40S",
        taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
    )
    provider = _provider(kube, tolerations=[{"key": "extra", "operator": "Exists"}])
    (offer,) = provider.offers(ResourceRequest(accelerators=("L40S",)))
    handle = provider.launch(offer, _spec("l40s"), request_id="l40s-1")
    tolerations = _pod_spec(kube.object("jobs", handle.id) or {})["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in (
        tolerations
    )
    assert {"key": "extra", "operator": "Exists"} in tolerations
    # The fake scheduler only binds the pod if the taint is tolerated.
    assert provider.status([handle])[handle.id].state is WorkloadState.RUNNING


def test_tuple_command_runs_without_a_shell(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(command=("python", "-m", "train")))
    (container,) = _pod_spec(kube.object("jobs", handle.id) or {})["containers"]
    assert container["command"] == ["python", "-m", "train"]


def test_multi_node_is_a_rayjob_when_the_crd_exists(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=3))
    assert dict(handle.extra)["kind"] == "rayjob" and handle.nodes == 3
    ray = kube.object("rayjobs", handle.id)
    assert ray is not None and kube.object("jobs", handle.id) is None
    assert ray["apiVersion"] == "ray.io/v1" and ray["kind"] == "RayJob"
    assert ray["spec"]["entrypoint"] == "python train.py --epochs 3"
    assert ray["spec"]["shutdownAfterJobFinishes"] is True
    cluster = ray["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    # Head + 2 workers = 3 GPU nodes, each asking for all 8 GPUs of its node.
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    for template in (cluster["headGroupSpec"]["template"], workers["template"]):
        (container,) = template["spec"]["containers"]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert template["spec"]["nodeSelector"]["gpu.nvidia.com/class"] == H100
        assert template["metadata"]["labels"][LABEL_WORKLOAD] == handle.id
    assert len(kube.pods_of(handle.id)) == 3
    assert provider.status([handle])[handle.id].state is WorkloadState.RUNNING
    assert _offer(provider).capacity == 1


@pytest.mark.parametrize(("crd", "mode"), [(False, "auto"), (True, "never")])
def test_multi_node_is_an_indexed_job_without_rayjob(kube: FakeKube, crd: bool, mode: str) -> None:
    kube.rayjob_crd = crd
    provider = _provider(kube, rayjob=mode)
    handle = _launch(provider, _spec(nodes=2))
    assert dict(handle.extra)["kind"] == "indexed-job"
    job = kube.object("jobs", handle.id)
    assert job is not None and kube.object("rayjobs", handle.id) is None
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert _pod_spec(job)["subdomain"] == handle.id
    service = kube.object("services", handle.id)
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {LABEL_WORKLOAD: handle.id}
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    # Terminating the Job garbage-collects its Service through the owner reference.
    provider.terminate(handle, request_id="t")
    assert kube.object("services", handle.id) is None


def test_relaunch_repairs_a_missing_headless_service(kube: FakeKube) -> None:
    kube.rayjob_crd = False
    provider = _provider(kube)
    kube.inject(503, method="POST", path=r"/services$", reason="ServiceUnavailable")
    with pytest.raises(TransientError):
        _launch(provider, _spec(nodes=2))
    assert kube.object("services", kube.objects("jobs")[0]["metadata"]["name"]) is None
    handle = _launch(provider, _spec(nodes=2))
    assert kube.object("services", handle.id) is not None
    assert len(kube.objects("jobs")) == 1


def test_rayjob_always_without_crd_is_invalid(kube: FakeKube) -> None:
    kube.rayjob_crd = False
    with pytest.raises(InvalidRequestError, match="KubeRay"):
        _launch(_provider(kube, rayjob="always"), _spec(nodes=2))


def test_launch_is_idempotent_and_creates_once(kube: FakeKube) -> None:
    provider = _provider(kube)
    first = _launch(provider, _spec())
    second = _launch(provider, _spec())
    assert first == second
    assert kube.count("POST", r"/jobs$") == 1
    assert len(kube.objects("jobs")) == 1


def test_already_exists_from_a_racing_launch_is_success(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    # A second launcher that missed the object on its first look gets 409 on create.
    kube.inject(404, method="GET", path=rf"/jobs/{handle.id}$", reason="NotFound")
    assert _launch(provider, _spec()) == handle
    assert kube.count("POST", r"/jobs$") == 2
    assert len(kube.objects("jobs")) == 1


def test_same_request_id_with_another_spec_is_invalid(kube: FakeKube) -> None:
    provider = _provider(kube)
    offer = _offer(provider)
    provider.launch(offer, _spec(), request_id="same-key")
    with pytest.raises(InvalidRequestError, match="already used"):
        provider.launch(offer, _spec(env={"EPOCHS": "4"}), request_id="same-key")
    job = kube.objects("jobs")[0]
    assert job["metadata"]["annotations"][ANN_SPEC_DIGEST]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"provider": "aws"}, "belongs to"),
        ({"instance_type": "cw-no-such-type"}, "no GPU node pool"),
        ({"region": "EU-SOUTH-03"}, "no GPU node pool"),
    ],
)
def test_foreign_offers_are_invalid(kube: FakeKube, change: dict[str, Any], match: str) -> None:
    provider = _provider(kube)
    offer = dataclasses.replace(_offer(provider), **change)
    with pytest.raises(InvalidRequestError, match=match):
        provider.launch(offer, _spec(), request_id="foreign")
    assert kube.objects("jobs") == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"market": MarketKind.SPOT}, "no spot market"),
        ({"image": None}, "no container image"),
    ],
)
def test_bad_specs_are_invalid(kube: FakeKube, change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        _launch(_provider(kube), _spec(**change))


def test_gang_larger_than_free_nodes_is_a_capacity_error(kube: FakeKube) -> None:
    provider = _provider(kube)
    _launch(provider, _spec("a", nodes=2))
    with pytest.raises(CapacityError) as err:
        _launch(provider, _spec("b", nodes=3))
    assert err.value.scope == "coreweave/US-EAST-04"
    assert kube.objects("rayjobs") and len(kube.objects("rayjobs")) == 1


def test_gpu_resource_quota_is_a_quota_error_before_creating(kube: FakeKube) -> None:
    kube.set_quota("gpu-quota", {"requests.nvidia.com/gpu": "8"})
    provider = _provider(kube)
    _launch(provider, _spec("a"))
    with pytest.raises(QuotaError, match="gpu-quota") as err:
        _launch(provider, _spec("b"))
    assert err.value.scope == "coreweave/US-EAST-04"
    assert len(kube.objects("jobs")) == 1


def test_object_count_quota_403_is_a_quota_error(kube: FakeKube) -> None:
    kube.set_quota("jobs-quota", {"count/jobs.batch": "1"})
    provider = _provider(kube)
    _launch(provider, _spec("a"))
    with pytest.raises(QuotaError, match="exceeded quota"):
        _launch(provider, _spec("b"))


# ---------------------------------------------------------------------------- status


def test_status_is_one_list_per_kind_per_namespace(kube: FakeKube) -> None:
    provider = _provider(kube)
    handles = [_launch(provider, _spec(f"job-{i}")) for i in range(3)]
    handles.append(_launch(provider, _spec("job-3")))
    before = len(kube.requests)
    statuses = provider.status(handles)
    calls = kube.requests[before:]
    assert set(statuses) == {h.id for h in handles}
    # One Job list and one pod list, however many handles; no RayJob list without RayJobs.
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in calls] == [
        ("GET", "jobs"),
        ("GET", "pods"),
    ]
    assert "app.kubernetes.io/managed-by=multicloud" in calls[0].query["labelSelector"]


def test_status_lists_each_namespace_of_the_handles_once(kube: FakeKube) -> None:
    here, there = _provider(kube), _provider(kube, namespace="team-b")
    handles = [_launch(here, _spec("a")), _launch(there, _spec("b")), _launch(there, _spec("c"))]
    before = len(kube.requests)
    statuses = here.status(handles)
    assert {s.state for s in statuses.values()} == {WorkloadState.RUNNING}
    job_lists = [r.path for r in kube.requests[before:] if r.path.endswith("/jobs")]
    assert sorted(job_lists) == [
        "/apis/batch/v1/namespaces/jobs/jobs",
        "/apis/batch/v1/namespaces/team-b/jobs",
    ]


def test_status_lists_rayjobs_once_too(kube: FakeKube) -> None:
    provider = _provider(kube)
    handles = [_launch(provider, _spec("one")), _launch(provider, _spec("two", nodes=2))]
    before = len(kube.requests)
    provider.status(handles)
    paths = sorted(r.path.rsplit("/", 1)[-1] for r in kube.requests[before:])
    assert paths == ["jobs", "pods", "rayjobs"]


def test_status_of_finished_workloads(kube: FakeKube) -> None:
    provider = _provider(kube)
    ok, bad, gang = (
        _launch(provider, _spec("ok")),
        _launch(provider, _spec("bad")),
        _launch(provider, _spec("gang", nodes=2)),
    )
    kube.succeed(ok.id)
    kube.fail(bad.id, exit_code=3, message="loss is NaN")
    kube.succeed(gang.id)
    statuses = provider.status([ok, bad, gang])
    assert statuses[ok.id].state is WorkloadState.SUCCEEDED
    assert statuses[bad.id].state is WorkloadState.FAILED
    assert statuses[bad.id].exit_code == 3
    assert "loss is NaN" in statuses[bad.id].message
    assert statuses[gang.id].state is WorkloadState.SUCCEEDED


def test_rayjob_failure_is_failed(kube: FakeKube) -> None:
    provider = _provider(kube)
    gang = _launch(provider, _spec("gang", nodes=2))
    kube.fail(gang.id, message="ray job crashed")
    status = provider.status([gang])[gang.id]
    assert (status.state, status.message) == (WorkloadState.FAILED, "ray job crashed")


@pytest.mark.parametrize("how", ["evicted", "preempted", "disrupted"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_evicted_or_preempted_job_pods_are_preempted(kube: FakeKube, how: str, nodes: int) -> None:
    # One node: a Job; two: an Indexed Job (no RayJob).
    provider = _provider(kube, rayjob="never")
    handle = _launch(provider, _spec(nodes=nodes))
    kube.evict(handle.id, how=how)
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.PREEMPTED, status


@pytest.mark.parametrize("how", ["preempted", "disrupted"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_job_whose_disrupted_pod_was_deleted_is_preempted(
    kube: FakeKube, how: str, nodes: int
) -> None:
    """Kubernetes deletes a preempted or API-evicted pod: only the Job's verdict is left."""
    provider = _provider(kube, rayjob="never")
    handle = _launch(provider, _spec(nodes=nodes))
    job = kube.object("jobs", handle.id)
    assert job is not None
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }
    assert _pod_spec(job)["restartPolicy"] == "Never"  # required by podFailurePolicy
    kube.evict(handle.id, how=how)
    assert len(kube.pods_of(handle.id)) == nodes - 1  # the victim is gone
    failed = [
        c
        for c in (kube.object("jobs", handle.id) or {})["status"]["conditions"]
        if c["type"] == "Failed"
    ]
    assert [c["reason"] for c in failed] == ["PodFailurePolicy"]
    status = provider.status([handle])[handle.id]
    # PREEMPTED is requeued by the scheduler; FAILED would be final.
    assert status.state is WorkloadState.PREEMPTED, status
    assert "DisruptionTarget" in status.message


def test_plain_job_failure_stays_failed_with_the_policy(kube: FakeKube) -> None:
    provider = _provider(kube, rayjob="never")
    handle = _launch(provider, _spec(nodes=2))
    kube.fail(handle.id, exit_code=2, message="bad input")
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (WorkloadState.FAILED, 2)


@pytest.mark.parametrize(
    ("how", "state"),
    [
        ("evicted", WorkloadState.PREEMPTED),
        # Known limitation (docs/providers/coreweave.md): a RayJob has no pod failure
        # policy; once Kubernetes deleted the disrupted pod, its failure looks like any other.
        ("preempted", WorkloadState.FAILED),
        ("disrupted", WorkloadState.FAILED),
    ],
)
def test_disrupted_rayjob_pods(kube: FakeKube, how: str, state: WorkloadState) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=2))
    assert dict(handle.extra)["kind"] == "rayjob"
    kube.evict(handle.id, how=how)
    status = provider.status([handle])[handle.id]
    assert status.state is state, status


def _fill_every_node(kube: FakeKube) -> None:
    for node in kube.objects_nodes():
        kube.add_pod(f"rival-{node}", node=node, gpus=8)


def _launch_past_the_precheck(
    kube: FakeKube, provider: CoreWeaveProvider, job: str, monkeypatch: pytest.MonkeyPatch
) -> Handle:
    """Launch as if another tenant took the nodes between the pre-check and the pods."""
    offer = _offer(provider)
    free = [dataclasses.replace(p, free=p.nodes) for p in provider.pools()]
    with monkeypatch.context() as m:
        m.setattr(provider, "pools", lambda: free)
        _fill_every_node(kube)
        return provider.launch(offer, _spec(job), request_id=job)


def test_no_free_nodes_is_a_capacity_error_at_launch(kube: FakeKube) -> None:
    provider = _provider(kube)
    offer = _offer(provider)
    _fill_every_node(kube)
    with pytest.raises(CapacityError, match="0 of 4 free"):
        provider.launch(offer, _spec(), request_id="late")
    assert kube.objects("jobs") == []


def test_unschedulable_for_gpus_is_provisioning_within_grace(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _provider(kube, unschedulable_grace_s=600.0)
    handle = _launch_past_the_precheck(kube, provider, "raced", monkeypatch)
    (pod,) = kube.pods_of(handle.id)
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.PROVISIONING
    assert "Insufficient nvidia.com/gpu" in status.message


def test_unschedulable_for_gpus_after_grace_is_capacity_lost(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _provider(kube, unschedulable_grace_s=600.0)
    # The pod was created an hour ago and has waited for GPUs ever since.
    kube.now = datetime.now(timezone.utc) - timedelta(hours=1)
    handle = _launch_past_the_precheck(kube, provider, "stuck", monkeypatch)
    status = provider.status([handle])[handle.id]
    # PREEMPTED makes the scheduler re-place the job elsewhere (see the docs).
    assert status.state is WorkloadState.PREEMPTED
    assert status.message.startswith("capacity:")
    # ... and names the pool's scope, so the scheduler blocks it before re-placing.
    assert status.blocked_scope == error_scope(provider.fleet_name, handle.region, handle.zone)
    assert status.blocked_scope.startswith(f"{provider.fleet_name}/{handle.region}")


def _launch_past_a_raced_quota_probe(
    kube: FakeKube, provider: CoreWeaveProvider, monkeypatch: pytest.MonkeyPatch, nodes: int
) -> tuple[Handle, Handle]:
    """Two launches run concurrently: both pass the GPU quota probe before either creates."""
    kube.set_quota("gpu", {"requests.nvidia.com/gpu": str(8 * nodes)})  # room for one gang
    first = _launch(provider, _spec("first", nodes=nodes))
    with monkeypatch.context() as m:
        # The second probe ran before the first Job's pods existed, so it saw room.
        m.setattr(provider, "_check_quota", lambda gpus, scope: None)
        second = _launch(provider, _spec("second", nodes=nodes))
    assert len(kube.pods_of(first.id)) == nodes
    assert kube.pods_of(second.id) == []  # the Job controller's pod creates were refused
    return first, second


@pytest.mark.parametrize("nodes", [1, 2])
def test_job_whose_pods_quota_refuses_is_provisioning_within_grace(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, nodes: int
) -> None:
    provider = _provider(kube, unschedulable_grace_s=600.0, rayjob="never")
    first, second = _launch_past_a_raced_quota_probe(kube, provider, monkeypatch, nodes)
    statuses = provider.status([first, second])
    assert statuses[first.id].state is WorkloadState.RUNNING
    assert statuses[second.id].state is WorkloadState.PROVISIONING
    assert "not created (quota?)" in statuses[second.id].message


@pytest.mark.parametrize("nodes", [1, 2])
def test_job_whose_pods_quota_refuses_is_capacity_lost_after_grace(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, nodes: int
) -> None:
    provider = _provider(kube, unschedulable_grace_s=600.0, rayjob="never")
    # Both Jobs were created an hour ago; the second has had no pod ever since.
    kube.now = datetime.now(timezone.utc) - timedelta(hours=1)
    first, second = _launch_past_a_raced_quota_probe(kube, provider, monkeypatch, nodes)
    statuses = provider.status([first, second])
    assert statuses[first.id].state is WorkloadState.RUNNING
    status = statuses[second.id]
    # Not PROVISIONING for ever: PREEMPTED, with the scope the scheduler blocks before
    # re-placing the job.
    assert status.state is WorkloadState.PREEMPTED, status
    assert status.message.startswith(f"capacity: {nodes} of {nodes} pod(s) not created (quota?)")
    assert status.blocked_scope == error_scope(provider.fleet_name, second.region, second.zone)


# ---------------------------------------------------------------------------- terminate


@pytest.mark.parametrize("nodes", [1, 2])
def test_terminate_deletes_with_foreground_propagation(kube: FakeKube, nodes: int) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=nodes))
    provider.terminate(handle, request_id="t1")
    kind = "rayjobs" if nodes > 1 else "jobs"
    assert kube.deletions == [(kind, handle.id, "Foreground")]
    assert kube.pods_of(handle.id) == []
    assert _offer(provider).capacity == 4
    assert provider.status([handle])[handle.id].state is WorkloadState.UNKNOWN


def test_terminate_is_idempotent_and_unknown_is_noop(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    provider.terminate(handle, request_id="t1")
    provider.terminate(handle, request_id="t1")
    ghost = dataclasses.replace(handle, id="mc-ghost")
    provider.terminate(ghost, request_id="t2")
    # Three DELETEs reached the server; two answered 404, which terminate swallowed.
    assert kube.count("DELETE", r"/jobs/") == 3
    assert kube.deletions == [("jobs", handle.id, "Foreground")]


def test_workload_being_deleted_is_terminated(kube: FakeKube) -> None:
    kube.keep_terminating = True
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    provider.terminate(handle, request_id="t")
    assert provider.status([handle])[handle.id].state is WorkloadState.TERMINATED
    kube.finish_deletions()
    assert provider.status([handle])[handle.id].state is WorkloadState.UNKNOWN


# ---------------------------------------------------------------------------- sweep


def test_owned_lists_the_workloads_of_the_install(kube: FakeKube) -> None:
    kube.add_nodes(3, gpu_class=H100, region="US-EAST-04")
    provider = _provider(kube)
    assert isinstance(provider, SupportsSweep)
    live = _launch(provider, _spec("live"))
    gang = _launch(provider, _spec("gang", nodes=2, attempt=2))
    done = _launch(provider, _spec("done"))
    done_gang = _launch(provider, _spec("done-gang", nodes=2))
    _launch(provider, _spec("theirs", install_id="install-b"))
    kube.succeed(done.id)
    kube.succeed(done_gang.id)
    # Another fleet entry on the same cluster keeps its own workloads.
    other_fleet = _provider(kube, fleet_name="cw-b")
    (offer,) = other_fleet.offers(ResourceRequest())
    other_fleet.launch(offer, _spec("other-fleet"), request_id="of")

    owned = provider.owned("install-a")

    # Finished workloads too: the scheduler never terminates a succeeded attempt, so the
    # orphan sweep is what deletes them (and their pods).
    assert sorted((w.job_id, w.attempt) for w in owned) == [
        ("done", 1),
        ("done-gang", 1),
        ("gang", 2),
        ("live", 1),
    ]
    by_id = {w.handle.id: w.handle for w in owned}
    assert by_id[live.id] == live
    assert by_id[gang.id] == gang
    assert by_id[done.id] == done
    assert by_id[done_gang.id] == done_gang


def test_owned_skips_workloads_being_deleted(kube: FakeKube) -> None:
    kube.keep_terminating = True
    provider = _provider(kube)
    handle = _launch(provider, _spec("going"))
    provider.terminate(handle, request_id="t")
    assert provider.owned("install-a") == []


def test_jobs_carry_a_finished_ttl_as_a_backstop(kube: FakeKube) -> None:
    provider = _provider(kube, rayjob="never")
    single, indexed = _launch(provider, _spec("a")), _launch(provider, _spec("b", nodes=2))
    for handle in (single, indexed):
        job = kube.object("jobs", handle.id)
        assert job is not None
        assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_finished_ttl_option(kube: FakeKube) -> None:
    provider = _provider(kube, finished_ttl_s=None)
    handle = _launch(provider, _spec())
    assert "ttlSecondsAfterFinished" not in (kube.object("jobs", handle.id) or {})["spec"]
    provider = _provider(kube, finished_ttl_s=86400)
    handle = _launch(provider, _spec("other"))
    assert (kube.object("jobs", handle.id) or {})["spec"]["ttlSecondsAfterFinished"] == 86400
    for bad in (0, 30, -1, 1.5, True, "3600"):
        with pytest.raises(ValueError, match="finished_ttl_s"):
            _provider(kube, finished_ttl_s=bad)


def test_owned_handles_terminate(kube: FakeKube) -> None:
    provider = _provider(kube)
    _launch(provider, _spec("orphan"))
    for w in provider.owned("install-a"):
        provider.terminate(w.handle, request_id="sweep")
    assert provider.owned("install-a") == []


def test_labels_stay_valid_for_odd_ids(kube: FakeKube) -> None:
    provider = _provider(kube)
    job_id = "Team A/run #7 " + "x" * 80
    handle = _launch(provider, _spec(job_id, install_id="install/with slash"))
    labels = (kube.object("jobs", handle.id) or {})["metadata"]["labels"]
    assert labels[LABEL_JOB].startswith("h-") and len(labels[LABEL_JOB]) <= 63
    (owned,) = provider.owned("install/with slash")
    assert owned.job_id == job_id
