"""Launch, status, terminate and sweep of the Kubernetes adapter, through the real kubernetes
client against the fake API server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes import manifests as mf
from multicloud_kubernetes.pools import NodePool
from multicloud_kubernetes.testing import FakeKube, serve

from multicloud.adapterkit import KUBERNETES_LABELS
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

H100 = "NVIDIA-H100-80GB-HBM3"
PRICES = {"H100": 40.0, "L40S": 12.0}
LABEL_JOB, LABEL_ATTEMPT, LABEL_INSTALL = (KUBERNETES_LABELS.key(k)
                                          for k in ("job", "attempt", "install"))
S = WorkloadState


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        k.add_nodes(4, region="US-EAST-04")
        yield k


def _provider(kube: FakeKube, **options: Any) -> KubernetesProvider:
    return KubernetesProvider(**{**kube.options, "unschedulable_grace_s": 0.0,
                                 "price_card": PRICES, **options})


def _spec(job: str = "job-1", *, nodes: int = 1, **changes: Any) -> LaunchSpec:
    spec = LaunchSpec(
        job_id=job,
        job_name="train",
        attempt=1,
        nodes=nodes,
        market=MarketKind.ON_DEMAND,
        install_id="install-a",
        image="ghcr.io/acme/train:1.0",
        command="torchrun train.py --epochs 3",
        env={"EPOCHS": "3"},
        secrets=("HF_TOKEN",),
    )
    return dataclasses.replace(spec, **changes)


def _offer(provider: KubernetesProvider, accelerator: str = "H100") -> Offer:
    (offer,) = provider.offers(ResourceRequest(accelerators=(accelerator,)))
    return offer


def _launch(provider: KubernetesProvider, spec: LaunchSpec, accelerator: str = "H100") -> Handle:
    offer = _offer(provider, accelerator)
    return provider.launch(offer, spec, request_id=request_id(spec.job_id, 1, offer.region))


def _pod_spec(obj: dict[str, Any] | None) -> dict[str, Any]:
    assert obj is not None
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


# ---------------------------------------------------------------------------- launch


@pytest.mark.parametrize("nodes", [1, 3])
def test_every_job_is_an_indexed_job_with_a_headless_service(kube: FakeKube, nodes: int) -> None:
    provider = _provider(kube, image_pull_secrets=["regcred"])
    handle = _launch(provider, _spec(nodes=nodes))
    assert (handle.get("kind"), handle.nodes) == ("job", nodes)
    job = kube.object("jobs", handle.id)
    assert job is not None and handle.id.startswith("mc-")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    assert job["spec"]["backoffLimit"] == 0
    labels = job["metadata"]["labels"]
    assert (labels[LABEL_JOB], labels[LABEL_ATTEMPT], labels[LABEL_INSTALL]) == (
        "job-1", "1", "install-a"
    )
    assert labels[KUBERNETES_LABELS.key("request")] == handle.request_id
    pod = _pod_spec(job)
    assert pod["restartPolicy"] == "Never" and pod["subdomain"] == handle.id
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.product": H100,
        "topology.kubernetes.io/region": "US-EAST-04",
    }
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = pod["containers"]
    assert container["command"] == ["/bin/sh", "-c", "torchrun train.py --epochs 3"]
    env = _env(container)
    assert env["EPOCHS"]["value"] == "3" and env["NNODES"]["value"] == str(nodes)
    assert env["MASTER_ADDR"]["value"] == f"{handle.id}-0.{handle.id}"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{mf.JOB_INDEX}']"
    )
    # Secrets by reference only: no value anywhere in the object.
    assert env["HF_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}
    }
    service = kube.object("services", handle.id)
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {mf.WORKLOAD: handle.id}
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    pods = kube.pods_of(handle.id)
    assert [p["spec"]["hostname"] for p in pods] == [f"{handle.id}-{i}" for i in range(nodes)]
    assert kube.resolve(f"{handle.id}-0.{handle.id}") == pods[0]["metadata"]["name"]
    # Deleting the Job garbage-collects its Service through the owner reference.
    provider.terminate(handle, request_id="t")
    assert kube.object("services", handle.id) is None


def test_a_multi_node_command_runs_on_every_node_even_with_kuberay(kube: FakeKube) -> None:
    """Regression: with KubeRay installed a gang became a RayJob whose entrypoint ran once."""
    assert kube.rayjob_crd
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=2))
    assert kube.objects("rayjobs") == []
    pods = kube.pods_of(handle.id)
    assert len(pods) == 2
    for rank, pod in enumerate(pods):
        (container,) = pod["spec"]["containers"]
        assert container["command"][-1] == "torchrun train.py --epochs 3"
        env = kube.environment({**pod, "spec": {"containers": [
            {**container, "env": [e for e in container["env"] if e["name"] != "HF_TOKEN"]}
        ]}})
        assert (env["NODE_RANK"], env["NNODES"]) == (str(rank), "2")
    assert provider.status([handle])[handle.id].state is S.RUNNING


@pytest.mark.parametrize("nodes", [1, 3])
def test_a_ray_program_is_a_rayjob(kube: FakeKube, nodes: int) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=nodes, ray=True, command="python tune.py"))
    assert handle.get("kind") == "rayjob"
    ray = kube.object("rayjobs", handle.id)
    assert ray is not None and kube.object("jobs", handle.id) is None
    assert ray["spec"]["entrypoint"] == "python tune.py"
    assert ray["spec"]["shutdownAfterJobFinishes"] is True
    cluster = ray["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]]
    if nodes > 1:
        (workers,) = cluster["workerGroupSpecs"]
        assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
        templates.append(workers["template"])
    else:
        assert "workerGroupSpecs" not in cluster
    for template in templates:
        (container,) = template["spec"]["containers"]
        assert "command" not in container  # KubeRay starts Ray in it
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert not {"NODE_RANK", "MASTER_ADDR"} & set(_env(container))
        assert _env(container)["NNODES"]["value"] == str(nodes)
    assert len(kube.pods_of(handle.id)) == nodes
    assert provider.status([handle])[handle.id].state is S.RUNNING


@pytest.mark.parametrize(
    ("crd", "mode", "nodes", "outcome"),
    [
        (False, "auto", 1, "job"),
        (False, "auto", 2, "invalid"),
        (True, "never", 2, "job"),
        (False, "always", 2, "invalid"),
    ],
)
def test_a_ray_program_without_kuberay(
    kube: FakeKube, crd: bool, mode: str, nodes: int, outcome: str
) -> None:
    kube.rayjob_crd = crd
    provider = _provider(kube, rayjob=mode)
    if outcome == "invalid":
        with pytest.raises(InvalidRequestError, match="KubeRay"):
            _launch(provider, _spec(nodes=nodes, ray=True))
        assert kube.objects("jobs") == []
        return
    handle = _launch(provider, _spec(nodes=nodes, ray=True))
    assert handle.get("kind") == outcome and kube.object("jobs", handle.id) is not None


def test_shm_size_and_cpus_options(kube: FakeKube) -> None:
    handle = _launch(_provider(kube, shm_size="64Gi"), _spec(cpus=16.0))
    pod = _pod_spec(kube.object("jobs", handle.id))
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == "16.0"


def _launch_of(kube: FakeKube, nodes: int, ray: bool) -> mf.Launch:
    pool = NodePool(H100, "nvidia.com/gpu.product", H100, "H100", 8, "US-EAST-04", None, 4, 4,
                    rdma=True, taints=(("dedicated", "ml", "NoSchedule"),))
    offer = Offer("kubernetes", "US-EAST-04", None, H100, "H100", 8, 49.0)
    return mf.Launch("mc-abc", _spec(nodes=nodes, ray=ray, cpus=4.0), offer, "req", pool,
                     {"a": "b"}, {"c": "d"})


@pytest.mark.parametrize("nodes", [1, 2])
def test_every_field_sent_is_one_the_client_models_know(kube: FakeKube, nodes: int) -> None:
    """``from_dict`` drops unknown fields silently: a typo would vanish, not fail."""
    from kubernetes import client

    launch = _launch_of(kube, nodes, ray=False)
    options = mf.PodOptions(shm_size="1Gi", image_pull_secrets=("r",), tolerations=(
        {"key": "x", "operator": "Exists"},))
    api = client.ApiClient()
    for model, body in (
        (client.V1Job, mf.indexed_job(launch, options)),
        (client.V1Service, mf.headless_service("mc-abc", {"a": "b"}, "uid-1")),
    ):
        assert api.sanitize_for_serialization(model.from_dict(body)) == body  # type: ignore[no-untyped-call]
    ray = mf.rayjob(_launch_of(kube, nodes, ray=True), options)["spec"]["rayClusterSpec"]
    groups = [ray["headGroupSpec"], *ray.get("workerGroupSpecs", [])]
    for group in groups:
        template = group["template"]
        sent = client.V1PodTemplateSpec.from_dict(template)
        assert api.sanitize_for_serialization(sent) == template  # type: ignore[no-untyped-call]


def test_pool_taints_become_tolerations(kube: FakeKube) -> None:
    kube.add_node("tainted", product="NVIDIA-L40S", region="US-EAST-04",
                  taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}])
    provider = _provider(kube, tolerations=[{"key": "extra", "operator": "Exists"}])
    handle = _launch(provider, _spec("l40s"), accelerator="L40S")
    tolerations = _pod_spec(kube.object("jobs", handle.id))["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in (
        tolerations
    )
    assert {"key": "extra", "operator": "Exists"} in tolerations
    # The fake scheduler binds the pod only if the taint is tolerated.
    assert provider.status([handle])[handle.id].state is S.RUNNING


def test_tuple_command_runs_without_a_shell(kube: FakeKube) -> None:
    handle = _launch(_provider(kube), _spec(command=("python", "-m", "train")))
    assert _pod_spec(kube.object("jobs", handle.id))["containers"][0]["command"] == [
        "python", "-m", "train"
    ]


def test_launch_is_idempotent_and_creates_once(kube: FakeKube) -> None:
    provider = _provider(kube)
    first = _launch(provider, _spec(nodes=2))
    assert _launch(provider, _spec(nodes=2)) == first
    assert kube.launches[first.id] == 1 and kube.count("POST", r"/jobs$") == 1


def test_already_exists_from_a_racing_launch_is_success(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    # A second launcher that missed the object on its first look gets 409 on create.
    kube.fail_next("get Job", "NotFound")
    assert _launch(provider, _spec()) == handle
    assert kube.count("POST", r"/jobs$") == 2 and kube.launches[handle.id] == 1


def test_relaunch_repairs_a_missing_headless_service(kube: FakeKube) -> None:
    provider = _provider(kube)
    kube.fail_next("create Service", "ServiceUnavailable")
    with pytest.raises(TransientError):
        _launch(provider, _spec(nodes=2))
    (job,) = kube.objects("jobs")
    assert kube.object("services", job["metadata"]["name"]) is None
    handle = _launch(provider, _spec(nodes=2))
    assert kube.object("services", handle.id) is not None and len(kube.objects("jobs")) == 1


def test_same_request_id_with_another_spec_is_invalid(kube: FakeKube) -> None:
    provider = _provider(kube)
    offer = _offer(provider)
    provider.launch(offer, _spec(), request_id="same-key")
    with pytest.raises(InvalidRequestError, match="already used"):
        provider.launch(offer, _spec(env={"EPOCHS": "4"}), request_id="same-key")


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


def test_a_secret_path_reads_the_key_of_its_variable_name(kube: FakeKube) -> None:
    """The kit's one secret rule: ``prod/hf-token`` is ``HF_TOKEN``, key ``HF_TOKEN``."""
    handle = _launch(_provider(kube), _spec(secrets=("prod/hf-token",)))
    (pod,) = kube.pods_of(handle.id)
    assert _env(pod["spec"]["containers"][0])["HF_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "prod-hf-token", "key": "HF_TOKEN"}}
    kube.add_secret("prod-hf-token", {"HF_TOKEN": "s3cr3t"})
    assert kube.environment(pod)["HF_TOKEN"] == "s3cr3t"


@pytest.mark.parametrize("rdma", [False, True])
def test_pods_get_shared_memory_and_infiniband_where_the_nodes_have_it(rdma: bool) -> None:
    """A pool whose nodes advertise ``rdma/ib`` gets it requested, with IPC_LOCK."""
    with serve() as kube:
        kube.add_nodes(2, region="US-EAST-04", rdma=rdma)
        provider = _provider(kube)
        handle = _launch(provider, _spec(nodes=2))
        pod = _pod_spec(kube.object("jobs", handle.id))
        (container,) = pod["containers"]
        assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
        assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
        limits = container["resources"]["limits"]
        assert ("rdma/ib" in limits, "securityContext" in container) == (rdma, rdma)
        assert provider.status([handle])[handle.id].state is S.RUNNING


def test_gang_larger_than_free_nodes_is_a_capacity_error(kube: FakeKube) -> None:
    provider = _provider(kube)
    _launch(provider, _spec("a", nodes=2))
    with pytest.raises(CapacityError, match="2 of 4 free") as err:
        _launch(provider, _spec("b", nodes=3))
    assert err.value.scope == "kubernetes/US-EAST-04"
    assert len(kube.objects("jobs")) == 1


def test_gpu_resource_quota_is_a_quota_error_before_creating(kube: FakeKube) -> None:
    kube.set_quota("gpu-quota", {"requests.nvidia.com/gpu": "8"})
    provider = _provider(kube)
    _launch(provider, _spec("a"))
    with pytest.raises(QuotaError, match="gpu-quota") as err:
        _launch(provider, _spec("b"))
    assert err.value.scope == "kubernetes/US-EAST-04" and len(kube.objects("jobs")) == 1


def test_object_count_quota_403_is_a_quota_error(kube: FakeKube) -> None:
    kube.set_quota("jobs-quota", {"count/jobs.batch": "1"})
    provider = _provider(kube)
    _launch(provider, _spec("a"))
    with pytest.raises(QuotaError, match="exceeded quota"):
        _launch(provider, _spec("b"))


# ---------------------------------------------------------------------------- status


def _lists(kube: FakeKube, since: int) -> list[str]:
    return sorted(
        r.path.split("?")[0].rsplit("/", 1)[-1]
        for r in kube.requests[since:]
        if r.method == "GET" and r.path.split("?")[0].endswith(("jobs", "pods", "rayjobs"))
    )


def test_status_is_one_list_per_kind_per_namespace(kube: FakeKube) -> None:
    provider = _provider(kube)
    handles = [_launch(provider, _spec(f"job-{i}")) for i in range(3)]
    before = len(kube.requests)
    statuses = provider.status([*handles, handles[0]])
    assert set(statuses) == {h.id for h in handles}
    assert _lists(kube, before) == ["jobs", "pods"]
    gang = _launch(provider, _spec("ray", ray=True))
    before = len(kube.requests)
    provider.status([*handles, gang])
    assert _lists(kube, before) == ["jobs", "pods", "rayjobs"]


def test_status_lists_each_namespace_of_the_handles_once(kube: FakeKube) -> None:
    here, there = _provider(kube), _provider(kube, namespace="team-b")
    handles = [_launch(here, _spec("a")), _launch(there, _spec("b")), _launch(there, _spec("c"))]
    before = len(kube.requests)
    assert {s.state for s in here.status(handles).values()} == {S.RUNNING}
    paths = [r.path.split("?")[0] for r in kube.requests[before:]]
    assert sorted(p for p in paths if p.endswith("/jobs")) == [
        "/apis/batch/v1/namespaces/jobs/jobs",
        "/apis/batch/v1/namespaces/team-b/jobs",
    ]


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize(
    ("code", "state"), [(0, S.SUCCEEDED), (3, S.FAILED), (143, S.FAILED), (77, S.FAILED)]
)
def test_how_a_command_ends(kube: FakeKube, nodes: int, code: int, state: WorkloadState) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=nodes))
    kube.finish(handle.id, code)
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, code)


