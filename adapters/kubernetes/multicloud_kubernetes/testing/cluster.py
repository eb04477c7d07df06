"""The fake cluster itself: objects, the controllers behind them, the HTTP API.

See :mod:`multicloud_kubernetes.testing` for what it serves and stands in for; presets
(:class:`multicloud_kubernetes.testing.FakeKube`, CoreWeave's) subclass it with their own
way of labelling nodes.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from multicloud.testing.fakecloud import Call, FakeCloud
from multicloud_kubernetes.testing.kueue import Kueue
from multicloud_kubernetes.testing.rules import (
    KINDS,
    Obj,
    Refused,
    check,
    field_selector_matches,
    label_selector_matches,
    quantity,
    ts,
)

__all__ = ["TOKEN", "FakeCluster", "write_kubeconfig"]

GPU, RDMA = "nvidia.com/gpu", "rdma/ib"
TOKEN = "fake-kube-token"
INDEX = "batch.kubernetes.io/job-completion-index"


class FakeCluster(FakeCloud):
    """One fake cluster: its objects, its controllers and the test controls (thread-safe).

    Args:
        namespace: Namespace the adapter is pointed at.
        rayjob_crd: Whether KubeRay (the ``ray.io/v1`` API) is installed.
        kueue: The ``kueue.x-k8s.io`` version served, when Kueue is installed.

    Attributes:
        url: Base URL of the server (set by ``serve``).
        kubeconfig: Path of the kubeconfig written for it (set by ``serve``).
        keep_terminating: Keep deleted Jobs/RayJobs, with a ``deletionTimestamp``, until
            :meth:`finish_deletions` (as a Foreground deletion while pods shut down).
        requests: Every request answered, in order.
        deletions: ``(plural, name, propagationPolicy)`` of every DELETE of a workload.
        now: The fake clock (creation and transition times).
        kueue: Kueue's part: queues, Workloads, its test controls.
    """

    def __init__(self, namespace: str = "jobs", *, rayjob_crd: bool = True,
                 kueue: str | None = None) -> None:
        super().__init__()
        self.url = self.kubeconfig = ""
        self.namespace, self.rayjob_crd, self.keep_terminating = namespace, rayjob_crd, False
        self.requests: list[Call] = []
        self.deletions: list[tuple[str, str, str]] = []
        self.now = datetime.now(timezone.utc)
        self.objs: dict[tuple[str, str, str], Obj] = {}
        self._secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.lock = threading.RLock()
        self.kueue = Kueue(self, kueue)

    @property
    def options(self) -> dict[str, Any]:
        """Fleet-entry options that point the adapter at this fake (plain data)."""
        return {"kubeconfig": self.kubeconfig, "context": "fake", "namespace": self.namespace}

    # -- cluster set-up ------------------------------------------------------------------

    def put_node(
        self,
        name: str,
        labels: Mapping[str, str],
        *,
        gpus: int = 8,
        gpu_resource: str = GPU,
        region: str | None = None,
        zone: str | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        ready: bool = True,
        unschedulable: bool = False,
        memory: str = "1Ti",
        rdma: bool = False,
    ) -> None:
        """Add or replace one node with these labels (presets label nodes their way).

        Args:
            name: Node name.
            labels: Its labels (besides hostname, region and zone).
            gpus: Allocatable GPUs.
            gpu_resource: Their extended resource.
            region: ``topology.kubernetes.io/region`` (None: no such label).
            zone: ``topology.kubernetes.io/zone`` (None: no such label).
            taints: Taints (``key``, ``value``, ``effect``).
            ready: Whether the Ready condition is True.
            unschedulable: Whether the node is cordoned.
            memory: Allocatable memory.
            rdma: Whether it advertises ``rdma/ib``.
        """
        all_labels = {"kubernetes.io/hostname": name}
        for key, value in (("topology.kubernetes.io/region", region),
                           ("topology.kubernetes.io/zone", zone)):
            if value is not None:
                all_labels[key] = value
        all_labels.update(labels)
        allocatable = {"cpu": "128", "memory": memory, "pods": "110"}
        if gpus:
            allocatable[gpu_resource] = str(gpus)
        if rdma:
            allocatable[RDMA] = "100"
        cond = {"type": "Ready", "status": "True" if ready else "False",
                "lastTransitionTime": self.stamp()}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": self.meta(name, None, all_labels),
                "spec": {"taints": [dict(t) for t in taints], "unschedulable": unschedulable},
                "status": {"allocatable": allocatable, "capacity": dict(allocatable),
                           "conditions": [cond]}}
        with self.lock:
            self.objs[("nodes", "", name)] = node
            self.reconcile()

    add_node: Callable[..., None]
    """Add one node, labelled the preset's way (each preset defines it over :meth:`put_node`)."""
    NAMED_BY: ClassVar[tuple[str, ...]] = ()
    """``add_node`` arguments whose value names the nodes ``add_nodes`` adds."""

    def add_nodes(self, n: int, *, prefix: str = "", **kwargs: Any) -> list[str]:
        """Add ``n`` alike nodes named ``<prefix or type>-<i>``; see ``add_node``."""
        kind = prefix or next((str(kwargs[k]) for k in self.NAMED_BY if kwargs.get(k)), "node")
        base = kind.lower().replace("_", "-")
        names = [f"{base}-{len(self.node_names()) + i}" for i in range(n)]
        for name in names:
            self.add_node(name, **kwargs)
        return names

    def delete_node(self, name: str) -> None:
        """Remove a node (a node pool scaled down or deleted)."""
        with self.lock:
            self.objs.pop(("nodes", "", name), None)

    def add_pod(
        self, name: str, *, namespace: str = "other", node: str, gpus: int, phase: str = "Running"
    ) -> None:
        """Add someone else's pod holding ``gpus`` GPUs on ``node``."""
        limits = {GPU: str(gpus)}
        pod = self._pod(name, namespace, {}, {}, {"containers": [
            {"name": "main", "image": "busybox", "resources": {"limits": limits,
                                                               "requests": limits}}]})
        pod["spec"]["nodeName"], pod["status"]["phase"] = node, phase
        with self.lock:
            self.objs[("pods", namespace, name)] = pod

    def set_quota(self, name: str, hard: Mapping[str, str], namespace: str | None = None) -> None:
        """Create or replace a ResourceQuota (``requests.nvidia.com/gpu``, ``count/jobs.batch``)."""
        ns = namespace or self.namespace
        quota = {"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": self.meta(name, ns, {}), "spec": {"hard": dict(hard)}}
        with self.lock:
            self.objs[("resourcequotas", ns, name)] = quota

    def add_secret(self, name: str, data: Mapping[str, str], namespace: str | None = None) -> None:
        """Create a Secret the kubelet resolves ``secretKeyRef`` from."""
        with self.lock:
            self._secrets[(namespace or self.namespace, name)] = dict(data)

    # -- driving workloads (the shared vocabulary) --------------------------------------

    def finish(self, workload: str, exit_code: int) -> None:
        """Every pod's command ends with ``exit_code``; the Job or RayJob follows.

        A Job completes, or fails with ``BackoffLimitExceeded``; a RayJob reads KubeRay's
        SUCCEEDED/Complete, or FAILED/Failed with reason ``AppFailed``.
        """
        ns, ok = self.namespace, exit_code == 0
        with self.lock:
            for pod in self._pods_of(ns, workload):
                pod["status"]["phase"] = "Succeeded" if ok else "Failed"
                self._exit(pod, exit_code)
            if ("jobs", ns, workload) in self.objs:
                job = self.objs[("jobs", ns, workload)]
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
            self.kueue.finished(ns, workload, ok)
            self.reconcile()

    def succeed(self, name: str) -> None:
        """``finish(name, 0)``."""
        self.finish(name, 0)

    def fail(self, name: str, *, exit_code: int = 1) -> None:
        """``finish(name, exit_code)``."""
        self.finish(name, exit_code)

    def preempt(self, workload: str) -> None:
        """Preempt the workload for a more important one, as this cluster would.

        Kueue's preemption where Kueue manages it (:meth:`Kueue.evict`: suspended, requeued,
        held out until :meth:`Kueue.readmit`); else the kube-scheduler preempting every pod.
        """
        with self.lock:
            if self.kueue.workload(workload) is not None:
                self.kueue.evict(workload)
                return
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
        with self.lock:
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
                if ("jobs", ns, workload) in self.objs:
                    self._job_pod_failed(ns, workload, pod)
                if how != "evicted":
                    self.objs.pop(("pods", ns, pod["metadata"]["name"]), None)
            if ("rayjobs", ns, workload) in self.objs:
                self._ray_end(workload, "FAILED", "Failed", "AppFailed", "a Ray node died",
                              keep_pods=True)
            self.reconcile()

    def stop(self, workload: str) -> None:
        """``ray job stop``: KubeRay reads jobStatus STOPPED and sets deployment Complete."""
        with self.lock:
            self._ray_end(workload, "STOPPED", "Complete", "", "Job was intentionally stopped")

    def fail_submitter(self, workload: str, *, deployment: str = "Failed") -> None:
        """The submitter Job fails before the Ray job reports (KubeRay's K8sJobMode).

        Args:
            workload: RayJob name.
            deployment: ``Failed`` with reason ``SubmissionFailed`` (KubeRay 1.2+), or
                ``Complete`` with no Ray verdict, as RayJobStatus.EndTime describes it.
        """
        reason = "SubmissionFailed" if deployment == "Failed" else ""
        with self.lock:
            job = self.objs[("rayjobs", self.namespace, workload)]["status"].get("jobStatus", "")
            self._ray_end(workload, job, deployment, reason,
                          "Job submission has failed. Reason: BackoffLimitExceeded")

    def finish_deletions(self) -> None:
        """Complete every deletion held by ``keep_terminating``."""
        with self.lock:
            for key, obj in list(self.objs.items()):
                if obj["metadata"].get("deletionTimestamp"):
                    self._delete(key)

    # -- reading state ------------------------------------------------------------------

    def object(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """Return a copy of one stored object (``jobs``, ``rayjobs``, ``services``, ``pods``)."""
        with self.lock:
            obj = self.objs.get((plural, namespace or self.namespace, name))
            return copy.deepcopy(obj)

    def objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of every stored object of a kind in a namespace."""
        ns = namespace or self.namespace
        with self.lock:
            return [copy.deepcopy(o) for (k, n, _), o in sorted(self.objs.items())
                    if (k, n) == (plural, ns)]

    def node_names(self) -> list[str]:
        """Return the node names, sorted."""
        with self.lock:
            return sorted(name for k, _, name in self.objs if k == "nodes")

    def pods_of(self, workload: str, namespace: str | None = None) -> list[Obj]:
        """Return copies of the pods of a workload, by completion index."""
        with self.lock:
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
        with self.lock:
            svc = self.objs.get(("services", ns, subdomain))
            if svc is None or svc["spec"].get("clusterIP") != "None":
                return None
            for (k, n, name), pod in sorted(self.objs.items()):
                spec = pod.get("spec") or {}
                if (k, n) == ("pods", ns) and (spec.get("hostname"), spec.get("subdomain")) == (
                    hostname, subdomain
                ) and label_selector_matches(",".join(f"{a}={b}" for a, b in
                                                      svc["spec"]["selector"].items()),
                                             pod["metadata"]["labels"]):
                    return name
        return None

    # -- objects ------------------------------------------------------------------------

    def stamp(self) -> str:
        """The fake clock's time, as the API server writes it."""
        return ts(self.now)

    def meta(self, name: str, namespace: str | None, labels: Mapping[str, str]) -> Obj:
        """Return new object metadata (uid, creation time, labels)."""
        meta: Obj = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                     "creationTimestamp": self.stamp(), "labels": dict(labels),
                     "annotations": {}}
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def _cond(self, kind: str, reason: str = "", message: str = "", status: str = "True") -> Obj:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": self.stamp()}

    def _pod(self, name: str, ns: str, labels: Mapping[str, str],
             annotations: Mapping[str, str], spec: Obj) -> Obj:
        meta = self.meta(name, ns, labels)
        meta["annotations"] = dict(annotations)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(spec),
                "status": {"phase": "Pending", "conditions": []}}

    def _pods_of(self, ns: str, workload: str) -> list[Obj]:
        pods = [p for (k, n, _), p in self.objs.items()
                if (k, n) == ("pods", ns) and _owner(p) == workload]
        return sorted(pods, key=lambda p: (int(p["metadata"]["annotations"].get(INDEX, 0)),
                                           p["metadata"]["name"]))

    def _exit(self, pod: Obj, code: int) -> None:
        pod["status"]["containerStatuses"] = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
             "restartCount": 0, "state": {"terminated": {
                 "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                 "finishedAt": self.stamp()}}}
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
            self.objs[("pods", ns, pod["metadata"]["name"])] = pod

    @staticmethod
    def _requests(pod: Obj) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            for key, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                out[key] = out.get(key, 0) + quantity(value)
        return out

    def _live_pods(self, ns: str | None = None) -> list[Obj]:
        return [p for (k, n, _), p in self.objs.items() if k == "pods" and (ns in (None, n))
                and p["status"]["phase"] in ("Pending", "Running")]

    def _over_quota(self, ns: str, gpus: float) -> bool:
        used = sum(self._requests(p).get(GPU, 0) for p in self._live_pods(ns))
        return any(used + gpus > quantity(q["spec"]["hard"][f"requests.{GPU}"])
                   for (k, n, _), q in self.objs.items()
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
            free = quantity(node["status"]["allocatable"].get(resource, 0)) - sum(
                self._requests(p).get(resource, 0) for p in held)
            if want > free:
                return f"Insufficient {resource}"
        return None

    def reconcile(self) -> None:
        """Kueue admits what fits; bind every pending pod that fits a node (first fit); KubeRay."""
        if self.kueue.installed:
            self.kueue.admit()
        nodes = [o for (k, _, _), o in sorted(self.objs.items()) if k == "nodes"]
        for (k, _, _), pod in sorted(self.objs.items()):
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
                         "restartCount": 0, "state": {"running": {"startedAt": self.stamp()}}}
                        for c in pod["spec"]["containers"]]
                    break
                why[misfit] = why.get(misfit, 0) + 1
            else:
                detail = ", ".join(f"{n} {w}" for w, n in sorted(why.items()))
                pod["status"]["conditions"] = [self._cond(
                    "PodScheduled", "Unschedulable",
                    f"0/{len(nodes)} nodes are available: {detail}.", status="False")]
        for (k, ns, name), obj in self.objs.items():
            if k == "rayjobs" and obj["status"].get("jobDeploymentStatus") == "Initializing":
                pods = self._pods_of(ns, name)
                if pods and all(p["status"]["phase"] == "Running" for p in pods):
                    obj["status"].update(jobDeploymentStatus="Running", jobStatus="RUNNING")

    def _job_pod_failed(self, ns: str, name: str, pod: Obj) -> None:
        """The Job controller's verdict on a failed pod: its pod failure policy, else backoff."""
        job = self.objs[("jobs", ns, name)]
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
                self.objs.pop(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))

    def _ray_end(self, workload: str, job: str, deployment: str, reason: str, message: str,
                 *, keep_pods: bool = False) -> None:
        """KubeRay ends a RayJob; with shutdownAfterJobFinishes its Ray cluster goes."""
        ns = self.namespace
        self.objs[("rayjobs", ns, workload)]["status"].update(
            jobStatus=job, jobDeploymentStatus=deployment, reason=reason, message=message,
            endTime=self.stamp())
        if not keep_pods:
            for pod in self._pods_of(ns, workload):
                self.objs.pop(("pods", ns, pod["metadata"]["name"]))

    def _delete(self, key: tuple[str, str, str]) -> None:
        obj = self.objs.pop(key, None)
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self.objs.items()):
            owners = other["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                self.objs.pop(other_key, None)
        self.reconcile()

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
        with self.lock:
            self.requests.append(call)
            try:
                return self._route(call.method, parts.path.rstrip("/"), query, call.body or {})
            except Refused as exc:
                return exc.code, _status(exc)

    def _groups(self) -> dict[str, tuple[str, ...]]:
        """The API group versions served, with their resources (discovery lists them)."""
        served = {"v1": ("nodes", "pods", "services", "resourcequotas"), "batch/v1": ("jobs",)}
        if self.rayjob_crd:
            served["ray.io/v1"] = ("rayjobs", "rayclusters")
        if self.kueue.version:
            served[f"kueue.x-k8s.io/{self.kueue.version}"] = ("workloads", "localqueues",
                                                              "clusterqueues")
        return served

    def _route(self, method: str, path: str, query: dict[str, str], doc: Obj) -> tuple[int, Obj]:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform":
                         "linux/amd64"}
        m = re.fullmatch(r"/(?:api/(?P<core>v1)|apis/(?P<gv>[a-z0-9.-]+/v[a-z0-9]+))"
                         r"(?:/namespaces/(?P<ns>[^/]+))?(?:/(?P<plural>[a-z]+)"
                         r"(?:/(?P<name>[^/]+))?)?", path)
        served = self._groups()
        gv = (m["core"] or m["gv"]) if m else ""
        if m is None or gv not in served or (m["plural"] and m["plural"] not in served[gv]):
            raise Refused("NotFound", f"the server could not find the requested resource ({path})")
        plural, ns, name = m["plural"], m["ns"] or "", m["name"]
        if plural is None:
            self._fault(f"discover {gv}")
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                         "resources": [{"name": p, "singularName": p[:-1], "namespaced":
                                        p not in ("nodes", "clusterqueues"), "kind": KINDS[p],
                                        "verbs": ["create", "delete", "get", "list"]}
                                       for p in served[gv]]}
        verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if name else "list")
        self._fault(f"{verb} {KINDS[plural]}")
        if verb == "create":
            return self._create(plural, ns, doc)
        if verb == "list":
            items = [self._shown(o) for (k, n, _), o in sorted(self.objs.items())
                     if k == plural and (not m["ns"] or n == ns)
                     and label_selector_matches(query.get("labelSelector"),
                                                o["metadata"]["labels"])
                     and field_selector_matches(query.get("fieldSelector"), o)]
            items = items[: int(query["limit"])] if "limit" in query else items
            return 200, {"kind": f"{KINDS[plural]}List", "apiVersion": gv,
                         "metadata": {"resourceVersion": "1"}, "items": items}
        obj = self.objs.get((plural, ns, name or ""))
        if obj is None:
            raise Refused("NotFound", f'{plural} "{name}" not found')
        if verb == "get":
            return 200, self._shown(obj)
        policy = query.get("propagationPolicy") or doc.get("propagationPolicy") or ""
        self.deletions.append((plural, name or "", policy))
        if self.keep_terminating and plural in ("jobs", "rayjobs"):
            obj["metadata"]["deletionTimestamp"] = self.stamp()
            return 200, obj
        self._delete((plural, ns, name or ""))
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _fault(self, operation: str) -> None:
        error = self.faults.take(operation)
        if error is not None:
            reason, _, message = str(error).partition(": ")
            raise Refused(reason, message or f"injected {reason}")

    def _shown(self, obj: Obj) -> Obj:
        """An object as the API server shows it, with the status its controller keeps."""
        if obj["kind"] == "ResourceQuota":
            return self._quota_status(obj)
        if obj["kind"] == "LocalQueue":
            return self.kueue.local_queue_status(obj)
        return obj

    def _quota_status(self, quota: Obj) -> Obj:
        ns, hard = quota["metadata"]["namespace"], quota["spec"]["hard"]
        used = {f"requests.{GPU}": str(int(sum(self._requests(p).get(GPU, 0)
                                                for p in self._live_pods(ns)))),
                "count/jobs.batch": str(sum(1 for k, n, _ in self.objs if (k, n) == ("jobs", ns)))}
        return {**quota, "status": {"hard": dict(hard),
                                    "used": {k: used.get(k, "0") for k in hard}}}

    def _create(self, plural: str, ns: str, doc: Obj) -> tuple[int, Obj]:
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        check(plural, doc, kueue=self.kueue.installed)
        if (plural, ns, name) in self.objs:
            raise Refused("AlreadyExists", f'{plural} "{name}" already exists')
        for (k, n, qname), q in self.objs.items():
            hard = q["spec"]["hard"].get(f"count/{plural}.batch") if k == "resourcequotas" else None
            used = sum(1 for kk, nn, _ in self.objs if (kk, nn) == (plural, ns))
            if n == ns and hard is not None and used + 1 > int(hard):
                # ResourceQuota admission (k8s.io/apiserver, plugin/resourcequota).
                raise Refused("Forbidden", f'{plural}.batch "{name}" is forbidden: exceeded '
                              f"quota: {qname}, requested: count/{plural}.batch=1, used: "
                              f"count/{plural}.batch={used}, limited: count/{plural}.batch={hard}")
        obj = copy.deepcopy(doc)
        obj["metadata"] = {**self.meta(name, ns, meta.get("labels") or {}),
                           "annotations": dict(meta.get("annotations") or {}),
                           **({"ownerReferences": meta["ownerReferences"]}
                              if meta.get("ownerReferences") else {})}
        self.objs[(plural, ns, name)] = obj
        if plural == "services":
            obj["status"] = {"loadBalancer": {}}
        elif plural in ("jobs", "rayjobs"):
            self.launches[name] += 1
            obj["status"] = {"conditions": [], "active": 0, "succeeded": 0, "failed": 0} if (
                plural == "jobs") else {"jobDeploymentStatus": "Initializing", "jobStatus": ""}
            if self.kueue.manages(obj):
                self.kueue.created(plural, obj)
            if obj["spec"].get("suspend"):
                self.suspend(ns, name)
            else:
                self._start(plural, obj)
        self.reconcile()
        return 201, obj

    def _start(self, plural: str, obj: Obj) -> None:
        """The Job controller or KubeRay creates the pods of a running workload."""
        name = obj["metadata"]["name"]
        if plural == "jobs":
            spec = obj["spec"]
            self._create_pods(obj, spec["template"], int(spec.get("parallelism") or 1),
                              indexed=spec.get("completionMode") == "Indexed")
        elif len(name) > 47:
            # KubeRay's ValidateRayJobMetadata: the RayCluster's name derives from it.
            obj["status"].update(jobDeploymentStatus="ValidationFailed",
                                 reason="ValidationFailed", message="name too long")
        else:
            obj["status"]["jobDeploymentStatus"] = "Initializing"
            cluster = obj["spec"]["rayClusterSpec"]
            self._create_pods(obj, cluster["headGroupSpec"]["template"], 1, role="head")
            for g in cluster.get("workerGroupSpecs") or []:
                self._create_pods(obj, g["template"], int(g["replicas"]),
                                  role=f"{g['groupName']}-worker")

    def suspend(self, ns: str, name: str) -> None:
        """Suspend a Job or RayJob: its active pods are deleted (not counted as failures)."""
        job, ray = self.objs.get(("jobs", ns, name)), self.objs.get(("rayjobs", ns, name))
        obj = job or ray
        assert obj is not None
        obj["spec"]["suspend"] = True
        for pod in self._pods_of(ns, name):
            if pod["status"]["phase"] in ("Pending", "Running"):
                self.objs.pop(("pods", ns, pod["metadata"]["name"]))
        if job is not None:
            job["status"]["conditions"] = [c for c in job["status"]["conditions"]
                                           if c["type"] != "Suspended"]
            job["status"]["conditions"].append(self._cond("Suspended", "JobSuspended",
                                                          "Job suspended"))
            job["status"]["active"] = 0
        else:
            obj["status"]["jobDeploymentStatus"] = "Suspended"

    def resume(self, ns: str, name: str) -> None:
        """Unsuspend a Job or RayJob (Kueue admitted it): its pods are created."""
        plural = "jobs" if ("jobs", ns, name) in self.objs else "rayjobs"
        obj = self.objs[(plural, ns, name)]
        obj["spec"]["suspend"] = False
        if plural == "jobs":
            obj["status"]["conditions"] = [c for c in obj["status"]["conditions"]
                                           if c["type"] != "Suspended"]
            obj["status"]["conditions"].append(self._cond("Suspended", "JobResumed",
                                                          "Job resumed", status="False"))
        self._start(plural, obj)

    @staticmethod
    def pod_sets(plural: str, obj: Obj) -> list[Obj]:
        """The pod sets Kueue makes of a Job (``main``) or a RayJob (``head`` + groups)."""
        spec = obj["spec"]
        if plural == "jobs":
            return [{"name": "main", "count": int(spec.get("parallelism") or 1),
                     "template": copy.deepcopy(spec["template"])}]
        cluster = spec["rayClusterSpec"]
        return [{"name": "head", "count": 1,
                 "template": copy.deepcopy(cluster["headGroupSpec"]["template"])}] + [
            {"name": g["groupName"], "count": int(g["replicas"]),
             "template": copy.deepcopy(g["template"])}
            for g in cluster.get("workerGroupSpecs") or []]

    def requests_of(self, pod_set: Obj) -> dict[str, float]:
        """What a pod set requests in all: one pod's requests times its count."""
        per_pod = self._requests({"spec": pod_set["template"].get("spec") or {}})
        return {r: v * int(pod_set["count"]) for r, v in per_pod.items()}


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
