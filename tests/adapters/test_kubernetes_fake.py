"""The fake Kubernetes API server itself: it refuses what the API server refuses, and its
controllers behave as the ones the adapter relies on."""

from __future__ import annotations

import copy
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from multicloud_kubernetes import manifests as mf
from multicloud_kubernetes.pools import NodePool
from multicloud_kubernetes.testing import (
    TOKEN,
    FakeKube,
    field_selector_matches,
    label_selector_matches,
    serve,
)

from multicloud.provider import LaunchSpec, MarketKind, Offer
from multicloud.testing.fakecloud import Call

H100 = "NVIDIA-H100-80GB-HBM3"
LABELS = {"app": "web", "tier": "gpu", "multicloud.io/install": "a"}
Doc = dict[str, Any]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app=web,tier=cpu", False),
        ("tier in (gpu, cpu)", True),
        ("tier notin (gpu)", False),
        ("multicloud.io/install in (a,b),app=web", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert label_selector_matches(selector, LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("status.phase!=Succeeded,status.phase!=Failed", True),
        ("status.phase=Running", True),
        ("status.phase=Pending", False),
        ("spec.nodeName=n1", True),
    ],
)
def test_field_selectors(selector: str, expected: bool) -> None:
    pod = {"status": {"phase": "Running"}, "spec": {"nodeName": "n1"}}
    assert field_selector_matches(selector, pod) is expected


def test_server_requires_the_token_and_stops() -> None:
    before = threading.active_count()
    with serve() as kube:
        with pytest.raises(urllib.request.HTTPError) as err:
            urllib.request.urlopen(f"{kube.url}/api/v1/nodes", timeout=5)
        assert err.value.code == 401
        url = kube.url
    assert threading.active_count() == before
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/version", timeout=2)


# ---------------------------------------------------------------------------- refusals


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as k:
        k.add_nodes(2, memory="1Ti")
        yield k


def _launch(ray: bool = False) -> mf.Launch:
    spec = LaunchSpec("job", "job", 1, 2, MarketKind.ON_DEMAND, image="img", command="true",
                      secrets=("HF_TOKEN",), ray=ray)
    pool = NodePool(H100, "nvidia.com/gpu.product", H100, "H100", 8, "us-east-1", None, 2, 2,
                    rdma=True)
    offer = Offer("kubernetes", "us-east-1", None, H100, "H100", 8, 49.0)
    return mf.Launch("mc-abc", spec, offer, "req", pool, {mf.WORKLOAD: "mc-abc"}, {})


def _post(kube: FakeKube, path: str, doc: Doc) -> tuple[int, Doc]:
    call = Call("POST", path, doc, {"Authorization": f"Bearer {TOKEN}"})
    return kube.answer(call)


JOBS = "/apis/batch/v1/namespaces/jobs/jobs"
RAYJOBS = "/apis/ray.io/v1/namespaces/jobs/rayjobs"


def _container(doc: Doc) -> Doc:
    container: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *head, last = path.split(".")
        cur: Any = doc
        for part in head:
            cur = cur[int(part)] if part.isdigit() else cur[part]
        if value is None:
            del cur[last]
        else:
            cur[last] = value

    return change


T = "spec.template.spec"
C = f"{T}.containers.0"

# Each row: what is changed in a manifest the adapter sends, and the API server's words.
# Sources: k8s.io/kubernetes/pkg/apis/batch/validation (Job), pkg/apis/core/validation
# (pod spec, resources, env, volumes), apimachinery/pkg/util/validation (names, labels).
JOB_REFUSALS = [
    ("pod failure policy without restartPolicy Never", _set(f"{T}.restartPolicy", "OnFailure"),
     'only "Never" is supported when podFailurePolicy'),
    ("restartPolicy Always", _set(f"{T}.restartPolicy", "Always"), "restartPolicy: Required"),
    ("Indexed without completions", _set("spec.completions", None), "spec.completions"),
    ("extended resource request without limit", _set(f"{C}.resources.limits", {}),
     "must be equal to nvidia.com/gpu limit"),
    ("extended resource request unlike its limit",
     _set(f"{C}.resources.requests", {"nvidia.com/gpu": "4", "rdma/ib": "1"}), "must be equal"),
    ("fractional extended resource",
     _set(f"{C}.resources", {"limits": {"rdma/ib": "0.5"}, "requests": {"rdma/ib": "0.5"}}),
     "must be an integer"),
    ("emptyDir medium", _set(f"{T}.volumes", [{"name": "dshm", "emptyDir": {"medium": "Disk"}}]),
     "Unsupported value"),
    ("mount of no volume", _set(f"{T}.volumes", []), "volumeMounts.name: Not found"),
    ("env with value and valueFrom", lambda d: _container(d)["env"].append(
        {"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
     "may not be specified"),
    ("secret key that is not a config key", lambda d: _container(d)["env"].append(
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "prod/hf-token"}}}),
     "valid config key"),
    ("unsupported downward API path", lambda d: _container(d)["env"].append(
        {"name": "G", "valueFrom": {"fieldRef": {"fieldPath": "metadata.generation"}}}),
     "Unsupported value"),
    ("subdomain not a DNS label", _set(f"{T}.subdomain", "Bad_Sub"), "DNS label"),
    ("no image", _set(f"{C}.image", None), "image: Required"),
    ("name not a DNS subdomain", _set("metadata.name", "Bad_Name"), "metadata.name"),
    ("label value too long", _set("metadata.labels", {"x": "v" * 64}), "metadata.labels"),
]