@pytest.mark.parametrize("how", ["evicted", "preempted", "disrupted"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_a_disrupted_pod_reads_preempted_whatever_its_exit_code(
    kube: FakeKube, how: str, nodes: int
) -> None:
    """Regression: preemption wins over the 137/143 the disruption left as exit code."""
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=nodes))
    kube.evict(handle.id, how=how)
    failed = [c for c in (kube.object("jobs", handle.id) or {})["status"]["conditions"]
              if c["type"] == "Failed"]
    assert [c["reason"] for c in failed] == ["PodFailurePolicy"]
    status = provider.status([handle])[handle.id]
    assert status.state is S.PREEMPTED, status  # re-placed, where FAILED would be final


def test_the_job_carries_the_disruption_rule(kube: FakeKube) -> None:
    job = kube.object("jobs", _launch(_provider(kube), _spec()).id)
    assert job is not None
    assert job["spec"]["podFailurePolicy"] == {"rules": [{
        "action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]
    }]}


@pytest.mark.parametrize(
    ("end", "state", "words"),
    [
        (lambda k, n: k.finish(n, 0), S.SUCCEEDED, "succeeded"),
        (lambda k, n: k.finish(n, 1), S.FAILED, "the Ray job failed"),
        # Regressions: KubeRay sets deployment Complete for these too; they are no success.
        (lambda k, n: k.stop(n), S.FAILED, "stopped"),
        (lambda k, n: k.fail_submitter(n, deployment="Complete"), S.FAILED, "submitter"),
        (lambda k, n: k.fail_submitter(n), S.FAILED, "could not submit"),
        (lambda k, n: k.evict(n, how="evicted"), S.PREEMPTED, "Evicted"),
    ],
)
def test_rayjob_ends_as_kuberay_defines_them(
    kube: FakeKube, end: Any, state: WorkloadState, words: str
) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=2, ray=True))
    end(kube, handle.id)
    status = provider.status([handle])[handle.id]
    assert status.state is state and words in status.message, status


