"""A fake Kubernetes API server for the CoreWeave adapter's tests, examples and benchmarks.

It serves on 127.0.0.1 (``multicloud.testing.fakecloud.serve_json``), with a bearer token,
the part of the API the adapter uses — nodes, pods, Services, ResourceQuotas, batch/v1 Jobs,
KubeRay ``ray.io/v1`` RayJobs and their API discovery — and stands in for the controllers
behind it: the Job controller (Indexed Job pods with their completion index and hostname,
the pod failure policy), the kube-scheduler (node selectors, taints, GPUs, RDMA, CPU and
memory; ``Unschedulable`` with the scheduler's own wording), KubeRay (its RayJob states,
including ``STOPPED`` and a failed submitter), the kubelet (:meth:`FakeKube.environment`
resolves a pod's env as the kubelet would) and cluster DNS (:meth:`FakeKube.resolve`).

It refuses what the API server refuses for the fields the adapter sends (each rule cites
where it comes from), so a manifest the fake accepts is one a cluster would. Tests drive it
with the shared vocabulary (``fail_next``, ``preempt``, ``finish``) and KubeRay's ends
(:meth:`FakeKube.stop`, :meth:`FakeKube.fail_submitter`).

Usage::

    with serve() as kube:
        kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        provider = CoreWeaveProvider(**kube.options)
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multicloud.testing.fakecloud import Call, FakeCloud, serve_json

__all__ = ["TOKEN", "FakeKube", "field_selector_matches", "label_selector_matches", "serve"]

GPU, RDMA = "nvidia.com/gpu", "rdma/ib"
TOKEN = "fake-coreweave-token"
INDEX = "batch.kubernetes.io/job-completion-index"
Obj = dict[str, Any]

# metav1.StatusReason → HTTP code (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
REASONS = {"BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "NotFound": 404,
           "MethodNotAllowed": 405, "AlreadyExists": 409, "Conflict": 409, "Invalid": 422,
           "TooManyRequests": 429, "InternalError": 500, "ServiceUnavailable": 503,
           "Timeout": 504}
KINDS = {"nodes": "Node", "pods": "Pod", "services": "Service", "resourcequotas":
         "ResourceQuota", "jobs": "Job", "rayjobs": "RayJob"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_FIELD_PATHS = re.compile(
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|"
    r"spec\.(nodeName|serviceAccountName)|status\.(hostIP|podIP|podIPs))$"
)


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Refused(Exception):
    """What the API server answers instead: a ``metav1.Status`` failure."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = REASONS.get(reason, 500), reason, message


# ---------------------------------------------------------------------------- selectors


def _split(selector: str) -> list[str]:
    # Commas also separate the values inside "in (a,b)": split outside parentheses only.
    return [p.strip() for p in re.split(r",(?![^()]*\))", selector or "") if p.strip()]


def label_selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Evaluate a label selector (``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``!a``).

    Raises:
        ValueError: If a requirement cannot be parsed.
    """
    for req in _split(selector or ""):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", req):
            values = {v.strip() for v in m[3].split(",")}
            ok = (labels.get(m[1]) in values) == (m[2] == "in")
        elif m := re.fullmatch(r"([\w./-]+)\s*(!=|==|=)\s*(\S*)", req):
            ok = (labels.get(m[1]) == m[3]) == (m[2] != "!=")
        elif m := re.fullmatch(r"(!?)([\w./-]+)", req):
            ok = (m[2] in labels) != bool(m[1])
        else:
            raise ValueError(f"unparsable label selector requirement {req!r}")
        if not ok:
            return False
    return True


def field_selector_matches(selector: str | None, obj: Obj) -> bool:
    """Evaluate a field selector of ``path=value`` / ``path!=value`` terms."""
    for req in _split(selector or ""):
        path, op, value = re.fullmatch(r"([\w.]+)(!=|==|=)(.*)", req).groups()  # type: ignore[union-attr]
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (("" if cur is None else str(cur)) == value) == (op == "!="):
            return False
    return True


def _quantity(text: Any) -> float:
    """A resource quantity (``500m``, ``64Gi``, ``8``) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text or "0"))
    if m is None:
        raise Refused("Invalid", f"quantities must match the regular expression: {text!r}")
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10,
             "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(m[1]) * scale[m[2]]


# ---------------------------------------------------------------------------- validation
# What the API server refuses (422 Invalid) for the fields the adapter sends.


def _check_meta(kind: str, meta: Obj) -> None:
    name = str(meta.get("name") or "")
    # Services need a DNS-1035 label; Jobs and custom objects a DNS-1123 subdomain
    # (k8s.io/apimachinery/pkg/util/validation).
    ok = re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name) if kind == "services" else (
        _DNS_SUBDOMAIN.match(name))
    if not ok:
        raise Refused("Invalid", f'{KINDS[kind]} "{name}" is invalid: metadata.name')
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
            raise Refused("Invalid", f"metadata.labels: Invalid value: {value!r} ({key})")


