"""A small fake Kubernetes API server for the CoreWeave adapter's tests and examples.

It serves, on 127.0.0.1 over plain HTTP with a bearer token, exactly the part of the API the
adapter uses: nodes, pods (all namespaces or one, with label and field selectors), batch/v1
Jobs, core/v1 Services and ResourceQuotas, KubeRay ``RayJob`` custom objects (``ray.io/v1``)
with their API discovery document and CRD (both switchable off), and ``/version``.

A tiny built-in "controller" stands in for the Job controller, KubeRay and the scheduler:
creating a Job or RayJob creates its pods at once and binds each to a node of the right
class with enough free ``nvidia.com/gpu`` (honouring node selectors and taints), or leaves
it Pending with the ``Unschedulable`` / ``Insufficient nvidia.com/gpu`` condition the real
scheduler writes. Tests then drive the workloads with :meth:`FakeKube.succeed`,
:meth:`FakeKube.fail` and :meth:`FakeKube.evict`, and inject any HTTP error with
:meth:`FakeKube.inject`.

Every object it returns is complete (apiVersion, kind, metadata with name, namespace, uid,
creationTimestamp and labels, spec and status) because the kubernetes 37 client's models
are strict pydantic models. Only the standard library is used.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeKube", "Injected", "Request", "serve"]

GPU = "nvidia.com/gpu"
TOKEN = "fake-coreweave-token"
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

Obj = dict[str, Any]


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Request:
    """One request the fake server answered.

    Attributes:
        method: HTTP method.
        path: URL path.
        query: Query parameters (first value of each).
    """

    method: str
    path: str
    query: dict[str, str]


@dataclass
class Injected:
    """An error the server answers instead of serving matching requests.

    Attributes:
        method: HTTP method to match (``*`` for any).
        path: Regular expression searched in the path.
        status: HTTP status code.
        reason: Kubernetes Status ``reason`` (``Forbidden``, ``Invalid`` …).
        message: Kubernetes Status ``message``.
        times: How many requests it answers (None: until cleared).
    """

    method: str
    path: str
    status: int
    reason: str
    message: str
    times: int | None = 1


# ---------------------------------------------------------------------------- selectors

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    # Commas also separate the values inside "in (a,b)", so split only outside parentheses.
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Evaluate a Kubernetes label selector (equality and set-based forms).

    Args:
        selector: The selector, e.g. ``a=b,c!=d,e in (x,y),!f``; empty matches everything.
        labels: The object's labels.

    Returns:
        True if the labels satisfy every requirement.

    Raises:
        ValueError: If a requirement cannot be parsed.
    """
    for req in _split_selector(selector or ""):
        m = _SET_RE.match(req)
        if m:
            key, op, raw = m.groups()
            values = {v.strip() for v in raw.split(",") if v.strip()}
            ok = labels.get(key) in values if op == "in" else labels.get(key) not in values
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            ok = labels.get(key) != value
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            ok = labels.get(key) == value
        elif req.startswith("!"):
            ok = req[1:].strip() not in labels
        elif re.fullmatch(r"[\w./-]+", req):
            ok = req in labels
        else:
            raise ValueError(f"unparsable label selector requirement {req!r}")
        if not ok:
            return False
    return True


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_selector_matches(selector: str | None, obj: Obj) -> bool:
    """Evaluate a field selector of ``path=value`` / ``path!=value`` terms.

    Args:
        selector: The selector (``status.phase!=Succeeded,spec.nodeName=n1``).
        obj: The object.

    Returns:
        True if every term holds.
    """
    for req in _split_selector(selector or ""):
        if "!=" in req:
            path, value = req.split("!=", 1)
            if _field(obj, path.strip()) == value.strip():
                return False
        else:
            path, value = req.replace("==", "=").split("=", 1)
            if _field(obj, path.strip()) != value.strip():
                return False
    return True


# ---------------------------------------------------------------------------- the fake


@dataclass
class _Quota:
    name: str
    hard: dict[str, str]