def _fill_every_node(kube: FakeKube) -> None:
    for node in kube.node_names():
        kube.add_pod(f"rival-{node}", node=node, gpus=8)


def _taint_every_node(kube: FakeKube) -> None:
    for node in kube.node_names():
        kube.add_node(node, region="US-EAST-04",
                      taints=[{"key": "maintenance", "value": "", "effect": "NoSchedule"}])


def _delete_every_node(kube: FakeKube) -> None:
    for node in kube.node_names():
        kube.delete_node(node)


@pytest.mark.parametrize(
    ("between", "changes", "says"),
    [
        (_fill_every_node, {}, "Insufficient nvidia.com/gpu"),
        (_taint_every_node, {}, "untolerated taint"),
        (_delete_every_node, {}, "0/0 nodes are available"),
        (lambda kube: None, {"cpus": 512.0}, "Insufficient cpu"),
    ],
)
@pytest.mark.parametrize("late", [False, True])
def test_pods_that_cannot_be_scheduled_for_any_reason_lose_the_place_after_the_grace(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, between: Any, changes: dict[str, Any],
    says: str, late: bool,
) -> None:
    """Regression: only "Insufficient nvidia.com/gpu" was recognised; any other reason (a
    taint, too little CPU or memory, a deleted pool) stayed PROVISIONING for ever."""
    provider = _provider(kube, unschedulable_grace_s=600.0)
    if late:
        kube.now = datetime.now(timezone.utc) - timedelta(hours=1)
    offer, pools = _offer(provider), provider.pools()
    with monkeypatch.context() as m:
        m.setattr(provider, "pools", lambda: pools)  # read before the cluster changed
        between(kube)
        handle = provider.launch(offer, _spec(**changes), request_id="stuck")
    status = provider.status([handle])[handle.id]
    assert says in status.message and status.message.startswith("capacity:"), status
    if late:
        assert status.state is S.PREEMPTED
        assert status.blocked_scope == error_scope("kubernetes", "US-EAST-04")
    else:
        assert (status.state, status.blocked_scope) == (S.PROVISIONING, None)


