"""Kueue in the fake cluster: Workloads, quota admission, eviction and requeue, finishing.

It stands in for Kueue's controllers as its API types and job framework define them
(``apis/kueue/v1beta1/workload_types.go``; ``pkg/workload/workload.go``;
``pkg/controller/jobframework/reconciler.go``):

* a Job or RayJob created with the ``kueue.x-k8s.io/queue-name`` label is suspended (the
  webhook's ``ApplyDefaultForSuspend``) and gets a ``Workload`` named
  ``<kind>-<name>-<hash>``, owned by it and labelled ``kueue.x-k8s.io/job-uid``;
* admission, BestEffortFIFO per ClusterQueue: a Workload whose pods' requests fit the
  ClusterQueue's nominal quota (one flavor, ``default-flavor``) beside the admitted ones
  gets ``QuotaReserved`` and ``Admitted``, and its Job is unsuspended; otherwise
  ``QuotaReserved=False`` with reason ``Pending`` (or ``Inadmissible`` when its LocalQueue
  or ClusterQueue is missing or stopped) and Kueue's own wording. A requested resource
  the ClusterQueue does not cover makes it unadmittable, as in Kueue;
* :meth:`Kueue.evict`: ``Evicted`` (and ``Preempted``) set, the Job suspended and its pods
  gone, then ``Requeued``, ``QuotaReserved=False`` (``Pending``) and ``Admitted=False``; an
  evicted Workload is held out of admission (its preemptor has the quota) until
  :meth:`Kueue.readmit`; reason ``Deactivated`` sets ``spec.active: false`` for good;
* when the Job ends, ``Finished`` (``Succeeded`` / ``Failed``) frees the quota.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multicloud_kubernetes.testing.rules import QUEUE_LABEL, Obj, Refused, quantity

if TYPE_CHECKING:
    from multicloud_kubernetes.testing.cluster import FakeCluster

__all__ = ["Kueue"]

GROUP = "kueue.x-k8s.io"
FLAVOR = "default-flavor"


class Kueue:
    """Kueue's part of one fake cluster (not installed unless given an API version).

    Args:
        cluster: The fake cluster.
        version: The ``kueue.x-k8s.io`` version served (``v1beta1``, ``v1beta2``), or None.
    """

    def __init__(self, cluster: FakeCluster, version: str | None) -> None:
        self.cluster, self.version = cluster, version
        self.held: set[str] = set()

    @property
    def installed(self) -> bool:
        """Whether the cluster runs Kueue."""
        return self.version is not None

    # -- set-up and test controls -------------------------------------------------------

    def add_cluster_queue(self, name: str, quota: Mapping[str, str], *,
                          stopped: bool = False) -> None:
        """Create a ClusterQueue with one flavor's nominal ``quota`` per resource."""
        resources = [{"name": r, "nominalQuota": str(q)} for r, q in quota.items()]
        spec: Obj = {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": list(quota), "flavors": [{"name": FLAVOR,
                                                          "resources": resources}]}]}
        if stopped:
            spec["stopPolicy"] = "Hold"
        self._put("clusterqueues", "", name, spec)

    def add_local_queue(self, name: str, cluster_queue: str, *, namespace: str | None = None,
                        stopped: bool = False) -> None:
        """Create a LocalQueue pointing at ``cluster_queue``."""
        spec: Obj = {"clusterQueue": cluster_queue}
        if stopped:
            spec["stopPolicy"] = "Hold"
        self._put("localqueues", namespace or self.cluster.namespace, name, spec)

    def workload(self, owner: str, namespace: str | None = None) -> Obj | None:
        """Return a copy of the Workload of Job or RayJob ``owner``."""
        with self.cluster.lock:
            wl = self._of(namespace or self.cluster.namespace, owner)
            return copy.deepcopy(wl)

    def evict(self, owner: str, reason: str = "Preempted", *,
              preempted: str = "InClusterQueue", message: str = "") -> None:
        """Kueue evicts the Workload of ``owner`` (the Job is suspended, its pods go).

        Args:
            owner: Job or RayJob name.
            reason: ``Preempted``, ``PodsReadyTimeout``, ``ClusterQueueStopped``,
                ``NodeFailures``, ``Deactivated`` (``spec.active`` set false) ...
            preempted: The ``Preempted`` condition's reason (``InClusterQueue``,
                ``InCohortReclamation``, ...), with reason ``Preempted``.
            message: The condition's message (default: Kueue's wording).

        Raises:
            KeyError: If ``owner`` has no Workload.
        """
        c = self.cluster
        with c.lock:
            ns = c.namespace
            wl = self._of(ns, owner)
            if wl is None:
                raise KeyError(f"{owner} has no Workload")
            text = message or {
                "Preempted": "Preempted to accommodate a workload (UID: 7c3f) due to "
                             "prioritization in the ClusterQueue",
                "PodsReadyTimeout": "Exceeded the PodsReady timeout",
            }.get(reason, f"The workload was evicted: {reason}")
            self._set(wl, "Evicted", reason, text)
            if reason == "Preempted":
                self._set(wl, "Preempted", preempted, text)
            if reason.startswith("Deactivated"):
                wl["spec"]["active"] = False
            c.suspend(ns, owner)  # the job reconciler stops the job: suspended, pods deleted
            self._set(wl, "Requeued", reason, text, status=str(reason == "Preempted"))
            self._release(wl, "Pending", text)
            self.held.add(wl["metadata"]["name"])
            c.reconcile()

    def readmit(self, owner: str) -> None:
        """Let an evicted Workload be admitted again (its preemptor released the quota)."""
        with self.cluster.lock:
            wl = self._of(self.cluster.namespace, owner)
            if wl is not None:
                self.held.discard(wl["metadata"]["name"])
            self.cluster.reconcile()

    # -- hooks the cluster calls --------------------------------------------------------

    def manages(self, doc: Obj) -> bool:
        """Whether Kueue manages a new Job or RayJob (it has a queue-name label)."""
        return self.installed and bool((doc["metadata"].get("labels") or {}).get(QUEUE_LABEL))

    def created(self, plural: str, obj: Obj) -> None:
        """Kueue's webhook and job reconciler on a new managed object: suspend, Workload."""
        c, meta = self.cluster, obj["metadata"]
        obj["spec"]["suspend"] = True
        kind = obj["kind"]
        digest = hashlib.sha256(meta["uid"].encode()).hexdigest()[:5]
        name = f"{kind.lower()}-{meta['name']}"[:57] + f"-{digest}"
        ref = {"apiVersion": obj["apiVersion"], "kind": kind, "name": meta["name"],
               "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
        wl: Obj = {"apiVersion": f"{GROUP}/{self.version}", "kind": "Workload",
                   "metadata": {**c.meta(name, meta["namespace"],
                                         {"kueue.x-k8s.io/job-uid": meta["uid"]}),
                                "ownerReferences": [ref]},
                   "spec": {"queueName": meta["labels"][QUEUE_LABEL], "active": True,
                            "podSets": c.pod_sets(plural, obj)},
                   "status": {"conditions": []}}
        c.objs[("workloads", meta["namespace"], name)] = wl

    def finished(self, ns: str, owner: str, ok: bool) -> None:
        """The job ended: ``Finished`` frees its quota."""
        wl = self._of(ns, owner)
        if wl is not None:
            self._set(wl, "Finished", "Succeeded" if ok else "Failed",
                      "Job finished successfully" if ok else "Job failed")

    def admit(self) -> None:
        """Admit what fits, BestEffortFIFO; say why the rest waits."""
        c = self.cluster
        pending = sorted(
            (o for (k, _, _), o in c.objs.items() if k == "workloads" and not self._has(
                o, "QuotaReserved") and not self._has(o, "Finished") and o["spec"]["active"]),
            key=lambda o: (o["metadata"]["creationTimestamp"], o["metadata"]["name"]))
        for wl in pending:
            if wl["metadata"]["name"] in self.held:
                continue
            ns = wl["metadata"]["namespace"]
            lq = c.objs.get(("localqueues", ns, wl["spec"]["queueName"]))
            why = self._inactive(lq, wl["spec"]["queueName"])
            if why is not None:
                self._release(wl, "Inadmissible", why)
                continue
            assert lq is not None
            cq_name = lq["spec"]["clusterQueue"]
            cq = c.objs[("clusterqueues", "", cq_name)]
            short = self._short(wl, cq)
            if short is not None:
                self._release(wl, "Pending", f"couldn't assign flavors to pod set "
                                             f"{wl['spec']['podSets'][0]['name']}: {short}")
                continue
            wl["status"]["admission"] = {"clusterQueue": cq_name, "podSetAssignments": [
                {"name": ps["name"], "count": ps["count"],
                 "flavors": {r: FLAVOR for r in c.requests_of(ps)}} for ps in
                wl["spec"]["podSets"]]}
            self._set(wl, "QuotaReserved", "QuotaReserved", f"Quota reserved in ClusterQueue "
                                                             f"{cq_name}")
            for kind in ("Evicted", "Preempted"):
                cond = self._cond(wl, kind)
                if cond is not None and cond["status"] == "True":
                    self._set(wl, kind, "QuotaReserved", f"Previously: {cond['message']}",
                              status="False")
            self._set(wl, "Admitted", "Admitted", "The workload is admitted")
            ref = wl["metadata"]["ownerReferences"][0]
            c.resume(ns, ref["name"])  # the job reconciler starts the job

    def local_queue_status(self, lq: Obj) -> Obj:
        """A LocalQueue as Kueue's LocalQueue controller keeps its ``Active`` condition."""
        why = self._inactive(lq, lq["metadata"]["name"])
        reason = ("Ready" if why is None else "Stopped" if "stopped" in why else
                  "ClusterQueueDoesNotExist" if "doesn't exist" in why else
                  "ClusterQueueIsInactive")
        message = ("Can submit new workloads to localQueue" if why is None else
                   "Can't submit new workloads to localQueue" if reason == "Stopped" else
                   "Can't submit new workloads to clusterQueue")
        cond = {"type": "Active", "status": str(why is None), "reason": reason,
                "message": message, "lastTransitionTime": self.cluster.stamp(),
                "observedGeneration": 1}
        return {**lq, "status": {"conditions": [cond]}}

    # -- internals ----------------------------------------------------------------------

    def _put(self, plural: str, ns: str, name: str, spec: Obj) -> None:
        if not self.installed:
            raise Refused("NotFound", "Kueue is not installed")
        kind = {"clusterqueues": "ClusterQueue", "localqueues": "LocalQueue"}[plural]
        with self.cluster.lock:
            self.cluster.objs[(plural, ns, name)] = {
                "apiVersion": f"{GROUP}/{self.version}", "kind": kind,
                "metadata": self.cluster.meta(name, ns or None, {}), "spec": spec, "status": {}}
            self.cluster.reconcile()

    def _of(self, ns: str, owner: str) -> Obj | None:
        return next((o for (k, n, _), o in sorted(self.cluster.objs.items())
                     if (k, n) == ("workloads", ns)
                     and o["metadata"]["ownerReferences"][0]["name"] == owner), None)

    def _inactive(self, lq: Obj | None, name: str) -> str | None:
        if lq is None:
            return f"LocalQueue {name} doesn't exist"
        if lq["spec"].get("stopPolicy", "None") != "None":
            return f"LocalQueue {name} is stopped"
        cq = self.cluster.objs.get(("clusterqueues", "", lq["spec"]["clusterQueue"]))
        if cq is None:
            return f"ClusterQueue {lq['spec']['clusterQueue']} doesn't exist"
        if cq["spec"].get("stopPolicy", "None") != "None":
            return f"ClusterQueue {cq['metadata']['name']} is inactive"
        return None

    def _short(self, wl: Obj, cq: Obj) -> str | None:
        """Why ``wl`` does not fit ``cq`` beside the Workloads holding its quota, if not."""
        c = self.cluster
        group = cq["spec"]["resourceGroups"][0]
        quota = {r["name"]: quantity(r["nominalQuota"]) for r in group["flavors"][0]["resources"]}
        used: dict[str, float] = {}
        for o in (o for (k, _, _), o in c.objs.items() if k == "workloads"):
            if (o.get("status", {}).get("admission") or {}).get("clusterQueue") == cq[
                    "metadata"]["name"] and self._has(o, "QuotaReserved") and not self._has(
                    o, "Finished"):
                for ps in o["spec"]["podSets"]:
                    for r, v in c.requests_of(ps).items():
                        used[r] = used.get(r, 0) + v
        for ps in wl["spec"]["podSets"]:
            for r, want in sorted(c.requests_of(ps).items()):
                if r not in quota:
                    return f"resource {r} unavailable in ClusterQueue"
                more = used.get(r, 0) + want - quota[r]
                if more > 0:
                    return (f"insufficient unused quota for {r} in flavor {FLAVOR}, "
                            f"{more:g} more needed")
        return None

    def _release(self, wl: Obj, reason: str, message: str) -> None:
        """``UnsetQuotaReservationWithCondition``: no quota, no admission."""
        wl["status"].pop("admission", None)
        self._set(wl, "QuotaReserved", reason, message, status="False")
        if self._cond(wl, "Admitted"):
            self._set(wl, "Admitted", "NoReservation", "The workload has no reservation",
                      status="False")

    @staticmethod
    def _cond(wl: Obj, kind: str) -> Obj | None:
        return next((x for x in wl["status"]["conditions"] if x["type"] == kind), None)

    def _has(self, wl: Obj, kind: str) -> bool:
        return (self._cond(wl, kind) or {}).get("status") == "True"

    def _set(self, wl: Obj, kind: str, reason: str, message: str, status: str = "True") -> None:
        cond = self._cond(wl, kind)
        if cond is not None and (cond["status"], cond["reason"], cond["message"]) == (
                status, reason, message):
            return
        new: dict[str, Any] = {"type": kind, "status": status, "reason": reason,
                               "message": message, "observedGeneration": 1,
                               "lastTransitionTime": self.cluster.stamp()}
        if cond is not None and cond["status"] == status:
            new["lastTransitionTime"] = cond["lastTransitionTime"]
        wl["status"]["conditions"] = [x for x in wl["status"]["conditions"]
                                      if x["type"] != kind] + [new]
