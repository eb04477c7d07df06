"""How a Job, a RayJob and their pods read as a workload status.

Each pod is a node of the gang and reads through the kit's ``node_end`` (preemption wins
over an exit code; a container's exit code is the command's own), the gang through
``gang_end``; the object's own verdict (a Job's conditions, a RayJob's ``jobStatus`` /
``jobDeploymentStatus`` / ``reason``) decides when it is final. A pod that cannot be
scheduled, for whatever reason (no free GPU, an untolerated taint, too little memory, a pool
that is gone), reads PROVISIONING during the grace period and then PREEMPTED with the scope
to block, so the scheduler re-places the job elsewhere. (Kueue's say, where Kueue manages a
workload, comes first: :mod:`.kueue`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from multicloud.adapterkit import gang_end, node_end
from multicloud.provider import WorkloadState, WorkloadStatus

__all__ = ["Reading", "job_status", "pod_status", "rayjob_status", "workload_status"]

S = WorkloadState
# Pod status reasons by which Kubernetes reports a pod pushed off its node (kubelet
# eviction, graceful node shutdown, scheduler preemption).
_DISRUPTED = frozenset({"Evicted", "Preempting", "Preempted", "Shutdown", "Terminated",
                        "NodeShutdown"})


@dataclass(frozen=True)
class Reading:
    """What a status reading needs beyond the objects.

    Attributes:
        scope: Error scope of the workload's pool (blocked when pods cannot be scheduled).
        grace_s: How long pods may wait to be scheduled (or created) before that counts as
            capacity lost.
        now: The time of the reading.
        queue_grace_s: How long a workload may wait in Kueue without admission before the
            place is given up (None: as long as Kueue says).
    """

    scope: str
    grace_s: float
    now: datetime
    queue_grace_s: float | None = None

    def waited(self, created: Any) -> float:
        """Seconds since ``created`` (a datetime or an RFC 3339 string)."""
        if isinstance(created, str) and created:
            created = datetime.fromisoformat(created.replace("Z", "+00:00"))
        if not isinstance(created, datetime):
            return 0.0
        created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        return float((self.now - created).total_seconds())

    def lost(self, what: str, since: Any, grace: float | None) -> WorkloadStatus:
        """PROVISIONING within ``grace`` of ``since``, then the place lost, its scope blocked."""
        if grace is not None and self.waited(since) >= grace:
            return WorkloadStatus(S.PREEMPTED, what, blocked_scope=self.scope)
        return WorkloadStatus(S.PROVISIONING, what)

    def stuck(self, what: str, created: Any) -> WorkloadStatus:
        """Waiting for nodes: PROVISIONING within the grace period, then capacity lost."""
        return self.lost(f"capacity: {what}", created, self.grace_s)


def _disruption(pod: Any) -> str | None:
    status = pod.status
    if status is None:
        return None
    if status.reason in _DISRUPTED:
        return f"pod {pod.metadata.name} {status.reason}: {status.message or ''}".rstrip(": ")
    for c in status.conditions or []:
        if c.type == "DisruptionTarget" and c.status == "True":
            return f"pod {pod.metadata.name} disrupted: {c.reason or ''} {c.message or ''}".strip()
    return None


def _terminated(pod: Any) -> Any:
    for cs in (pod.status.container_statuses if pod.status else None) or []:
        if cs.state is not None and cs.state.terminated is not None:
            return cs.state.terminated
    return None


def pod_status(pod: Any, reading: Reading) -> WorkloadStatus:
    """Read one pod as one node of the gang.

    Args:
        pod: A ``V1Pod``.
        reading: The reading's scope, grace and time.

    Returns:
        PREEMPTED when Kubernetes disrupted it (whatever its exit code), its exit code's
        end once its container ended, a scheduling wait (see :meth:`Reading.stuck`),
        RUNNING or PROVISIONING.
    """
    disrupted = _disruption(pod)
    if disrupted is not None:
        return WorkloadStatus(S.PREEMPTED, disrupted)
    ended = _terminated(pod)
    if ended is not None and ended.exit_code is not None:
        end = node_end(str(ended.exit_code), program=False)
        assert end is not None
        return end
    status = pod.status
    phase = status.phase if status else None
    if phase == "Pending" and not (pod.spec and pod.spec.node_name):
        for c in (status.conditions if status else None) or []:
            if c.type == "PodScheduled" and c.status == "False":
                why = f"pod {pod.metadata.name} cannot be scheduled ({c.reason}): {c.message}"
                return reading.stuck(why, pod.metadata.creation_timestamp)
    if phase == "Running":
        return WorkloadStatus(S.RUNNING, f"pod {pod.metadata.name} running")
    if phase == "Succeeded":
        return WorkloadStatus(S.SUCCEEDED, "exit code 0", exit_code=0)
    if phase == "Failed":
        return WorkloadStatus(S.FAILED, f"pod {pod.metadata.name} failed: {status.reason}")
    return WorkloadStatus(S.PROVISIONING, f"pod {pod.metadata.name} {phase or 'pending'}")


def _gang(pods: Sequence[Any], reading: Reading) -> list[WorkloadStatus]:
    # The node that ended first decides a failed gang: the others were stopped because of it.
    def ended(pod: Any) -> str:
        state = _terminated(pod)
        at = state.finished_at if state is not None else None
        return at.isoformat() if isinstance(at, datetime) else str(at or "~")

    return [pod_status(p, reading) for p in sorted(pods, key=ended)]


def _true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if c.get("status") == "True"}


def job_status(
    obj: Mapping[str, Any], pods: Sequence[Any], nodes: int, reading: Reading
) -> WorkloadStatus:
    """Read an (Indexed) Job and its pods.

    Args:
        obj: The Job as the API server sent it (a dict).
        pods: Its pods.
        nodes: Nodes of the gang.
        reading: The reading's scope, grace and time.

    Returns:
        The workload's status.
    """
    meta = obj.get("metadata") or {}
    conditions = _true_conditions(obj)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return WorkloadStatus(S.SUCCEEDED, "job complete", exit_code=0)
    members = _gang(pods, reading)
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        if failed.get("reason") == "PodFailurePolicy":
            # The Job's one rule (FailJob on DisruptionTarget) fired: a pod was preempted
            # or evicted, and Kubernetes may have deleted it since.
            return WorkloadStatus(S.PREEMPTED, f"disrupted: {failed.get('message') or ''}")
        end = gang_end(members) if members else None
        if end is not None and end.state in (S.PREEMPTED, S.FAILED):
            return end
        if end is not None and end.state in (S.RUNNING, S.PROVISIONING):
            # Pods are listed before their Job: this pod list predates the failure the Job
            # already shows. The next reading has the pod that ended and its exit code.
            return WorkloadStatus(end.state, "job failed; reading its pods' exit codes")
        text = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}"
        return WorkloadStatus(S.FAILED, text.rstrip(": "))
    counted = (obj.get("status") or {})
    missing = nodes - len(pods) - int(counted.get("succeeded") or 0) - int(
        counted.get("failed") or 0)
    if missing > 0:
        # The Job controller could not create them (a quota it hit, an admission webhook):
        # that shows only as Events, and it retries for ever.
        what = f"{missing} of {nodes} pod(s) not created (quota?)"
        members.append(reading.stuck(what, meta.get("creationTimestamp")))
    return gang_end(members)


# KubeRay's RayJob status, as ray-operator/apis/ray/v1/rayjob_types.go (KubeRay v1.5)
# defines it: jobStatus is Ray's (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED; terminal:
# STOPPED, SUCCEEDED, FAILED); jobDeploymentStatus is KubeRay's (Initializing, Running,
# Complete, Failed, ValidationFailed, Suspending, Suspended, Retrying, Waiting; terminal:
# Complete, Failed). "Complete" is set "when the Ray job reaches a terminal state
# (SUCCEEDED, FAILED, STOPPED) or the submitter Job has failed" (RayJobStatus.EndTime), so
# it never means success on its own; reason is SubmissionFailed, DeadlineExceeded,
# AppFailed, JobDeploymentStatusTransitionGracePeriodExceeded or ValidationFailed.
_RAY_REASONS = {
    "SubmissionFailed": "the submitter could not submit the Ray job",
    "DeadlineExceeded": "the RayJob's activeDeadlineSeconds passed",
    "AppFailed": "the Ray job failed",
    "JobDeploymentStatusTransitionGracePeriodExceeded": "the Ray job's status was lost",
    "ValidationFailed": "KubeRay refused the RayJob",
}


def rayjob_status(obj: Mapping[str, Any], pods: Sequence[Any], reading: Reading) -> WorkloadStatus:
    """Read a RayJob and its Ray cluster's pods.

    Args:
        obj: The RayJob (a dict).
        pods: Pods of its Ray cluster.
        reading: The reading's scope, grace and time.

    Returns:
        The workload's status.
    """
    status = obj.get("status") or {}
    job, deployment = status.get("jobStatus") or "", status.get("jobDeploymentStatus") or ""
    reason, message = status.get("reason") or "", status.get("message") or ""
    if job == "SUCCEEDED":
        return WorkloadStatus(S.SUCCEEDED, "ray job succeeded", exit_code=0)
    members = _gang(pods, reading)
    preempted = next((m for m in members if m.state is S.PREEMPTED), None)
    if deployment in ("Suspending", "Suspended"):
        # Suspending deletes the Ray cluster (a queue such as Kueue taking the nodes back).
        return WorkloadStatus(S.PREEMPTED, f"the RayJob was {deployment.lower()}")
    ended = job in ("FAILED", "STOPPED") or deployment in ("Complete", "Failed", "ValidationFailed")
    if ended:
        if preempted is not None:
            return preempted
        if job == "STOPPED":
            what = "the Ray job was stopped"
        elif job == "FAILED" or reason:
            what = _RAY_REASONS.get(reason, "the Ray job failed")
        else:
            # Complete without a Ray verdict: the submitter failed (KubeRay before 1.2).
            what = "the submitter failed before the Ray job reported"
        detail = "; ".join(p for p in (message, f"{deployment}/{job or '-'} {reason}".strip()) if p)
        return WorkloadStatus(S.FAILED, f"{what}: {detail}")
    if members and gang_end(members).state is S.PREEMPTED:
        return gang_end(members)
    if deployment == "Running":
        return WorkloadStatus(S.RUNNING, f"ray job {job.lower() or 'submitted'}")
    return WorkloadStatus(S.PROVISIONING, f"RayJob {deployment or 'new'}")


def workload_status(
    kind: str, obj: Mapping[str, Any], pods: Sequence[Any], nodes: int, reading: Reading
) -> WorkloadStatus:
    """Read a workload of either kind (``job`` or ``rayjob``) and its pods.

    Args:
        kind: The workload's kind.
        obj: The object as the API server sent it (a dict).
        pods: Its pods.
        nodes: Nodes of the gang.
        reading: The reading's scope, grace and time.

    Returns:
        TERMINATED while it is being deleted, else what its kind's reader says.
    """
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return WorkloadStatus(S.TERMINATED, "being deleted")
    if kind == "rayjob":
        return rayjob_status(obj, pods, reading)
    return job_status(obj, pods, nodes, reading)