@pytest.mark.parametrize(("case", "change", "words"), JOB_REFUSALS,
                         ids=[r[0] for r in JOB_REFUSALS])
def test_the_fake_refuses_jobs_the_api_server_refuses(
    kube: FakeKube, case: str, change: Callable[[Doc], None], words: str
) -> None:
    good = mf.indexed_job(_launch(), mf.PodOptions())
    assert _post(kube, JOBS, copy.deepcopy(good))[0] == 201
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "mc-other"
    change(bad)
    code, status = _post(kube, JOBS, bad)
    assert (code, status["reason"]) == (422, "Invalid") and words in status["message"], status


RAY_REFUSALS = [
    ("no rayClusterSpec", _set("spec.rayClusterSpec", None), "rayClusterSpec: Required"),
    ("replicas above max", _set("spec.rayClusterSpec.workerGroupSpecs.0.maxReplicas", 0),
     "minReplicas <= replicas <= maxReplicas"),
    ("negative backoffLimit", _set("spec.backoffLimit", -1), "backoffLimit"),
]


@pytest.mark.parametrize(("case", "change", "words"), RAY_REFUSALS,
                         ids=[r[0] for r in RAY_REFUSALS])
def test_the_fake_refuses_rayjobs_kuberay_refuses(
    kube: FakeKube, case: str, change: Callable[[Doc], None], words: str
) -> None:
    bad = mf.rayjob(_launch(ray=True), mf.PodOptions())
    change(bad)
    code, status = _post(kube, RAYJOBS, bad)
    assert code == 422 and words in status["message"], status


def test_kuberay_fails_validation_of_a_name_too_long_for_its_raycluster(kube: FakeKube) -> None:
    doc = mf.rayjob(_launch(ray=True), mf.PodOptions())
    doc["metadata"]["name"] = "r" * 48
    assert _post(kube, RAYJOBS, doc)[0] == 201
    status = (kube.object("rayjobs", "r" * 48) or {})["status"]
    assert (status["jobDeploymentStatus"], status["reason"]) == ("ValidationFailed",) * 2
    assert kube.pods_of("r" * 48) == []


def test_services_need_a_dns_1035_name(kube: FakeKube) -> None:
    doc = mf.headless_service("1abc", {}, "uid")
    assert _post(kube, "/api/v1/namespaces/jobs/services", doc)[0] == 422


# ---------------------------------------------------------------------------- controllers


def test_indexed_job_pods_carry_index_hostname_and_resolve(kube: FakeKube) -> None:
    assert _post(kube, JOBS, mf.indexed_job(_launch(), mf.PodOptions()))[0] == 201
    assert _post(kube, "/api/v1/namespaces/jobs/services",
                 mf.headless_service("mc-abc", {}, "uid"))[0] == 201
    kube.add_secret("hf-token", {"HF_TOKEN": "s3cr3t"})
    pods = kube.pods_of("mc-abc")
    for i, pod in enumerate(pods):
        meta = pod["metadata"]
        assert meta["name"].startswith(f"mc-abc-{i}-")
        assert meta["annotations"][mf.JOB_INDEX] == meta["labels"][mf.JOB_INDEX] == str(i)
        assert pod["spec"]["hostname"] == f"mc-abc-{i}"
        env = kube.environment(pod)
        assert env["JOB_COMPLETION_INDEX"] == env["NODE_RANK"] == str(i)
        assert env["HF_TOKEN"] == "s3cr3t"
        assert kube.resolve(f"mc-abc-{i}.mc-abc") == meta["name"]
    assert kube.resolve("mc-abc-0.nothing") is None
    kube.add_secret("hf-token", {})
    with pytest.raises(KeyError):
        kube.environment(pods[0])  # the kubelet's CreateContainerConfigError


@pytest.mark.parametrize(
    ("node", "resources", "words"),
    [
        ({}, {"nvidia.com/gpu": "16"}, "2 Insufficient nvidia.com/gpu"),
        ({}, {"memory": "2Ti"}, "2 Insufficient memory"),
        ({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}, {},
         "untolerated taint {k: v}"),
        ({"rdma": False}, {"rdma/ib": "1"}, "Insufficient rdma/ib"),
    ],
)
def test_the_scheduler_says_why_a_pod_waits(
    node: Doc, resources: Doc, words: str
) -> None:
    with serve() as kube:
        kube.add_nodes(2, **node)
        doc = mf.indexed_job(_launch(), mf.PodOptions())
        doc["spec"]["template"]["spec"]["nodeSelector"] = {}
        _container(doc)["resources"] = {"limits": resources, "requests": resources}
        assert _post(kube, JOBS, doc)[0] == 201
        (cond,) = kube.pods_of("mc-abc")[0]["status"]["conditions"]
        assert (cond["type"], cond["status"], cond["reason"]) == (
            "PodScheduled", "False", "Unschedulable")
        assert cond["message"].startswith("0/2 nodes are available:") and words in cond["message"]