@dataclass
class FakeKube:
    """State and controls of one fake cluster (thread-safe).

    Attributes:
        url: Base URL of the server (set by :func:`serve`).
        kubeconfig: Path of the kubeconfig written for it (set by :func:`serve`).
        namespace: Namespace the adapter is pointed at.
        rayjob_crd: Whether the RayJob CRD (and its ``ray.io/v1`` API group) exists.
        keep_terminating: Keep deleted Jobs/RayJobs around with a ``deletionTimestamp``
            (as a real Foreground deletion does while pods shut down) until
            :meth:`finish_deletions`.
        requests: Every request answered, in order.
        deletions: ``(kind, name, propagationPolicy)`` of every DELETE of a workload.
        now: The fake clock used for timestamps.
    """

    url: str = ""
    kubeconfig: str = ""
    namespace: str = "jobs"
    rayjob_crd: bool = True
    keep_terminating: bool = False
    requests: list[Request] = field(default_factory=list)
    deletions: list[tuple[str, str, str]] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _nodes: dict[str, Obj] = field(default_factory=dict)
    _objs: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    _quotas: dict[tuple[str, str], _Quota] = field(default_factory=dict)
    _errors: list[Injected] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- fleet-entry options -------------------------------------------------------------

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
        gpus: int = 8,
        region: str | None = "US-EAST-04",
        zone: str | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        ready: bool = True,
        unschedulable: bool = False,
    ) -> None:
        """Add one node.

        Args:
            name: Node name.
            gpu_class: Value of ``gpu.nvidia.com/class`` (None: no such label).
            gpus: Allocatable ``nvidia.com/gpu``.
            region: ``topology.kubernetes.io/region`` (None: no such label).
            zone: ``topology.kubernetes.io/zone`` (None: no such label).
            labels: Extra labels.
            taints: Taints (``key``, ``value``, ``effect``).
            ready: Whether the Ready condition is True.
            unschedulable: Whether the node is cordoned.
        """
        all_labels = {"kubernetes.io/hostname": name, "node.coreweave.cloud/state": "production"}
        if gpu_class is not None:
            all_labels["gpu.nvidia.com/class"] = gpu_class
        if region is not None:
            all_labels["topology.kubernetes.io/region"] = region
        if zone is not None:
            all_labels["topology.kubernetes.io/zone"] = zone
        all_labels.update(labels or {})
        allocatable = {"cpu": "128", "memory": "1Ti", "pods": "110"}
        if gpus:
            allocatable[GPU] = str(gpus)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": self._meta(name, None, all_labels),
            "spec": {"taints": [dict(t) for t in taints], "unschedulable": unschedulable},
            "status": {
                "allocatable": allocatable,
                "capacity": dict(allocatable),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "message": "",
                        "lastHeartbeatTime": _ts(self.now),
                        "lastTransitionTime": _ts(self.now),
                    }
                ],
            },
        }
        with self._lock:
            self._nodes[name] = node
            self._schedule()

    def add_nodes(self, n: int, *, prefix: str = "", **kwargs: Any) -> list[str]:
        """Add ``n`` alike nodes named ``<prefix or class>-<i>``; see :meth:`add_node`.

        Returns:
            The node names.
        """
        base = prefix or str(kwargs.get("gpu_class") or "node").lower().replace("_", "-")
        names = [f"{base}-{len(self._nodes) + i}" for i in range(n)]
        for name in names:
            self.add_node(name, **kwargs)
        return names

    def add_pod(
        self, name: str, *, namespace: str = "other", node: str, gpus: int, phase: str = "Running"
    ) -> None:
        """Add a pod of someone else's that holds GPUs on ``node``.

        Args:
            name: Pod name.
            namespace: Its namespace.
            node: Node it is bound to.
            gpus: GPUs it requests.
            phase: Its phase.
        """
        pod = self._pod(name, namespace, {}, self._container("main", "busybox", gpus), {})
        pod["spec"]["nodeName"] = node
        pod["status"]["phase"] = phase
        with self._lock:
            self._objs[("pods", namespace, name)] = pod

    def set_quota(self, name: str, hard: Mapping[str, str], namespace: str | None = None) -> None:
        """Create or replace a ResourceQuota (``requests.nvidia.com/gpu``, ``count/jobs.batch``).

        Args:
            name: Quota name.
            hard: Its hard limits.
            namespace: Namespace (default: the adapter's).
        """
        with self._lock:
            ns = namespace or self.namespace
            self._quotas[(ns, name)] = _Quota(name, dict(hard))

    # -- fault injection -----------------------------------------------------------------

    def inject(
        self,
        status: int,
        *,
        method: str = "*",
        path: str = "",
        reason: str = "",
        message: str = "injected",
        times: int | None = 1,
    ) -> Injected:
        """Answer matching requests with an error Status.

        Args:
            status: HTTP status code.
            method: Method to match (``*``: any).
            path: Regular expression searched in the request path.
            reason: Status reason.
            message: Status message.
            times: How many requests to fail (None: until :meth:`clear_errors`).

        Returns:
            The injection.
        """
        error = Injected(method.upper(), path, status, reason, message, times)
        with self._lock:
            self._errors.append(error)
        return error

    def clear_errors(self) -> None:
        """Remove every injected error."""
        with self._lock:
            self._errors.clear()

    # -- driving workloads ---------------------------------------------------------------

    def succeed(self, name: str, namespace: str | None = None) -> None:
        """Make workload ``name`` (Job or RayJob) finish successfully."""
        self._finish(name, namespace, ok=True, exit_code=0, message="")

    def fail(
        self,
        name: str,
        *,
        exit_code: int = 1,
        message: str = "failed",
        namespace: str | None = None,
    ) -> None:
        """Make workload ``name`` fail with ``exit_code``."""
        self._finish(name, namespace, ok=False, exit_code=exit_code, message=message)

    def evict(self, name: str, *, how: str = "evicted", namespace: str | None = None) -> None:
        """Evict or preempt one running pod of workload ``name``; the workload then fails.

        As in Kubernetes (1.26+), the pod gets a ``DisruptionTarget`` condition and fails;
        a pod preempted by the scheduler or evicted through the Eviction API is then
        deleted, while a kubelet (node-pressure) eviction leaves the failed pod in place.
        A Job's controller applies the Job's ``podFailurePolicy`` (``FailJob`` rules on pod
        conditions: ``FailureTarget`` and ``Failed`` with reason ``PodFailurePolicy``),
        else fails it with ``BackoffLimitExceeded``; a RayJob fails.

        Args:
            name: Workload (Job or RayJob) name.
            how: ``evicted`` (kubelet eviction: reason Evicted, DisruptionTarget
                TerminationByKubelet; the pod stays), ``preempted`` (scheduler preemption:
                DisruptionTarget PreemptionByScheduler; the pod is deleted) or ``disrupted``
                (API-initiated eviction: DisruptionTarget EvictionByEvictionAPI; the pod
                is deleted).
            namespace: Namespace (default: the adapter's).

        Raises:
            KeyError: If the workload has no pod.
            ValueError: If ``how`` is none of the above.
        """
        reasons = {
            "evicted": "TerminationByKubelet",
            "preempted": "PreemptionByScheduler",
            "disrupted": "EvictionByEvictionAPI",
        }
        if how not in reasons:
            raise ValueError(f"how must be one of {sorted(reasons)}, got {how!r}")
        ns = namespace or self.namespace
        with self._lock:
            pods = self._pods_of(ns, name)
            if not pods:
                raise KeyError(f"workload {name} has no pods")
            pod = pods[0]
            status = pod["status"]
            status["phase"] = "Failed"
            reason = reasons[how]
            status["conditions"].append(
                self._cond("DisruptionTarget", "True", reason, f"{reason} of the pod")
            )
            if how == "evicted":
                status["reason"] = "Evicted"
                status["message"] = "The node was low on resource: memory."
            self._terminate_containers(pod, 137, "Error")
            if ("jobs", ns, name) in self._objs:
                self._job_pod_failed(ns, name, pod, "pod was evicted")
            else:
                self._workload_failed(ns, name, "BackoffLimitExceeded", "pod was evicted")
            if how != "evicted":
                # The API server removes the victim once it has shut down (the Job
                # controller has accounted it first: its finalizer holds the pod till then).
                self._objs.pop(("pods", ns, pod["metadata"]["name"]), None)
            self._schedule()

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward (timestamps of objects created afterwards)."""
        with self._lock:
            self.now += timedelta(seconds=seconds)

    def finish_deletions(self) -> None:
        """Complete every deletion held by ``keep_terminating``."""
        with self._lock:
            for key, obj in list(self._objs.items()):
                if obj["metadata"].get("deletionTimestamp"):
                    self._delete_now(key)

    def object(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """Return a copy of one stored object (``jobs``, ``rayjobs``, ``services``, ``pods``)."""
        with self._lock:
            obj = self._objs.get((kind, namespace or self.namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of every stored object of a kind in a namespace."""
        ns = namespace or self.namespace
        with self._lock:
            return [copy.deepcopy(o) for (k, n, _), o in self._objs.items() if (k, n) == (kind, ns)]

    def objects_nodes(self) -> list[str]:
        """Return the node names, sorted."""
        with self._lock:
            return sorted(self._nodes)

    def pods_of(self, name: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of the pods of workload ``name``."""
        with self._lock:
            return copy.deepcopy(self._pods_of(namespace or self.namespace, name))

    def count(self, method: str, path_regex: str) -> int:
        """Count answered requests whose method and path match."""
        return sum(1 for r in self.requests if r.method == method and re.search(path_regex, r.path))

    # -- internals: object building -----------------------------------------------------

    def _meta(self, name: str, namespace: str | None, labels: Mapping[str, str]) -> Obj:
        meta: Obj = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "creationTimestamp": _ts(self.now),
            "labels": dict(labels),
            "annotations": {},
        }
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    @staticmethod
    def _cond(kind: str, status: str, reason: str = "", message: str = "") -> Obj:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": _ts(_EPOCH),
        }

    @staticmethod
    def _container(name: str, image: str, gpus: int) -> Obj:
        limits = {GPU: str(gpus)} if gpus else {}
        return {"name": name, "image": image, "resources": {"limits": limits, "requests": limits}}

    def _pod(
        self, name: str, ns: str, labels: Mapping[str, str], container: Obj, pod_spec: Obj
    ) -> Obj:
        spec = copy.deepcopy(pod_spec)
        spec["containers"] = [container]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._meta(name, ns, labels),
            "spec": spec,
            "status": {"phase": "Pending", "conditions": []},
        }

    # -- internals: the "controller" -----------------------------------------------------

    @staticmethod
    def _pod_gpus(pod: Obj) -> int:
        total = 0
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            value = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU)
            total += int(value or 0)
        return total

    def _used_gpus(self, node: str) -> int:
        return sum(
            self._pod_gpus(p)
            for (k, _, _), p in self._objs.items()
            if k == "pods"
            and p["spec"].get("nodeName") == node
            and p["status"]["phase"] in ("Pending", "Running")
        )

    @staticmethod
    def _tolerates(pod: Obj, node: Obj) -> bool:
        tolerations = pod["spec"].get("tolerations") or []
        for taint in node["spec"].get("taints") or []:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(
                (t.get("key") in (None, "", taint["key"]))
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                and t.get("effect") in (None, "", taint["effect"])
                for t in tolerations
            ):
                return False
        return True

    def _fits(self, pod: Obj, node: Obj) -> str | None:
        """Why ``pod`` cannot go on ``node`` (None: it fits)."""
        labels = node["metadata"]["labels"]
        selector = pod["spec"].get("nodeSelector") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            return "didn't match Pod's node affinity/selector"
        if node["spec"].get("unschedulable"):
            return "node(s) were unschedulable"
        if not self._tolerates(pod, node):
            return "node(s) had untolerated taint"
        free = int(node["status"]["allocatable"].get(GPU, "0")) - self._used_gpus(
            node["metadata"]["name"]
        )
        if self._pod_gpus(pod) > free:
            return f"Insufficient {GPU}"
        return None

    def _schedule(self) -> None:
        """Bind every pending, unbound pod that fits somewhere (first fit)."""
        for (kind, _, _), pod in sorted(self._objs.items()):
            if kind != "pods" or pod["spec"].get("nodeName") or pod["status"]["phase"] != "Pending":
                continue
            reasons: dict[str, int] = {}
            for node in self._nodes.values():
                why = self._fits(pod, node)
                if why is None:
                    pod["spec"]["nodeName"] = node["metadata"]["name"]
                    pod["status"]["phase"] = "Running"
                    pod["status"]["conditions"] = [
                        self._cond("PodScheduled", "True"),
                        self._cond("Ready", "True"),
                    ]
                    pod["status"]["containerStatuses"] = [
                        {
                            "name": c["name"],
                            "image": c.get("image", ""),
                            "imageID": "",
                            "ready": True,
                            "restartCount": 0,
                            "started": True,
                            "state": {"running": {"startedAt": _ts(self.now)}},
                        }
                        for c in pod["spec"]["containers"]
                    ]
                    break
                reasons[why] = reasons.get(why, 0) + 1
            else:
                detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
                message = f"0/{len(self._nodes)} nodes are available: {detail}."
                pod["status"]["conditions"] = [
                    self._cond("PodScheduled", "False", "Unschedulable", message)
                ]
        self._refresh_workloads()

    def _pods_of(self, ns: str, workload: str) -> list[Obj]:
        return [
            p
            for (k, n, _), p in sorted(self._objs.items())
            if k == "pods"
            and n == ns
            and p["metadata"]["annotations"].get("fake/owner") == workload
        ]

    def _create_pods(self, ns: str, owner: str, template: Obj, names: list[str]) -> None:
        meta = template.get("metadata") or {}
        spec = template.get("spec") or {}
        containers = spec.get("containers") or [{"name": "main", "image": "busybox"}]
        for pod_name in names:
            pod = self._pod(
                pod_name,
                ns,
                meta.get("labels") or {},
                copy.deepcopy(containers[0]),
                {k: v for k, v in spec.items() if k != "containers"},
            )
            pod["spec"]["containers"] = copy.deepcopy(containers)
            pod["metadata"]["annotations"]["fake/owner"] = owner
            if self._gpu_quota_exceeded(ns, self._pod_gpus(pod)):
                # The Job controller gets the 403 and retries; no pod exists meanwhile.
                continue
            self._objs[("pods", ns, pod_name)] = pod

    def _gpu_quota_exceeded(self, ns: str, more: int) -> bool:
        for (qns, _), quota in self._quotas.items():
            hard = quota.hard.get(f"requests.{GPU}")
            if qns == ns and hard is not None and self._ns_gpus(ns) + more > int(hard):
                return True
        return False

    def _ns_gpus(self, ns: str) -> int:
        return sum(
            self._pod_gpus(p)
            for (k, n, _), p in self._objs.items()
            if k == "pods" and n == ns and p["status"]["phase"] in ("Pending", "Running")
        )

    def _refresh_workloads(self) -> None:
        """Recompute the status of live Jobs and RayJobs from their pods."""
        for (kind, ns, name), obj in self._objs.items():
            if kind not in ("jobs", "rayjobs") or obj["metadata"].get("deletionTimestamp"):
                continue
            status = obj["status"]
            pods = self._pods_of(ns, name)
            running = sum(p["status"]["phase"] == "Running" for p in pods)
            if kind == "jobs":
                if any(c["type"] in ("Complete", "Failed") for c in status["conditions"]):
                    continue
                status["active"] = sum(p["status"]["phase"] in ("Pending", "Running") for p in pods)
                status["ready"] = running
            elif status.get("jobDeploymentStatus") not in ("Complete", "Failed"):
                want = len(pods) and running == len(pods)
                status["jobDeploymentStatus"] = "Running" if want else "Initializing"
                status["jobStatus"] = "RUNNING" if want else "PENDING"

    def _terminate_containers(self, pod: Obj, exit_code: int, reason: str) -> None:
        pod["status"]["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "finishedAt": _ts(self.now),
                    }
                },
            }
            for c in pod["spec"]["containers"]
        ]

    def _finish(
        self, name: str, namespace: str | None, *, ok: bool, exit_code: int, message: str
    ) -> None:
        ns = namespace or self.namespace
        with self._lock:
            for pod in self._pods_of(ns, name):
                pod["status"]["phase"] = "Succeeded" if ok else "Failed"
                self._terminate_containers(pod, exit_code, "Completed" if ok else "Error")
            if ok:
                if ("jobs", ns, name) in self._objs:
                    job = self._objs[("jobs", ns, name)]
                    job["status"]["conditions"].append(self._cond("Complete", "True"))
                    job["status"]["succeeded"] = int(job["spec"].get("completions") or 1)
                    job["status"]["active"] = 0
                if ("rayjobs", ns, name) in self._objs:
                    ray = self._objs[("rayjobs", ns, name)]["status"]
                    ray.update(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
            else:
                self._workload_failed(ns, name, "BackoffLimitExceeded", message)
            self._schedule()

    def _job_pod_failed(self, ns: str, name: str, pod: Obj, message: str) -> None:
        """The Job controller's verdict on a failed pod: the pod failure policy, else backoff.

        Only ``FailJob`` rules with ``onPodConditions`` are evaluated (what the adapter
        sets); with ``backoffLimit: 0`` any other failed pod fails the Job.
        """
        job = self._objs[("jobs", ns, name)]
        policy = job["spec"].get("podFailurePolicy") or {}
        conditions = {c["type"]: c for c in pod["status"].get("conditions") or [] if c.get("type")}
        for index, rule in enumerate(policy.get("rules") or []):
            for pattern in rule.get("onPodConditions") or []:
                cond = conditions.get(pattern.get("type"))
                if cond is None or cond.get("status") != (pattern.get("status") or "True"):
                    continue
                if rule.get("action") != "FailJob":
                    continue
                text = (
                    f"Pod {ns}/{pod['metadata']['name']} has condition {cond['type']} "
                    f"matching FailJob rule at index {index}"
                )
                job["status"]["conditions"].append(
                    self._cond("FailureTarget", "True", "PodFailurePolicy", text)
                )
                self._workload_failed(ns, name, "PodFailurePolicy", text)
                return
        self._workload_failed(ns, name, "BackoffLimitExceeded", message)

    def _workload_failed(self, ns: str, name: str, reason: str, message: str) -> None:
        if ("jobs", ns, name) in self._objs:
            job = self._objs[("jobs", ns, name)]
            job["status"]["conditions"].append(self._cond("Failed", "True", reason, message))
            job["status"]["failed"] = 1
            job["status"]["active"] = 0
        if ("rayjobs", ns, name) in self._objs:
            ray = self._objs[("rayjobs", ns, name)]["status"]
            ray.update(jobDeploymentStatus="Failed", jobStatus="FAILED", message=message)

    def _delete_now(self, key: tuple[str, str, str]) -> None:
        obj = self._objs.pop(key, None)
        if obj is None:
            return
        kind, ns, name = key
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self._objs.items()):
            owners = other["metadata"].get("ownerReferences") or []
            owned = any(o.get("uid") == uid for o in owners)
            if owned or (
                other_key[0] == "pods"
                and other_key[1] == ns
                and other["metadata"]["annotations"].get("fake/owner") == name
                and kind in ("jobs", "rayjobs")
            ):
                self._objs.pop(other_key, None)
        self._schedule()

    # -- internals: HTTP ---------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Obj]:
        """Answer one request.

        Args:
            method: HTTP method.
            raw_path: Path with query string.
            body: Request body.

        Returns:
            Status code and JSON document.
        """
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(Request(method, path, query))
            for error in self._errors:
                if error.method in ("*", method) and re.search(error.path, path):
                    if error.times is not None:
                        error.times -= 1
                        if error.times <= 0:
                            self._errors.remove(error)
                    return error.status, _status(error.status, error.reason, error.message)
            doc = json.loads(body) if body else {}
            try:
                return self._route(method, path, query, doc)
            except _HttpError as exc:
                return exc.code, _status(exc.code, exc.reason, exc.message)

    def _route(self, method: str, path: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        for pattern, handler in self._routes():
            m = re.fullmatch(pattern, path)
            if m:
                return handler(method, query, doc, **m.groupdict())
        raise _HttpError(
            404, "NotFound", f"the server could not find the requested resource ({path})"
        )

    def _routes(self) -> list[tuple[str, Callable[..., tuple[int, Obj]]]]:
        ns = r"/namespaces/(?P<ns>[^/]+)"
        name = r"(?:/(?P<name>[^/]+))?"
        return [
            (r"/version", self._version),
            (r"/api/v1/nodes", self._list_nodes),
            (r"/api/v1/pods", self._pods),
            (rf"/api/v1{ns}/pods", self._pods),
            (rf"/api/v1{ns}/services{name}", self._crud("services")),
            (rf"/api/v1{ns}/resourcequotas", self._list_quotas),
            (rf"/apis/batch/v1{ns}/jobs{name}", self._crud("jobs")),
            (r"/apis/ray.io/v1", self._discovery),
            (rf"/apis/ray.io/v1{ns}/rayjobs{name}", self._crud("rayjobs")),
            (
                r"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/(?P<name>[^/]+)",
                self._crd,
            ),
        ]

    def _version(self, method: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        return 200, {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0",
            "gitCommit": "fake",
            "gitTreeState": "clean",
            "buildDate": _ts(_EPOCH),
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _list_nodes(self, method: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        items = [
            n
            for n in self._nodes.values()
            if label_selector_matches(query.get("labelSelector"), n["metadata"]["labels"])
        ]
        return 200, _list("NodeList", "v1", items)

    def _pods(
        self, method: str, query: dict[str, str], doc: Obj, ns: str | None = None
    ) -> tuple[int, Obj]:
        items = [
            p
            for (k, n, _), p in sorted(self._objs.items())
            if k == "pods"
            and (ns is None or n == ns)
            and label_selector_matches(query.get("labelSelector"), p["metadata"]["labels"])
            and field_selector_matches(query.get("fieldSelector"), p)
        ]
        return 200, _list("PodList", "v1", items)

    def _list_quotas(
        self, method: str, query: dict[str, str], doc: Obj, ns: str
    ) -> tuple[int, Obj]:
        items = []
        for (qns, qname), quota in sorted(self._quotas.items()):
            if qns != ns:
                continue
            used = {}
            for key in quota.hard:
                if key == f"requests.{GPU}":
                    used[key] = str(self._ns_gpus(ns))
                elif key == "count/jobs.batch":
                    used[key] = str(sum(1 for (k, n, _) in self._objs if (k, n) == ("jobs", ns)))
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": self._meta(qname, ns, {}),
                    "spec": {"hard": dict(quota.hard)},
                    "status": {"hard": dict(quota.hard), "used": used},
                }
            )
        return 200, _list("ResourceQuotaList", "v1", items)

    def _discovery(self, method: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        if not self.rayjob_crd:
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        return 200, {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "ray.io/v1",
            "resources": [
                {
                    "name": plural,
                    "singularName": plural[:-1],
                    "namespaced": True,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for plural, kind in (
                    ("rayjobs", "RayJob"),
                    ("rayclusters", "RayCluster"),
                    ("rayservices", "RayService"),
                )
            ],
        }

    def _crd(self, method: str, query: dict[str, str], doc: Obj, name: str) -> tuple[int, Obj]:
        if name != "rayjobs.ray.io" or not self.rayjob_crd:
            raise _HttpError(
                404,
                "NotFound",
                f'customresourcedefinitions.apiextensions.k8s.io "{name}" not found',
            )
        return 200, {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": self._meta(name, None, {}),
            "spec": {
                "group": "ray.io",
                "names": {"kind": "RayJob", "plural": "rayjobs", "singular": "rayjob"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True}],
            },
        }

    def _crud(self, kind: str) -> Callable[..., tuple[int, Obj]]:
        def handler(
            method: str, query: dict[str, str], doc: Obj, ns: str, name: str | None = None
        ) -> tuple[int, Obj]:
            if kind == "rayjobs" and not self.rayjob_crd:
                raise _HttpError(404, "NotFound", "the server could not find the resource")
            if method == "POST" and name is None:
                return self._create(kind, ns, doc)
            if method == "GET" and name is None:
                items = [
                    o
                    for (k, n, _), o in sorted(self._objs.items())
                    if (k, n) == (kind, ns)
                    and label_selector_matches(query.get("labelSelector"), o["metadata"]["labels"])
                ]
                api = {"jobs": "batch/v1", "rayjobs": "ray.io/v1", "services": "v1"}[kind]
                list_kind = {"jobs": "JobList", "rayjobs": "RayJobList", "services": "ServiceList"}
                return 200, _list(list_kind[kind], api, items)
            obj = self._objs.get((kind, ns, name or ""))
            if obj is None:
                raise _HttpError(404, "NotFound", f'{kind} "{name}" not found')
            if method == "GET":
                return 200, obj
            if method == "DELETE":
                policy = query.get("propagationPolicy") or doc.get("propagationPolicy") or ""
                self.deletions.append((kind, obj["metadata"]["name"], policy))
                if self.keep_terminating and kind in ("jobs", "rayjobs"):
                    obj["metadata"]["deletionTimestamp"] = _ts(self.now)
                    if policy == "Foreground":
                        obj["metadata"]["finalizers"] = ["foregroundDeletion"]
                    return 200, obj
                self._delete_now((kind, ns, obj["metadata"]["name"]))
                return 200, _status(200, "", "deleted", success=True)
            raise _HttpError(405, "MethodNotAllowed", f"{method} not allowed")

        return handler

    def _create(self, kind: str, ns: str, doc: Obj) -> tuple[int, Obj]:
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise _HttpError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name')
        if (kind, ns, name) in self._objs:
            raise _HttpError(409, "AlreadyExists", f'{kind} "{name}" already exists')
        for (qns, qname), quota in self._quotas.items():
            hard = quota.hard.get(f"count/{kind}.batch") if kind == "jobs" else None
            used = sum(1 for (k, n, _) in self._objs if (k, n) == (kind, ns))
            if qns == ns and hard is not None and used + 1 > int(hard):
                raise _HttpError(
                    403,
                    "Forbidden",
                    f'{kind} "{name}" is forbidden: exceeded quota: {qname}, requested: '
                    f"count/jobs.batch=1, used: count/jobs.batch={used}, "
                    f"limited: count/jobs.batch={hard}",
                )
        obj = copy.deepcopy(doc)
        stored_meta = self._meta(name, ns, meta.get("labels") or {})
        stored_meta["annotations"] = dict(meta.get("annotations") or {})
        if meta.get("ownerReferences"):
            stored_meta["ownerReferences"] = meta["ownerReferences"]
        obj["metadata"] = stored_meta
        if kind == "jobs":
            obj["status"] = {"conditions": [], "active": 0, "succeeded": 0, "failed": 0}
            spec = obj.get("spec") or {}
            n = int(spec.get("parallelism") or spec.get("completions") or 1)
            names = [f"{name}-{i}" for i in range(n)]
            obj["spec"].setdefault("backoffLimit", 6)
            obj["spec"]["template"].setdefault("metadata", {})
            self._objs[(kind, ns, name)] = obj
            self._create_pods(ns, name, obj["spec"]["template"], names)
        elif kind == "rayjobs":
            obj["status"] = {"jobDeploymentStatus": "Initializing", "jobStatus": "PENDING"}
            self._objs[(kind, ns, name)] = obj
            cluster = obj["spec"].get("rayClusterSpec") or {}
            head = cluster.get("headGroupSpec") or {}
            self._create_pods(ns, name, head.get("template") or {}, [f"{name}-head"])
            for group in cluster.get("workerGroupSpecs") or []:
                replicas = int(group.get("replicas") or 0)
                names = [f"{name}-{group.get('groupName', 'w')}-{i}" for i in range(replicas)]
                self._create_pods(ns, name, group.get("template") or {}, names)
        else:
            obj["status"] = obj.get("status") or {}
            if kind == "services":
                obj["status"] = {"loadBalancer": {}}
            self._objs[(kind, ns, name)] = obj
        self._schedule()
        return 201, obj


class _HttpError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status(code: int, reason: str, message: str, *, success: bool = False) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if success else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _list(kind: str, api_version: str, items: list[Obj]) -> Obj:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            code, doc = 401, _status(401, "Unauthorized", "Unauthorized")
        else:
            code, doc = self.server.kube.handle(self.command, self.path, body)
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kube = kube


def write_kubeconfig(path: Path, url: str, token: str = TOKEN, namespace: str = "jobs") -> None:
    """Write a kubeconfig with one context ``fake`` pointing at ``url`` with ``token``.

    Args:
        path: File to write.
        url: API server URL.
        token: Bearer token.
        namespace: The context's namespace.
    """
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
        ],
    }
    # JSON is valid YAML, and the kubernetes client reads kubeconfigs with a YAML parser.
    path.write_text(json.dumps(doc, indent=2))


@contextlib.contextmanager
def serve(*, namespace: str = "jobs", rayjob_crd: bool = True) -> Iterator[FakeKube]:
    """Run a fake Kubernetes API server on 127.0.0.1 for the duration of the block.

    Args:
        namespace: Namespace the yielded options point the adapter at.
        rayjob_crd: Whether the RayJob CRD starts installed.

    Yields:
        The fake cluster; ``.options`` are fleet-entry options for the adapter.
    """
    kube = FakeKube(namespace=namespace, rayjob_crd=rayjob_crd)
    server = _Server(kube)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    with tempfile.TemporaryDirectory(prefix="fake-kube-") as tmp:
        kube.url = f"http://127.0.0.1:{server.server_address[1]}"
        kube.kubeconfig = str(Path(tmp) / "kubeconfig")
        write_kubeconfig(Path(kube.kubeconfig), kube.url, namespace=namespace)
        thread.start()
        try:
            yield kube
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