def _check_pod(spec: Obj, at: str) -> None:
    """Pod spec rules of k8s.io/kubernetes/pkg/apis/core/validation (ValidatePodSpec)."""
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for v in spec.get("volumes") or []:
        medium = (v.get("emptyDir") or {}).get("medium", "")
        if "emptyDir" in v and medium not in ("", "Memory") and not medium.startswith("HugePages"):
            raise Refused("Invalid", f"{at}.volumes.emptyDir.medium: Unsupported value: {medium!r}")
    if spec.get("subdomain") and not _DNS_LABEL.match(spec["subdomain"]):
        raise Refused("Invalid", f"{at}.subdomain: must be a DNS label")
    if not spec.get("containers"):
        raise Refused("Invalid", f"{at}.containers: Required value")
    for c in spec["containers"]:
        where = f"{at}.containers[{c.get('name')}]"
        if not c.get("image"):
            raise Refused("Invalid", f"{where}.image: Required value")
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for name in sorted({*limits, *requests}):
            if "/" not in name or name.split("/")[0].endswith("kubernetes.io"):
                continue
            # Extended resources cannot be overcommitted: a request needs an equal limit,
            # in whole units (ValidateResourceRequirements).
            if name not in limits or (name in requests and _quantity(requests[name]) !=
                                      _quantity(limits[name])):
                raise Refused("Invalid", f"{where}.resources.requests[{name}]: must be equal "
                                         f"to {name} limit")
            if _quantity(limits[name]) != int(_quantity(limits[name])):
                raise Refused("Invalid", f"{where}.resources.limits[{name}]: must be an integer")
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                raise Refused("Invalid", f"{where}.volumeMounts.name: Not found: "
                                         f"{mount.get('name')!r}")
        for e in c.get("env") or []:
            source = e.get("valueFrom") or {}
            if "value" in e and source:
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom: may not be "
                                         "specified when `value` is not empty")
            key = (source.get("secretKeyRef") or {}).get("key")
            if key is not None and not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom.secretKeyRef.key: "
                                         f"a valid config key must consist of alphanumeric "
                                         f"characters, '-', '_' or '.': {key!r}")
            path = (source.get("fieldRef") or {}).get("fieldPath")
            if path is not None and not _FIELD_PATHS.match(path):
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom.fieldRef."
                                         f"fieldPath: Unsupported value: {path!r}")


def _check_job(doc: Obj) -> None:
    """Job rules of k8s.io/kubernetes/pkg/apis/batch/validation (ValidateJobSpec)."""
    spec = doc.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    restart = pod.get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        raise Refused("Invalid", 'spec.template.spec.restartPolicy: Required value: valid '
                                 'values: "OnFailure", "Never"')
    if spec.get("podFailurePolicy") and restart != "Never":
        raise Refused("Invalid", 'spec.template.spec.restartPolicy: Invalid value: only '
                                 '"Never" is supported when podFailurePolicy is specified')
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        raise Refused("Invalid", "spec.completions: Required value: when completion mode "
                                 "is Indexed")
    _check_pod(pod, "spec.template.spec")


def _check_rayjob(doc: Obj) -> None:
    """The RayJob CRD's schema and KubeRay's ValidateRayJobSpec (ray-operator, v1.5)."""
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec")
    if cluster is None and not spec.get("clusterSelector"):
        raise Refused("Invalid", "spec.rayClusterSpec: Required value (no clusterSelector)")
    if (spec.get("backoffLimit") or 0) < 0:
        raise Refused("Invalid", "spec.backoffLimit: must be >= 0")
    head = (cluster or {}).get("headGroupSpec") or {}
    _check_pod((head.get("template") or {}).get("spec") or {}, "spec.rayClusterSpec.head")
    for g in (cluster or {}).get("workerGroupSpecs") or []:
        if not g.get("groupName") or not (
            g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 1 << 31)
        ):
            raise Refused("Invalid", "workerGroupSpecs: groupName and minReplicas <= replicas "
                                     "<= maxReplicas required")
        _check_pod((g.get("template") or {}).get("spec") or {}, f"workerGroupSpecs[{g}]")


_CHECKS = {"jobs": _check_job, "rayjobs": _check_rayjob}


# ---------------------------------------------------------------------------- the fake