def test_fail_next_answers_with_the_reason_and_message(kube: FakeKube) -> None:
    kube.fail_next("list Node", "TooManyRequests: slow down", times=2)
    for _ in range(2):
        code, status = kube.answer(Call("GET", "/api/v1/nodes", None,
                                        {"authorization": f"Bearer {TOKEN}"}))
        assert (code, status["reason"], status["message"]) == (429, "TooManyRequests",
                                                               "slow down")
    assert kube.answer(Call("GET", "/api/v1/nodes", None,
                            {"authorization": f"Bearer {TOKEN}"}))[0] == 200


# ---------------------------------------------------------------------------- Kueue


def _queued(doc: Doc, queue: str = "team") -> Doc:
    doc["metadata"]["labels"] = {**doc["metadata"]["labels"], "kueue.x-k8s.io/queue-name": queue}
    return doc


KUEUE_REFUSALS = [
    ("queue name not a DNS subdomain", "jobs", lambda d: _queued(d, "Team_A"),
     "queue-name]: Invalid value"),
    ("RayJob keeping its cluster", "rayjobs", lambda d: _set("spec.shutdownAfterJobFinishes",
                                                             False)(d) or _queued(d),
     "should delete the cluster after finishing"),
    ("RayJob on an existing cluster", "rayjobs", lambda d: _set(
        "spec.clusterSelector", {"ray.io/cluster": "x"})(d) or _queued(d),
     "should not use an existing cluster"),
    ("autoscaling RayJob", "rayjobs", lambda d: _set(
        "spec.rayClusterSpec.enableInTreeAutoscaling", True)(d) or _queued(d),
     "should not use autoscaling"),
]


@pytest.mark.parametrize(("case", "plural", "change", "words"), KUEUE_REFUSALS,
                         ids=[r[0] for r in KUEUE_REFUSALS])
def test_the_fake_refuses_what_kueues_webhooks_refuse(
    case: str, plural: str, change: Callable[[Doc], Any], words: str
) -> None:
    with serve(kueue="v1beta2") as kube:
        doc = (mf.indexed_job(_launch(), mf.PodOptions()) if plural == "jobs" else
               mf.rayjob(_launch(ray=True), mf.PodOptions()))
        change(doc)
        code, status = _post(kube, f"/apis/{doc['apiVersion']}/namespaces/jobs/{plural}", doc)
        assert (code, status["reason"]) == (403, "Forbidden"), status
        assert "admission webhook" in status["message"] and words in status["message"]
        # Without Kueue the same object is no webhook's business.
    with serve() as kube:
        assert _post(kube, f"/apis/{doc['apiVersion']}/namespaces/jobs/{plural}", doc)[0] == 201


def test_kueue_suspends_a_queued_job_and_makes_its_workload() -> None:
    with serve(kueue="v1beta1") as kube:
        kube.add_nodes(2)
        doc = _queued(mf.indexed_job(_launch(), mf.PodOptions()))
        assert "suspend" not in doc["spec"]  # not even asked to: the webhook suspends it
        assert _post(kube, JOBS, doc)[0] == 201
        job = kube.object("jobs", "mc-abc") or {}
        assert job["spec"]["suspend"] is True and kube.pods_of("mc-abc") == []
        wl = kube.kueue.workload("mc-abc") or {}
        assert wl["apiVersion"] == "kueue.x-k8s.io/v1beta1"
        assert wl["metadata"]["name"].startswith("job-mc-abc-")
        (owner,) = wl["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])
        assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("main", 2)]
        # No LocalQueue "team": inadmissible, as Kueue says it.
        (reserved,) = wl["status"]["conditions"]
        assert (reserved["type"], reserved["status"], reserved["reason"], reserved["message"]) == (
            "QuotaReserved", "False", "Inadmissible", "LocalQueue team doesn't exist")


@pytest.mark.parametrize(("served", "asked", "found"), [
    ("v1beta2", "v1beta2", True), ("v1beta2", "v1beta1", False), ("v1beta1", "v1beta1", True),
    (None, "v1beta2", False)])
def test_kueue_api_discovery(served: str | None, asked: str, found: bool) -> None:
    with serve(kueue=served) as kube:
        code, doc = kube.answer(Call("GET", f"/apis/kueue.x-k8s.io/{asked}", None,
                                     {"authorization": f"Bearer {TOKEN}"}))
        assert (code == 200) is found
        if found:
            assert {r["name"] for r in doc["resources"]} == {"workloads", "localqueues",
                                                             "clusterqueues"}