@pytest.mark.parametrize("late", [False, True])
def test_a_job_whose_pods_quota_refuses_loses_the_place_after_the_grace(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, late: bool
) -> None:
    provider = _provider(kube, unschedulable_grace_s=600.0)
    if late:
        kube.now = datetime.now(timezone.utc) - timedelta(hours=1)
    kube.set_quota("gpu", {"requests.nvidia.com/gpu": "16"})  # room for one gang
    first = _launch(provider, _spec("first", nodes=2))
    with monkeypatch.context() as m:
        # Both launches probed the quota before either created its pods.
        m.setattr(provider.cluster, "quotas", lambda ns: [])
        second = _launch(provider, _spec("second", nodes=2))
    assert kube.pods_of(second.id) == []
    statuses = provider.status([first, second])
    assert statuses[first.id].state is S.RUNNING
    status = statuses[second.id]
    assert "2 of 2 pod(s) not created (quota?)" in status.message
    assert status.state is (S.PREEMPTED if late else S.PROVISIONING)
    assert (status.blocked_scope is not None) is late


# ---------------------------------------------------------------------------- terminate


@pytest.mark.parametrize(("ray", "plural"), [(False, "jobs"), (True, "rayjobs")])
def test_terminate_deletes_with_foreground_propagation(
    kube: FakeKube, ray: bool, plural: str
) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec(nodes=2, ray=ray))
    provider.terminate(handle, request_id="t1")
    assert kube.deletions == [(plural, handle.id, "Foreground")]
    assert kube.pods_of(handle.id) == [] and _offer(provider).capacity == 4
    assert provider.status([handle])[handle.id].state is S.UNKNOWN


