"""How Jobs, RayJobs and pods read as workload statuses: the readers alone, table-driven."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kubernetes import client
from multicloud_kubernetes.status import (
    Reading,
    job_status,
    pod_status,
    rayjob_status,
    workload_status,
)

from multicloud.provider import WorkloadState

S = WorkloadState
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
READING = Reading("cw/US-EAST-04", 60.0, NOW)


def _pod(
    name: str = "p-0",
    *,
    phase: str = "Running",
    exit_code: int | None = None,
    finished: int = 0,
    disrupted: str | None = None,
    reason: str | None = None,
    unscheduled: str | None = None,
    age_s: float = 0.0,
) -> Any:
    """A V1Pod: running, or ended with an exit code, disrupted, or waiting to be scheduled."""
    conditions = []
    if disrupted:
        conditions.append(client.V1PodCondition(type="DisruptionTarget", status="True",
                                                reason=disrupted))
    if unscheduled:
        conditions.append(client.V1PodCondition(type="PodScheduled", status="False",
                                                reason=unscheduled, message="0/4 nodes"))
    statuses = None
    if exit_code is not None:
        ended = client.V1ContainerStateTerminated(
            exit_code=exit_code, finished_at=NOW - timedelta(seconds=100 - finished))
        statuses = [client.V1ContainerStatus(name="main", image="i", image_id="", ready=False,
                                             restart_count=0,
                                             state=client.V1ContainerState(terminated=ended))]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, creation_timestamp=NOW - timedelta(seconds=age_s)),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main")],
                              node_name=None if unscheduled else "n1"),
        status=client.V1PodStatus(phase=phase, reason=reason, conditions=conditions,
                                  container_statuses=statuses),
    )


@pytest.mark.parametrize(
    ("pod", "state", "blocked"),
    [
        (_pod(), S.RUNNING, False),
        (_pod(phase="Succeeded", exit_code=0), S.SUCCEEDED, False),
        (_pod(phase="Failed", exit_code=3), S.FAILED, False),
        # Preemption wins over the exit code the disruption left.
        (_pod(phase="Failed", exit_code=143, disrupted="PreemptionByScheduler"), S.PREEMPTED,
         False),
        (_pod(phase="Failed", exit_code=137, reason="Evicted"), S.PREEMPTED, False),
        (_pod(phase="Failed", exit_code=0, disrupted="TerminationByKubelet"), S.PREEMPTED, False),
        # Waiting to be scheduled, for whatever reason: within the grace, then capacity lost.
        (_pod(phase="Pending", unscheduled="Unschedulable", age_s=10), S.PROVISIONING, False),
        (_pod(phase="Pending", unscheduled="Unschedulable", age_s=600), S.PREEMPTED, True),
        (_pod(phase="Pending", unscheduled="SchedulingGated", age_s=600), S.PREEMPTED, True),
        (_pod(phase="Pending"), S.PROVISIONING, False),
    ],
)
def test_a_pod_reads_as_one_node(pod: Any, state: WorkloadState, blocked: bool) -> None:
    status = pod_status(pod, READING)
    assert status.state is state, status
    assert (status.blocked_scope == "cw/US-EAST-04") is blocked


@pytest.mark.parametrize("code", [75, 77, 78, 3])
def test_a_containers_exit_code_is_the_commands_own(code: int) -> None:
    """Regression: 75/77/78 are the VM node program's own codes (no peers, unreadable or
    multi-line secret); in a pod they are just what the command exited with, so 75 must not
    read as "the gang never formed" (TERMINATED, re-placed)."""
    status = pod_status(_pod(phase="Failed", exit_code=code), READING)
    assert (status.state, status.exit_code) == (S.FAILED, code)
    assert status.message == f"the command exited with {code}"


def _job(*conditions: tuple[str, str], **counts: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "mc-x", "creationTimestamp": "2026-06-01T11:00:00Z"},
        "status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": "m"}
                                  for t, r in conditions], **counts},
    }


@pytest.mark.parametrize(
    ("job", "pods", "state", "code"),
    [
        (_job(("Complete", "")), [], S.SUCCEEDED, 0),
        (_job(("SuccessCriteriaMet", "")), [], S.SUCCEEDED, 0),
        (_job(("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")), [],
         S.PREEMPTED, None),
        # The node that ended first decides: rank 1 exited 3, then rank 0 was stopped (143).
        (_job(("Failed", "BackoffLimitExceeded")),
         [_pod("p-0", phase="Failed", exit_code=143, finished=5),
          _pod("p-1", phase="Failed", exit_code=3, finished=1)], S.FAILED, 3),
        (_job(("Failed", "BackoffLimitExceeded")),
         [_pod("p-0", phase="Failed", exit_code=3), _pod("p-1", phase="Failed", exit_code=143,
                                                         disrupted="PreemptionByScheduler")],
         S.PREEMPTED, None),
        (_job(("Failed", "DeadlineExceeded")), [], S.FAILED, None),
        (_job(), [_pod("p-0"), _pod("p-1")], S.RUNNING, None),
        (_job(), [_pod("p-0", phase="Succeeded", exit_code=0), _pod("p-1")], S.RUNNING, None),
        # Short of pods an hour after creation: capacity lost (the scope is blocked)...
        (_job(), [_pod("p-0")], S.PREEMPTED, None),
        # ... unless the Job controller counted the missing one (it ended and is gone).
        (_job(succeeded=1), [_pod("p-0")], S.RUNNING, None),
    ],
)
def test_a_job_reads_from_its_conditions_and_pods(
    job: dict[str, Any], pods: list[Any], state: WorkloadState, code: int | None
) -> None:
    status = job_status(job, pods, 2, READING)
    assert (status.state, status.exit_code) == (state, code), status


# KubeRay's vocabulary (ray-operator/apis/ray/v1/rayjob_types.go, v1.5):
# (jobStatus, jobDeploymentStatus, reason) → the workload's state and what the message says.
RAY = [
    ("", "", "", S.PROVISIONING, "new"),
    ("", "Initializing", "", S.PROVISIONING, "Initializing"),
    ("", "Waiting", "", S.PROVISIONING, "Waiting"),
    ("", "Retrying", "", S.PROVISIONING, "Retrying"),
    ("PENDING", "Running", "", S.RUNNING, "pending"),
    ("RUNNING", "Running", "", S.RUNNING, "running"),
    ("SUCCEEDED", "Complete", "", S.SUCCEEDED, "succeeded"),
    ("SUCCEEDED", "Running", "", S.SUCCEEDED, "succeeded"),
    # Complete is also set for these: none of them is a success.
    ("STOPPED", "Complete", "", S.FAILED, "stopped"),
    ("FAILED", "Complete", "", S.FAILED, "the Ray job failed"),
    ("", "Complete", "", S.FAILED, "submitter failed"),
    ("FAILED", "Failed", "AppFailed", S.FAILED, "the Ray job failed"),
    ("PENDING", "Failed", "SubmissionFailed", S.FAILED, "could not submit"),
    ("RUNNING", "Failed", "DeadlineExceeded", S.FAILED, "activeDeadlineSeconds"),
    ("RUNNING", "Failed", "JobDeploymentStatusTransitionGracePeriodExceeded", S.FAILED,
     "status was lost"),
    ("", "ValidationFailed", "ValidationFailed", S.FAILED, "refused"),
    ("RUNNING", "Suspending", "", S.PREEMPTED, "suspending"),
    ("", "Suspended", "", S.PREEMPTED, "suspended"),
]


@pytest.mark.parametrize(("job", "deployment", "reason", "state", "words"), RAY)
def test_a_rayjob_reads_as_kuberay_defines_it(
    job: str, deployment: str, reason: str, state: WorkloadState, words: str
) -> None:
    obj = {"metadata": {}, "status": {"jobStatus": job, "jobDeploymentStatus": deployment,
                                      "reason": reason, "message": "detail"}}
    status = rayjob_status(obj, [], READING)
    assert status.state is state and words in status.message, status


def test_a_failed_rayjob_with_a_disrupted_pod_was_preempted() -> None:
    obj = {"metadata": {}, "status": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed",
                                      "reason": "AppFailed"}}
    pods = [_pod(phase="Failed", exit_code=137, reason="Evicted")]
    assert rayjob_status(obj, pods, READING).state is S.PREEMPTED


@pytest.mark.parametrize("kind", ["job", "rayjob"])
def test_being_deleted_is_terminated(kind: str) -> None:
    obj = {"metadata": {"deletionTimestamp": "2026-06-01T12:00:00Z"},
           "status": {"jobStatus": "SUCCEEDED", "conditions": [{"type": "Complete",
                                                                "status": "True"}]}}
    assert workload_status(kind, obj, [], 1, READING).state is S.TERMINATED