class FakeKube(FakeCloud):
    """One fake cluster: its objects, its controllers and the test controls (thread-safe).

    Args:
        namespace: Namespace the adapter is pointed at.
        rayjob_crd: Whether KubeRay (the ``ray.io/v1`` API) is installed.

    Attributes:
        url: Base URL of the server (set by :func:`serve`).
        kubeconfig: Path of the kubeconfig written for it (set by :func:`serve`).
        keep_terminating: Keep deleted Jobs/RayJobs, with a ``deletionTimestamp``, until
            :meth:`finish_deletions` (as a Foreground deletion while pods shut down).
        requests: Every request answered, in order.
        deletions: ``(plural, name, propagationPolicy)`` of every DELETE of a workload.
        now: The fake clock (creation and transition times).
    """

    def __init__(self, namespace: str = "jobs", *, rayjob_crd: bool = True) -> None:
        super().__init__()
        self.url = self.kubeconfig = ""
        self.namespace, self.rayjob_crd, self.keep_terminating = namespace, rayjob_crd, False
        self.requests: list[Call] = []
        self.deletions: list[tuple[str, str, str]] = []
        self.now = datetime.now(timezone.utc)
        self._objs: dict[tuple[str, str, str], Obj] = {}
        self._secrets: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.RLock()

    @property
    def options(self) -> dict[str, Any]:
        """Fleet-entry options that point the adapter at this fake (plain data)."""
        return {"kubeconfig": self.kubeconfig, "context": "fake", "namespace": self.namespace}

    # -- cluster set-up ------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        gpu_class: str | None = "H100_NVLINK_80GB",
        instance_type: str | None = None,
        gpus: int = 8,
        region: str | None = "US-EAST-04",
        zone: str | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        ready: bool = True,
        unschedulable: bool = False,
        memory: str = "1Ti",
        rdma: bool | None = None,
    ) -> None:
        """Add one node, labelled as CKS labels its nodes.

        Args:
            name: Node name.
            gpu_class: ``gpu.nvidia.com/class`` (None: no such label).
            instance_type: ``node.kubernetes.io/instance-type``, the CKS instance id.
            gpus: Allocatable ``nvidia.com/gpu``.
            region: ``topology.kubernetes.io/region`` (None: no such label).
            zone: ``topology.kubernetes.io/zone`` (None: no such label).
            labels: Extra labels.
            taints: Taints (``key``, ``value``, ``effect``).
            ready: Whether the Ready condition is True.
            unschedulable: Whether the node is cordoned.
            memory: Allocatable memory.
            rdma: Whether it advertises ``rdma/ib`` (default: an ``ib`` instance id).
        """
        all_labels = {"kubernetes.io/hostname": name, "node.coreweave.cloud/state": "production"}
        for key, value in (("gpu.nvidia.com/class", gpu_class), ("topology.kubernetes.io/region",
                           region), ("topology.kubernetes.io/zone", zone),
                           ("node.kubernetes.io/instance-type", instance_type)):
            if value is not None:
                all_labels[key] = value
        all_labels.update(labels or {})
        allocatable = {"cpu": "128", "memory": memory, "pods": "110"}
        if gpus:
            allocatable[GPU] = str(gpus)
        if rdma if rdma is not None else bool(re.search(r"\dx[a-z0-9]+ib", instance_type or "")):
            allocatable[RDMA] = "100"
        cond = {"type": "Ready", "status": "True" if ready else "False",
                "lastTransitionTime": _ts(self.now)}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": self._meta(name, None, all_labels),
                "spec": {"taints": [dict(t) for t in taints], "unschedulable": unschedulable},
                "status": {"allocatable": allocatable, "capacity": dict(allocatable),
                           "conditions": [cond]}}
        with self._lock:
            self._objs[("nodes", "", name)] = node
            self._schedule()

    def add_nodes(self, n: int, *, prefix: str = "", **kwargs: Any) -> list[str]:
        """Add ``n`` alike nodes named ``<prefix or type>-<i>``; see :meth:`add_node`."""
        kind = kwargs.get("gpu_class") or kwargs.get("instance_type") or "node"
        base = prefix or str(kind).lower().replace("_", "-")
        names = [f"{base}-{len(self.node_names()) + i}" for i in range(n)]
        for name in names:
            self.add_node(name, **kwargs)
        return names

    def delete_node(self, name: str) -> None:
        """Remove a node (a node pool scaled down or deleted)."""
        with self._lock:
            self._objs.pop(("nodes", "", name), None)

    def add_pod(
        self, name: str, *, namespace: str = "other", node: str, gpus: int, phase: str = "Running"
    ) -> None:
        """Add someone else's pod holding ``gpus`` GPUs on ``node``."""
        limits = {GPU: str(gpus)}
        pod = self._pod(name, namespace, {}, {}, {"containers": [
            {"name": "main", "image": "busybox", "resources": {"limits": limits,
                                                               "requests": limits}}]})
        pod["spec"]["nodeName"], pod["status"]["phase"] = node, phase
        with self._lock:
            self._objs[("pods", namespace, name)] = pod

    def set_quota(self, name: str, hard: Mapping[str, str], namespace: str | None = None) -> None:
        """Create or replace a ResourceQuota (``requests.nvidia.com/gpu``, ``count/jobs.batch``)."""
        ns = namespace or self.namespace
        quota = {"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": self._meta(name, ns, {}), "spec": {"hard": dict(hard)}}
        with self._lock:
            self._objs[("resourcequotas", ns, name)] = quota

    def add_secret(self, name: str, data: Mapping[str, str], namespace: str | None = None) -> None:
        """Create a Secret the kubelet resolves ``secretKeyRef`` from."""
        with self._lock:
            self._secrets[(namespace or self.namespace, name)] = dict(data)

    # -- driving workloads (the shared vocabulary) --------------------------------------

    def finish(self, workload: str, exit_code: int) -> None:
        """Every pod's command ends with ``exit_code``; the Job or RayJob follows.

        A Job completes, or fails with ``BackoffLimitExceeded``; a RayJob reads KubeRay's
        SUCCEEDED/Complete, or FAILED/Failed with reason ``AppFailed``.
        """
        ns, ok = self.namespace, exit_code == 0
        with self._lock:
            for pod in self._pods_of(ns, workload):
                pod["status"]["phase"] = "Succeeded" if ok else "Failed"
                self._exit(pod, exit_code)
            if ("jobs", ns, workload) in self._objs:
                job = self._objs[("jobs", ns, workload)]
                if ok:
                    job["status"]["conditions"].append(self._cond("Complete"))
                    job["status"].update(succeeded=job["spec"].get("completions", 1), active=0)
                else:
                    self._job_failed(job, "BackoffLimitExceeded",
                                     "Job has reached the specified backoff limit")
            else:
                self._ray_end(workload, "SUCCEEDED" if ok else "FAILED",
                              "Complete" if ok else "Failed", "" if ok else "AppFailed",
                              "" if ok else f"Job entrypoint command failed with exit code "
                              f"{exit_code}")
            self._schedule()

    def succeed(self, name: str) -> None:
        """``finish(name, 0)``."""
        self.finish(name, 0)

    def fail(self, name: str, *, exit_code: int = 1) -> None:
        """``finish(name, exit_code)``."""
        self.finish(name, exit_code)

    def preempt(self, workload: str) -> None:
        """The kube-scheduler preempts every pod of the workload for a higher-priority one."""
        self.evict(workload, how="preempted", pods=None)

    def evict(self, workload: str, *, how: str = "evicted", pods: int | None = 1) -> None:
        """Push pods of a workload off their nodes, as Kubernetes 1.26+ shows it.

        Each pod gets ``DisruptionTarget`` and fails (exit 137 from the kubelet, 143 from a
        graceful termination); a pod preempted or evicted through the API is then deleted
        (a kubelet eviction leaves it). A Job's controller first applies its
        ``podFailurePolicy``; a RayJob's Ray job fails.

        Args:
            workload: Job or RayJob name.
            how: ``evicted`` (TerminationByKubelet), ``preempted`` (PreemptionByScheduler)
                or ``disrupted`` (EvictionByEvictionAPI).
            pods: How many pods (None: all).

        Raises:
            KeyError: If ``how`` is unknown or the workload has no pod.
        """
        reason = {"evicted": "TerminationByKubelet", "preempted": "PreemptionByScheduler",
                  "disrupted": "EvictionByEvictionAPI"}[how]
        ns = self.namespace
        with self._lock:
            victims = self._pods_of(ns, workload)[:pods]
            if not victims:
                raise KeyError(f"workload {workload} has no pods")
            for pod in victims:
                pod["status"]["phase"] = "Failed"
                pod["status"]["conditions"].append(
                    self._cond("DisruptionTarget", reason, f"{reason} of the pod"))
                if how == "evicted":
                    pod["status"].update(reason="Evicted",
                                         message="The node was low on resource: memory.")
                self._exit(pod, 137 if how == "evicted" else 143)
                if ("jobs", ns, workload) in self._objs:
                    self._job_pod_failed(ns, workload, pod)
                if how != "evicted":
                    self._objs.pop(("pods", ns, pod["metadata"]["name"]), None)
            if ("rayjobs", ns, workload) in self._objs:
                self._ray_end(workload, "FAILED", "Failed", "AppFailed", "a Ray node died",
                              keep_pods=True)
            self._schedule()

    def stop(self, workload: str) -> None:
        """``ray job stop``: KubeRay reads jobStatus STOPPED and sets deployment Complete."""
        with self._lock:
            self._ray_end(workload, "STOPPED", "Complete", "", "Job was intentionally stopped")

    def fail_submitter(self, workload: str, *, deployment: str = "Failed") -> None:
        """The submitter Job fails before the Ray job reports (KubeRay's K8sJobMode).

        Args:
            workload: RayJob name.
            deployment: ``Failed`` with reason ``SubmissionFailed`` (KubeRay 1.2+), or
                ``Complete`` with no Ray verdict, as RayJobStatus.EndTime describes it.
        """
        reason = "SubmissionFailed" if deployment == "Failed" else ""
        with self._lock:
            job = self._objs[("rayjobs", self.namespace, workload)]["status"].get("jobStatus", "")
            self._ray_end(workload, job, deployment, reason,
                          "Job submission has failed. Reason: BackoffLimitExceeded")

    def finish_deletions(self) -> None:
        """Complete every deletion held by ``keep_terminating``."""
        with self._lock:
            for key, obj in list(self._objs.items()):
                if obj["metadata"].get("deletionTimestamp"):
                    self._delete(key)

    # -- reading state ------------------------------------------------------------------

    def object(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """Return a copy of one stored object (``jobs``, ``rayjobs``, ``services``, ``pods``)."""
        with self._lock:
            obj = self._objs.get((plural, namespace or self.namespace, name))
            return copy.deepcopy(obj)

    def objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of every stored object of a kind in a namespace."""
        ns = namespace or self.namespace
        with self._lock:
            return [copy.deepcopy(o) for (k, n, _), o in sorted(self._objs.items())
                    if (k, n) == (plural, ns)]

    def node_names(self) -> list[str]:
        """Return the node names, sorted."""
        with self._lock:
            return sorted(name for k, _, name in self._objs if k == "nodes")

    def pods_of(self, workload: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of the pods of a workload, by completion index."""
        with self._lock:
            return copy.deepcopy(self._pods_of(namespace or self.namespace, workload))

    def count(self, method: str, path_regex: str) -> int:
        """Count answered requests whose method and path match."""
        return sum(1 for r in self.requests if r.method == method and re.search(path_regex, r.path))

    def environment(self, pod: Obj) -> dict[str, str]:
        """Return a pod's first container's environment as the kubelet resolves it.

        Plain values; ``fieldRef`` through the downward API (the pod's own metadata);
        ``secretKeyRef`` from the namespace's Secrets.

        Raises:
            KeyError: A missing Secret or key (the kubelet's CreateContainerConfigError).
        """
        env, meta = {}, pod["metadata"]
        for e in pod["spec"]["containers"][0].get("env") or []:
            source = e.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
                    env[e["name"]] = (meta.get(m[1]) or {}).get(m[2], "")
                else:
                    env[e["name"]] = str(meta.get(path.split(".")[1], ""))
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[e["name"]] = self._secrets[(meta["namespace"], ref["name"])][ref["key"]]
            else:
                env[e["name"]] = e.get("value", "")
        return env

    def resolve(self, host: str, namespace: str | None = None) -> str | None:
        """Cluster DNS for ``<hostname>.<subdomain>``: the pod it names, or None.

        A pod's name resolves when it sets that hostname and subdomain and a headless
        Service named after the subdomain selects it.
        """
        ns = namespace or self.namespace
        hostname, _, subdomain = host.partition(".")
        subdomain = subdomain.split(".")[0]
        with self._lock:
            svc = self._objs.get(("services", ns, subdomain))
            if svc is None or svc["spec"].get("clusterIP") != "None":
                return None
            for (k, n, name), pod in sorted(self._objs.items()):
                spec = pod.get("spec") or {}
                if (k, n) == ("pods", ns) and (spec.get("hostname"), spec.get("subdomain")) == (
                    hostname, subdomain
                ) and label_selector_matches(",".join(f"{a}={b}" for a, b in
                                                      svc["spec"]["selector"].items()),
                                             pod["metadata"]["labels"]):
                    return name
        return None

    # -- objects ------------------------------------------------------------------------

    def _meta(self, name: str, namespace: str | None, labels: Mapping[str, str]) -> Obj:
        meta: Obj = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                     "creationTimestamp": _ts(self.now), "labels": dict(labels),
                     "annotations": {}}
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def _cond(self, kind: str, reason: str = "", message: str = "", status: str = "True") -> Obj:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": _ts(self.now)}

    def _pod(self, name: str, ns: str, labels: Mapping[str, str],
             annotations: Mapping[str, str], spec: Obj) -> Obj:
        meta = self._meta(name, ns, labels)
        meta["annotations"] = dict(annotations)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(spec),
                "status": {"phase": "Pending", "conditions": []}}

    def _pods_of(self, ns: str, workload: str) -> list[Obj]:
        pods = [p for (k, n, _), p in self._objs.items()
                if (k, n) == ("pods", ns) and _owner(p) == workload]
        return sorted(pods, key=lambda p: (int(p["metadata"]["annotations"].get(INDEX, 0)),
                                           p["metadata"]["name"]))

    def _exit(self, pod: Obj, code: int) -> None:
        pod["status"]["containerStatuses"] = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
             "restartCount": 0, "state": {"terminated": {
                 "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                 "finishedAt": _ts(self.now)}}}
            for c in pod["spec"]["containers"]]

    # -- the controllers ----------------------------------------------------------------

    def _create_pods(self, obj: Obj, template: Obj, n: int, *, role: str = "",
                     indexed: bool = False) -> None:
        """The Job controller (or KubeRay) creates a workload's pods from its template."""
        meta, ns, owner = template.get("metadata") or {}, obj["metadata"]["namespace"], \
            obj["metadata"]["name"]
        # A Job owns its pods; a RayJob's belong to its RayCluster (here: named as the RayJob).
        ref = {"apiVersion": obj["apiVersion"], "kind": "Job" if obj["kind"] == "Job" else
               "RayCluster", "name": owner, "uid": obj["metadata"]["uid"], "controller": True,
               "blockOwnerDeletion": True}
        for i in range(n):
            labels, annotations = dict(meta.get("labels") or {}), dict(meta.get("annotations")
                                                                        or {})
            spec = copy.deepcopy(template.get("spec") or {})
            if indexed:
                # The Job controller: the index as annotation and label, JOB_COMPLETION_INDEX
                # in every container, the hostname <job>-<index> (pkg/controller/job).
                labels[INDEX] = annotations[INDEX] = str(i)
                spec["hostname"] = f"{owner}-{i}"
                for c in spec.get("containers") or []:
                    c.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {
                        "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}})
            if not role:
                labels.setdefault("batch.kubernetes.io/job-name", owner)
            part = role or (str(i) if indexed else "")
            pod = self._pod(f"{owner}-{part + '-' if part else ''}{uuid.uuid4().hex[:5]}", ns,
                            labels, annotations, spec)
            pod["metadata"]["ownerReferences"] = [ref]
            if self._over_quota(ns, self._requests(pod).get(GPU, 0)):
                continue  # the controller's create is refused (403 exceeded quota); it retries
            self._objs[("pods", ns, pod["metadata"]["name"])] = pod

    @staticmethod
    def _requests(pod: Obj) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            for key, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                out[key] = out.get(key, 0) + _quantity(value)
        return out

    def _live_pods(self, ns: str | None = None) -> list[Obj]:
        return [p for (k, n, _), p in self._objs.items() if k == "pods" and (ns in (None, n))
                and p["status"]["phase"] in ("Pending", "Running")]

    def _over_quota(self, ns: str, gpus: float) -> bool:
        used = sum(self._requests(p).get(GPU, 0) for p in self._live_pods(ns))
        return any(used + gpus > _quantity(q["spec"]["hard"][f"requests.{GPU}"])
                   for (k, n, _), q in self._objs.items()
                   if (k, n) == ("resourcequotas", ns) and f"requests.{GPU}" in q["spec"]["hard"])

    def _misfit(self, pod: Obj, node: Obj) -> str | None:
        """Why the kube-scheduler would not put ``pod`` on ``node`` (its own wording)."""
        labels, spec = node["metadata"]["labels"], pod["spec"]
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return "node(s) didn't match Pod's node affinity/selector"
        if node["spec"].get("unschedulable"):
            return "node(s) were unschedulable"
        for taint in node["spec"].get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
                t.get("key") in (None, "", taint["key"])
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                and t.get("effect") in (None, "", taint["effect"])
                for t in spec.get("tolerations") or []
            ):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        name = node["metadata"]["name"]
        held = [p for p in self._live_pods() if p["spec"].get("nodeName") == name]
        for resource, want in self._requests(pod).items():
            free = _quantity(node["status"]["allocatable"].get(resource, 0)) - sum(
                self._requests(p).get(resource, 0) for p in held)
            if want > free:
                return f"Insufficient {resource}"
        return None

    def _schedule(self) -> None:
        """Bind every pending, unbound pod that fits a node (first fit), then the controllers."""
        nodes = [o for (k, _, _), o in sorted(self._objs.items()) if k == "nodes"]
        for (k, _, _), pod in sorted(self._objs.items()):
            if k != "pods" or pod["spec"].get("nodeName") or pod["status"]["phase"] != "Pending":
                continue
            why: dict[str, int] = {}
            for node in nodes:
                misfit = self._misfit(pod, node)
                if misfit is None:
                    pod["spec"]["nodeName"] = node["metadata"]["name"]
                    pod["status"].update(phase="Running", conditions=[
                        self._cond("PodScheduled"), self._cond("Ready")])
                    pod["status"]["containerStatuses"] = [
                        {"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                         "restartCount": 0, "state": {"running": {"startedAt": _ts(self.now)}}}
                        for c in pod["spec"]["containers"]]
                    break
                why[misfit] = why.get(misfit, 0) + 1
            else:
                detail = ", ".join(f"{n} {w}" for w, n in sorted(why.items()))
                pod["status"]["conditions"] = [self._cond(
                    "PodScheduled", "Unschedulable",
                    f"0/{len(nodes)} nodes are available: {detail}.", status="False")]
        for (k, ns, name), obj in self._objs.items():
            if k == "rayjobs" and obj["status"].get("jobDeploymentStatus") == "Initializing":
                pods = self._pods_of(ns, name)
                if pods and all(p["status"]["phase"] == "Running" for p in pods):
                    obj["status"].update(jobDeploymentStatus="Running", jobStatus="RUNNING")

    def _job_pod_failed(self, ns: str, name: str, pod: Obj) -> None:
        """The Job controller's verdict on a failed pod: its pod failure policy, else backoff."""
        job = self._objs[("jobs", ns, name)]
        conditions = {c["type"]: c for c in pod["status"]["conditions"]}
        for i, rule in enumerate((job["spec"].get("podFailurePolicy") or {}).get("rules") or []):
            for want in rule.get("onPodConditions") or []:
                cond = conditions.get(want.get("type"))
                if rule.get("action") == "FailJob" and cond and cond["status"] == want.get(
                        "status", "True"):
                    text = (f"Pod {ns}/{pod['metadata']['name']} has condition {cond['type']} "
                            f"matching FailJob rule at index {i}")
                    job["status"]["conditions"].append(
                        self._cond("FailureTarget", "PodFailurePolicy", text))
                    return self._job_failed(job, "PodFailurePolicy", text)
        self._job_failed(job, "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def _job_failed(self, job: Obj, reason: str, message: str) -> None:
        if any(c["type"] == "Failed" for c in job["status"]["conditions"]):
            return
        job["status"]["conditions"].append(self._cond("Failed", reason, message))
        job["status"].update(failed=1, active=0)
        # The controller deletes the pods still running.
        for pod in self._pods_of(job["metadata"]["namespace"], job["metadata"]["name"]):
            if pod["status"]["phase"] in ("Pending", "Running"):
                self._objs.pop(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))

    def _ray_end(self, workload: str, job: str, deployment: str, reason: str, message: str,
                 *, keep_pods: bool = False) -> None:
        """KubeRay ends a RayJob; with shutdownAfterJobFinishes its Ray cluster goes."""
        ns = self.namespace
        self._objs[("rayjobs", ns, workload)]["status"].update(
            jobStatus=job, jobDeploymentStatus=deployment, reason=reason, message=message,
            endTime=_ts(self.now))
        if not keep_pods:
            for pod in self._pods_of(ns, workload):
                self._objs.pop(("pods", ns, pod["metadata"]["name"]))

    def _delete(self, key: tuple[str, str, str]) -> None:
        obj = self._objs.pop(key, None)
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self._objs.items()):
            owners = other["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                self._objs.pop(other_key, None)
        self._schedule()

    # -- HTTP ---------------------------------------------------------------------------

    def answer(self, call: Call) -> tuple[int, Obj]:
        """Answer one request (the ``serve_json`` handler).

        Args:
            call: The request.

        Returns:
            Status code and JSON document.
        """
        headers = {k.lower(): v for k, v in call.headers.items()}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, _status(Refused("Unauthorized", "Unauthorized"))
        parts = urlsplit(call.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(call)
            try:
                return self._route(call.method, parts.path.rstrip("/"), query, call.body or {})
            except Refused as exc:
                return exc.code, _status(exc)

    def _route(self, method: str, path: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform":
                         "linux/amd64"}
        m = re.fullmatch(r"/(?:api/v1|apis/batch/v1|apis/(?P<ray>ray\.io)/v1)"
                         r"(?:/namespaces/(?P<ns>[^/]+))?(?:/(?P<plural>[a-z]+)"
                         r"(?:/(?P<name>[^/]+))?)?", path)
        if m is None or (m["ray"] and not self.rayjob_crd):
            raise Refused("NotFound", f"the server could not find the requested resource ({path})")
        plural, ns, name = m["plural"], m["ns"] or "", m["name"]
        if plural is None:
            self._fault("discover ray.io/v1")
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion":
                         "ray.io/v1", "resources": [{"name": p, "singularName": p[:-1],
                         "namespaced": True, "kind": k, "verbs": ["create", "delete", "get",
                         "list"]} for p, k in (("rayjobs", "RayJob"), ("rayclusters",
                                                                        "RayCluster"))]}
        if plural not in KINDS:
            raise Refused("NotFound", f"the server could not find the requested resource ({path})")
        verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if name else "list")
        self._fault(f"{verb} {KINDS[plural]}")
        if verb == "create":
            return self._create(plural, ns, doc)
        if verb == "list":
            items = [o for (k, n, _), o in sorted(self._objs.items())
                     if k == plural and (not m["ns"] or n == ns)
                     and label_selector_matches(query.get("labelSelector"),
                                                o["metadata"]["labels"])
                     and field_selector_matches(query.get("fieldSelector"), o)]
            items = items[: int(query["limit"])] if "limit" in query else items
            if plural == "resourcequotas":
                items = [self._quota_status(q) for q in items]
            version = "ray.io/v1" if m["ray"] else "batch/v1" if plural == "jobs" else "v1"
            return 200, {"kind": f"{KINDS[plural]}List", "apiVersion": version,
                         "metadata": {"resourceVersion": "1"}, "items": items}
        obj = self._objs.get((plural, ns, name or ""))
        if obj is None:
            raise Refused("NotFound", f'{plural} "{name}" not found')
        if verb == "get":
            return 200, obj
        policy = query.get("propagationPolicy") or doc.get("propagationPolicy") or ""
        self.deletions.append((plural, name or "", policy))
        if self.keep_terminating and plural in ("jobs", "rayjobs"):
            obj["metadata"]["deletionTimestamp"] = _ts(self.now)
            return 200, obj
        self._delete((plural, ns, name or ""))
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _fault(self, operation: str) -> None:
        error = self.faults.take(operation)
        if error is not None:
            reason, _, message = str(error).partition(": ")
            raise Refused(reason, message or f"injected {reason}")

    def _quota_status(self, quota: Obj) -> Obj:
        ns, hard = quota["metadata"]["namespace"], quota["spec"]["hard"]
        used = {f"requests.{GPU}": str(int(sum(self._requests(p).get(GPU, 0)
                                                for p in self._live_pods(ns)))),
                "count/jobs.batch": str(sum(1 for k, n, _ in self._objs if (k, n) == ("jobs", ns)))}
        return {**quota, "status": {"hard": dict(hard),
                                    "used": {k: used.get(k, "0") for k in hard}}}

    def _create(self, plural: str, ns: str, doc: Obj) -> tuple[int, Obj]:
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        _check_meta(plural, meta)
        if (plural, ns, name) in self._objs:
            raise Refused("AlreadyExists", f'{plural} "{name}" already exists')
        _CHECKS.get(plural, lambda _: None)(doc)
        for (k, n, qname), q in self._objs.items():
            hard = q["spec"]["hard"].get(f"count/{plural}.batch") if k == "resourcequotas" else None
            used = sum(1 for kk, nn, _ in self._objs if (kk, nn) == (plural, ns))
            if n == ns and hard is not None and used + 1 > int(hard):
                # ResourceQuota admission (k8s.io/apiserver, plugin/resourcequota).
                raise Refused("Forbidden", f'{plural}.batch "{name}" is forbidden: exceeded '
                              f"quota: {qname}, requested: count/{plural}.batch=1, used: "
                              f"count/{plural}.batch={used}, limited: count/{plural}.batch={hard}")
        obj = copy.deepcopy(doc)
        obj["metadata"] = {**self._meta(name, ns, meta.get("labels") or {}),
                           "annotations": dict(meta.get("annotations") or {}),
                           **({"ownerReferences": meta["ownerReferences"]}
                              if meta.get("ownerReferences") else {})}
        self._objs[(plural, ns, name)] = obj
        if plural == "jobs":
            self.launches[name] += 1
            spec = obj["spec"]
            obj["status"] = {"conditions": [], "active": 0, "succeeded": 0, "failed": 0}
            self._create_pods(obj, spec["template"], int(spec.get("parallelism") or 1),
                              indexed=spec.get("completionMode") == "Indexed")
        elif plural == "rayjobs":
            self.launches[name] += 1
            obj["status"] = {"jobDeploymentStatus": "Initializing", "jobStatus": ""}
            if len(name) > 47:
                # KubeRay's ValidateRayJobMetadata: the RayCluster's name derives from it.
                obj["status"].update(jobDeploymentStatus="ValidationFailed",
                                     reason="ValidationFailed", message="name too long")
            else:
                cluster = obj["spec"]["rayClusterSpec"]
                self._create_pods(obj, cluster["headGroupSpec"]["template"], 1, role="head")
                for g in cluster.get("workerGroupSpecs") or []:
                    self._create_pods(obj, g["template"], int(g["replicas"]),
                                      role=f"{g['groupName']}-worker")
        elif plural == "services":
            obj["status"] = {"loadBalancer": {}}
        self._schedule()
        return 201, obj


def _owner(obj: Obj) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return refs[0]["name"] if refs else None


def _status(exc: Refused) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": exc.message, "reason": exc.reason, "code": exc.code}


def write_kubeconfig(path: Path, url: str, token: str = TOKEN, namespace: str = "jobs") -> None:
    """Write a kubeconfig whose one context ``fake`` points at ``url`` with ``token``."""
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
           "clusters": [{"name": "fake", "cluster": {"server": url}}],
           "users": [{"name": "fake", "user": {"token": token}}],
           "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                     "namespace": namespace}}]}
    # JSON is YAML, and the kubernetes client reads kubeconfigs with a YAML parser.
    path.write_text(json.dumps(doc, indent=2))


@contextlib.contextmanager
def serve(*, namespace: str = "jobs", rayjob_crd: bool = True) -> Iterator[FakeKube]:
    """Run a fake Kubernetes API server on 127.0.0.1 for the duration of the block.

    Args:
        namespace: Namespace the yielded options point the adapter at.
        rayjob_crd: Whether KubeRay starts installed.

    Yields:
        The fake cluster; ``.options`` are fleet-entry options for the adapter.
    """
    kube = FakeKube(namespace, rayjob_crd=rayjob_crd)
    with serve_json(kube.answer, name="fake-kube") as url, tempfile.TemporaryDirectory(
        prefix="fake-kube-"
    ) as tmp:
        kube.url, kube.kubeconfig = url, str(Path(tmp) / "kubeconfig")
        write_kubeconfig(Path(kube.kubeconfig), url, namespace=namespace)
        yield kube
