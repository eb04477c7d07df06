"""Kueue: multicloud decides which cluster, Kueue keeps deciding when inside it.

On a cluster that runs Kueue, a fleet entry with ``local_queue`` submits every Job and
RayJob through that ``LocalQueue``: the ``kueue.x-k8s.io/queue-name`` label, created
suspended. Kueue makes a ``Workload`` of it (owned by the Job, labelled
``kueue.x-k8s.io/job-uid``), reserves quota for it in the queue's ``ClusterQueue``, admits it
and unsuspends the Job; when a more important workload needs the quota it evicts it
(suspends the Job, its pods go) and requeues it. The adapter reads all of that from the
Workload's status conditions, as Kueue's API types define them
(``apis/kueue/v1beta1/workload_types.go``, Kueue v0.14; ``v1beta2`` since v0.15 and ``v1``
have the same condition types and reasons; the adapter reads whichever version the cluster
serves, newest first):

========================================  =============================================
Workload                                  What multicloud reads
========================================  =============================================
``Finished=True``                         the Job's own verdict (succeeded, failed)
``spec.active: false``, or ``Evicted``    PREEMPTED at once, scope blocked: Kueue will not
with reason ``Deactivated…`` (v0.9+) or   run it again unless someone reactivates it (its
``InactiveWorkload`` (before)             requeuing limit was reached, an admin stopped it)
``Evicted=True`` (``Preempted`` with      PROVISIONING ("evicted by Kueue … requeued"):
``Preempted`` = ``InClusterQueue`` /      Kueue requeues it itself and admits it again
``InCohort…``, ``PodsReadyTimeout``,      when quota frees up; after ``queue_grace_s``
``AdmissionCheck``, ``ClusterQueue…`` /   since the eviction, PREEMPTED with the scope
``LocalQueueStopped``, ``NodeFailures``)  blocked, so the job can run elsewhere
``Admitted=True``                         the Job and its pods, as without Kueue
``QuotaReserved=True``, not admitted      PROVISIONING (admission checks pending), then
                                          as below
``QuotaReserved=False`` (``Pending``:     PROVISIONING ("queued in LocalQueue …" with
no quota yet; ``Inadmissible``: no such   Kueue's own message); after ``queue_grace_s``
LocalQueue, ClusterQueue inactive)        since creation, PREEMPTED with the scope blocked
no Workload for a suspended, queued Job   PROVISIONING, after ``unschedulable_grace_s``
                                          PREEMPTED: Kueue is not managing the queue
========================================  =============================================

Why give the place up at all: a Kueue preemption means quota went to a more important
workload, which usually holds it for as long as it runs; a workload ``Pending`` for long
means the ClusterQueue's quota is spent. Kueue would keep it queued for ever, which is right
inside one cluster and wrong for a scheduler that has other clouds: after the grace the job
is re-placed where capacity is (the blocked scope keeps the next plan away for a while);
within it, Kueue's own requeue (a quick readmission in the cohort, a backoff after a
PodsReady timeout) is left to work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from multicloud.provider import WorkloadState, WorkloadStatus
from multicloud_kubernetes.status import Reading

__all__ = [
    "GROUP", "QUEUE_LABEL", "VERSIONS", "kueue_status", "managed", "queue_refusal",
    "workloads_by_owner",
]

GROUP = "kueue.x-k8s.io"
VERSIONS = ("v1", "v1beta2", "v1beta1")
"""Kueue API versions the adapter reads, newest first (v1beta2 from Kueue v0.15; v1beta1
until Kueue stops serving it, planned for v0.18; v1 where served). The fields read
(``spec.queueName``, ``spec.active``, ``status.conditions``) are the same in all three."""
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
_DEACTIVATED = ("Deactivated", "InactiveWorkload")
_SUSPENDED = frozenset({"Suspending", "Suspended"})

Obj = Mapping[str, Any]


def managed(obj: Obj) -> bool:
    """Return True for a Job or RayJob Kueue may manage: queued through a LocalQueue, or
    suspended (Kueue's webhook suspends every Job it manages, queue label or not)."""
    return bool(((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
                or (obj.get("spec") or {}).get("suspend"))


def workloads_by_owner(workloads: Iterable[Obj]) -> dict[str, Obj]:
    """Index Workloads by the uid of the Job or RayJob that owns them (the newest wins).

    Args:
        workloads: Workload objects of a namespace.

    Returns:
        Owner uid → its Workload.
    """
    out: dict[str, Obj] = {}
    for wl in sorted(workloads, key=lambda w: str((w.get("metadata") or {}).get(
            "creationTimestamp") or "")):
        for ref in (wl.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("uid"):
                out[str(ref["uid"])] = wl
    return out


def _conditions(wl: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (wl.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}


def kueue_status(obj: Obj, wl: Obj | None, reading: Reading) -> WorkloadStatus | None:
    """Read a Kueue-managed Job or RayJob from its Workload (see the module's table).

    Args:
        obj: The Job or RayJob (a dict).
        wl: Its Workload, if Kueue made one.
        reading: The reading's scope, graces and time.

    Returns:
        The status Kueue decides, or None when the object and its pods decide (admitted,
        finished, or not managed by Kueue).
    """
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if wl is None:
        if (meta.get("labels") or {}).get(QUEUE_LABEL) and spec.get("suspend"):
            what = (f"capacity: no Kueue Workload for the suspended {obj.get('kind')} "
                    "(is Kueue managing this queue?)")
            return reading.lost(what, meta.get("creationTimestamp"), reading.grace_s)
        return None
    true = _conditions(wl)
    if "Finished" in true:
        return None
    wl_meta, wl_spec = wl.get("metadata") or {}, wl.get("spec") or {}
    name = wl_meta.get("name", "")
    evicted = true.get("Evicted")
    reason = str((evicted or {}).get("reason") or "")
    if wl_spec.get("active") is False or reason.startswith(_DEACTIVATED):
        why = (evicted or true.get("DeactivationTarget") or {}).get("message") or (
            "spec.active=false")
        return WorkloadStatus(WorkloadState.PREEMPTED, f"kueue: Workload {name} deactivated: "
                              f"{why}", blocked_scope=reading.scope)
    if evicted is not None:
        preempted = true.get("Preempted")
        cause = f"{reason}/{preempted.get('reason')}" if preempted else reason
        what = f"kueue: evicted ({cause}) and requeued: {evicted.get('message') or ''}"
        return reading.lost(what.rstrip(": "), evicted.get("lastTransitionTime"),
                            reading.queue_grace_s)
    if "Admitted" in true:
        deployment = (obj.get("status") or {}).get("jobDeploymentStatus")
        if spec.get("suspend") or deployment in _SUSPENDED:
            # Admitted a moment ago: Kueue (then KubeRay) is unsuspending it.
            return WorkloadStatus(WorkloadState.PROVISIONING, f"kueue: admitted ({name}), "
                                                              "starting")
        return None
    if "QuotaReserved" in true:
        what = f"kueue: quota reserved for {name}, admission checks pending"
    else:
        cond: Obj = next((c for c in (wl.get("status") or {}).get("conditions") or []
                          if c.get("type") == "QuotaReserved"), {})
        why = cond.get("message") or "waiting for quota"
        what = (f"kueue: queued in LocalQueue {wl_spec.get('queueName')} "
                f"({cond.get('reason') or 'Pending'}): {why}")
    return reading.lost(what, wl_meta.get("creationTimestamp"), reading.queue_grace_s)


def queue_refusal(local_queue: Obj, name: str) -> str | None:
    """Say why a LocalQueue cannot take a workload now (its ``Active`` condition).

    Kueue sets ``Active=False`` with reason ``ClusterQueueDoesNotExist``,
    ``ClusterQueueIsInactive`` or ``Stopped`` (pkg/controller/core/localqueue_controller.go).

    Args:
        local_queue: The LocalQueue.
        name: Its name.

    Returns:
        The reason, or None when it is active (or says nothing yet).
    """
    for c in (local_queue.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Active" and c.get("status") == "False":
            return (f"Kueue LocalQueue {name} is inactive ({c.get('reason')}): "
                    f"{c.get('message') or ''}").rstrip(": ")
    return None