def test_terminate_is_idempotent_and_unknown_is_noop(kube: FakeKube) -> None:
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    provider.terminate(handle, request_id="t1")
    provider.terminate(handle, request_id="t1")
    provider.terminate(dataclasses.replace(handle, id="mc-ghost"), request_id="t2")
    # Three DELETEs reached the server; two answered 404, which terminate swallowed.
    assert kube.count("DELETE", r"/jobs/") == 3
    assert kube.deletions == [("jobs", handle.id, "Foreground")]


def test_workload_being_deleted_is_terminated(kube: FakeKube) -> None:
    kube.keep_terminating = True
    provider = _provider(kube)
    handle = _launch(provider, _spec())
    provider.terminate(handle, request_id="t")
    assert provider.status([handle])[handle.id].state is S.TERMINATED
    assert provider.owned("install-a") == []
    kube.finish_deletions()
    assert provider.status([handle])[handle.id].state is S.UNKNOWN


# ---------------------------------------------------------------------------- sweep


def test_owned_lists_the_workloads_of_the_install(kube: FakeKube) -> None:
    kube.add_nodes(3, region="US-EAST-04")
    provider = _provider(kube)
    assert isinstance(provider, SupportsSweep)
    live = _launch(provider, _spec("live"))
    gang = _launch(provider, _spec("gang", nodes=2, attempt=2))
    done = _launch(provider, _spec("done"))
    ray = _launch(provider, _spec("ray", nodes=2, ray=True))
    _launch(provider, _spec("theirs", install_id="install-b"))
    kube.finish(done.id, 0)
    # Another fleet entry on the same cluster keeps its own workloads.
    other = _provider(kube, fleet_name="k8s-b")
    other.launch(_offer(other), _spec("other-fleet"), request_id="of")
    owned = provider.owned("install-a")
    # Finished ones too: the scheduler never terminates a succeeded attempt, so the orphan
    # sweep is what deletes them (and their pods).
    assert sorted((w.job_id, w.attempt) for w in owned) == [
        ("done", 1), ("gang", 2), ("live", 1), ("ray", 1)
    ]
    assert {w.handle.id: w.handle for w in owned} == {h.id: h for h in (live, gang, done, ray)}
    for w in owned:
        provider.terminate(w.handle, request_id="sweep")
    assert provider.owned("install-a") == []


def test_labels_stay_valid_for_odd_ids(kube: FakeKube) -> None:
    provider = _provider(kube)
    job_id = "Team A/run #7 " + "x" * 80
    _launch(provider, _spec(job_id, install_id="install/with slash"))
    (owned,) = provider.owned("install/with slash")
    labels = (kube.object("jobs", owned.handle.id) or {})["metadata"]["labels"]
    assert len(labels[LABEL_JOB]) <= 63 and labels[LABEL_JOB] != job_id
    assert owned.job_id == job_id  # exact, from the handle the object carries


def test_jobs_carry_a_finished_ttl_as_a_backstop(kube: FakeKube) -> None:
    handle = _launch(_provider(kube), _spec())
    assert (kube.object("jobs", handle.id) or {})["spec"]["ttlSecondsAfterFinished"] == 3600
    handle = _launch(_provider(kube, finished_ttl_s=None), _spec("other"))
    assert "ttlSecondsAfterFinished" not in (kube.object("jobs", handle.id) or {})["spec"]
    for bad in (0, 30, -1, 1.5, True, "3600"):
        with pytest.raises(ValueError, match="finished_ttl_s"):
            _provider(kube, finished_ttl_s=bad)
