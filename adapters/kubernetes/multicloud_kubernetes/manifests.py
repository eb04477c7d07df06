"""The objects a launch creates, built from the kit's pod contract (docs/node-contract.md).

* Every job is an **Indexed Job** (``completionMode: Indexed``, ``completions =
  parallelism = nodes``) with a **headless Service** of the same name: each pod's hostname
  is ``<job>-<index>`` in the Service's subdomain, so ``<job>-0.<job>`` — rank 0 — resolves
  in the cluster's DNS; the rank is the completion index (downward API). So every node of a
  gang runs the job's command with the same environment a VM node gets.
* A job that says it is a Ray program (``run.ray``) becomes a **KubeRay RayJob** instead:
  a Ray cluster of the gang's nodes and the command once, against its head.
* Submitted through a Kueue ``LocalQueue``, either carries the ``kueue.x-k8s.io/queue-name``
  label and is created suspended: Kueue unsuspends it when it admits it (:mod:`.kueue`).

Every field sent is one the ``kubernetes`` client models know (the tests round-trip each
manifest through them: ``from_dict`` drops unknown fields silently) or one of KubeRay's
``ray.io/v1`` RayJob types (ray-operator/apis/ray/v1/rayjob_types.go).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multicloud.adapterkit import NodeShape, pod_contract
from multicloud.provider import LaunchSpec, Offer
from multicloud_kubernetes.kueue import QUEUE_LABEL
from multicloud_kubernetes.pools import NodePool

__all__ = [
    "HANDLE", "JOB", "JOB_INDEX", "MANAGED_BY", "RAY", "RAYJOB", "WORKLOAD", "Launch",
    "PodOptions", "headless_service", "indexed_job", "rayjob", "secret_object",
]

JOB_INDEX = "batch.kubernetes.io/job-completion-index"
MANAGED_BY = "app.kubernetes.io/managed-by"
WORKLOAD = "multicloud.io/workload"
"""Label of the object and its pods: the workload (object) name."""
HANDLE = "multicloud.io/handle"
"""Annotation: the launch's ``Handle`` as JSON (the sweep rebuilds handles from it)."""
RAY = ("ray.io", "v1", "rayjobs")
"""KubeRay's RayJob: group, version, plural."""
JOB, RAYJOB = "job", "rayjob"
"""The kinds of workload (``Handle.get("kind")``)."""


@dataclass(frozen=True)
class PodOptions:
    """How the cluster wants its pods (fleet options).

    Attributes:
        rdma_resource: Extended resource of the RDMA devices (requested on RDMA pools).
        shm_size: Size limit of the memory-backed ``/dev/shm`` (None: none).
        image_pull_secrets: Secrets for private images.
        tolerations: Extra tolerations on every pod.
        finished_ttl_s: ``ttlSecondsAfterFinished`` of every Job (None: none).
        ray_image: Image of the Ray head and workers (None: the job's).
    """

    rdma_resource: str = "rdma/ib"
    shm_size: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    finished_ttl_s: int | None = 3600
    ray_image: str | None = None


@dataclass(frozen=True)
class Launch:
    """One launch: what it runs, where, and the metadata every object of it carries.

    Attributes:
        name: Object name (from the request id).
        spec: The launch.
        offer: The planned offer.
        request_id: Its idempotency key.
        pool: The node pool the offer was made from.
        labels: Labels of the objects and their pods.
        annotations: Annotations of the objects and their pods.
        queue: Kueue LocalQueue to submit through (None: none).
    """

    name: str
    spec: LaunchSpec
    offer: Offer
    request_id: str
    pool: NodePool
    labels: dict[str, str]
    annotations: dict[str, str]
    queue: str | None = None


def secret_object(secret: str) -> str:
    """Return the Secret object a job secret is read from (``HF_TOKEN`` → ``hf-token``).

    The key read is the secret's environment variable name (the kit's pod contract:
    ``prod/hf-token`` is key ``HF_TOKEN`` of the Secret ``prod-hf-token``).

    Args:
        secret: The job's secret name.

    Returns:
        A DNS-1123 name.
    """
    name = re.sub(r"[^a-z0-9.-]+", "-", secret.lower()).strip("-.")
    return name[:253] or "secret"


def _command(spec: LaunchSpec) -> list[str] | None:
    if isinstance(spec.command, str):
        return ["/bin/sh", "-c", spec.command] if spec.command.strip() else None
    return [str(p) for p in spec.command] if spec.command else None


def _tolerations(pool: NodePool, options: PodOptions) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"key": pool.resource, "operator": "Exists", "effect": "NoSchedule"}
    ]
    out += [{"key": k, "operator": "Equal", "value": v, "effect": e} if v else
            {"key": k, "operator": "Exists", "effect": e} for k, v, e in pool.taints]
    out += [dict(t) for t in options.tolerations]
    return [t for i, t in enumerate(out) if t not in out[:i]]


def _template(
    launch: Launch, options: PodOptions, *, container: str, image: str, ray: bool
) -> dict[str, Any]:
    spec, name = launch.spec, launch.name
    contract = pod_contract(
        spec,
        launch.offer,
        launch.request_id,
        NodeShape.of(launch.offer, rdma=launch.pool.rdma),
        master_addr=f"{name}-0.{name}",
        secret_object={s: secret_object(s) for s in spec.secrets},
        gpu_resource=launch.pool.resource,
        rdma_resource=options.rdma_resource,
        shm_size=options.shm_size,
        # A Ray program learns its cluster from Ray itself; no rank, no rank-0 address.
        ranked=not ray,
    )
    resources = contract["resources"]
    if spec.cpus is not None:
        resources["requests"]["cpu"] = str(spec.cpus)
    main: dict[str, Any] = {
        "name": container,
        "image": image,
        "env": contract["env"],
        "resources": resources,
        "volumeMounts": contract["volumeMounts"],
    }
    if contract["securityContext"]:
        main["securityContext"] = contract["securityContext"]
    command = None if ray else _command(spec)
    if command is not None:
        main["command"] = command
    pod: dict[str, Any] = {
        # The scheduler owns retries; a pod failure policy needs "Never" (batch/v1).
        "restartPolicy": "Never",
        "nodeSelector": launch.pool.selector(),
        "tolerations": _tolerations(launch.pool, options),
        "containers": [main],
        "volumes": contract["volumes"],
    }
    if not ray:
        pod["subdomain"] = name
    if options.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in options.image_pull_secrets]
    return {"metadata": {"labels": launch.labels, "annotations": launch.annotations}, "spec": pod}


def _meta(launch: Launch) -> dict[str, Any]:
    # The queue label goes on the workload only: Kueue admits the Job or RayJob, not its pods.
    labels = {**launch.labels, QUEUE_LABEL: launch.queue} if launch.queue else launch.labels
    return {"name": launch.name, "labels": labels, "annotations": launch.annotations}


def _queued(launch: Launch, spec: dict[str, Any]) -> dict[str, Any]:
    if launch.queue:
        # Kueue's webhook would suspend it anyway (jobframework ApplyDefaultForSuspend);
        # created suspended, no pod can start before admission even without the webhook.
        spec["suspend"] = True
    return spec


def indexed_job(launch: Launch, options: PodOptions) -> dict[str, Any]:
    """Return the Indexed Job that runs the command on every node of the gang.

    Args:
        launch: The launch.
        options: Pod options.

    Returns:
        A ``batch/v1`` Job.
    """
    assert launch.spec.image is not None
    nodes = launch.spec.nodes
    job: dict[str, Any] = {
        "backoffLimit": 0,
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        # Kubernetes deletes a pod preempted by the scheduler or evicted through the
        # Eviction API; only the Job's verdict survives. This rule makes that verdict tell a
        # disruption (Failed, reason PodFailurePolicy: re-placed) from a failure of the
        # command (BackoffLimitExceeded: failed). GA in Kubernetes 1.31.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                }
            ]
        },
        "template": _template(
            launch, options, container="main", image=launch.spec.image, ray=False
        ),
    }
    if options.finished_ttl_s is not None:
        # The orphan sweep deletes a finished Job; this is the backstop with no scheduler.
        job["ttlSecondsAfterFinished"] = options.finished_ttl_s
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(launch),
            "spec": _queued(launch, job)}


def headless_service(name: str, labels: Mapping[str, str], job_uid: str) -> dict[str, Any]:
    """Return the headless Service that gives the Job's pods their DNS names.

    Owned by the Job: deleting the Job garbage-collects it.

    Args:
        name: The Job's name (the Service's too: the pods' subdomain).
        labels: Labels of the Job.
        job_uid: The Job's uid.

    Returns:
        A ``v1`` Service.
    """
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name,
        "uid": job_uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "ownerReferences": [owner],
                     "labels": {k: v for k, v in labels.items() if k != QUEUE_LABEL}},
        "spec": {
            "clusterIP": "None",
            # Rank 0's name must resolve before any pod is Ready (there is no probe).
            "publishNotReadyAddresses": True,
            "selector": {WORKLOAD: name},
        },
    }


def rayjob(launch: Launch, options: PodOptions) -> dict[str, Any]:
    """Return the RayJob of a Ray program: a Ray cluster of the gang, the command once.

    Args:
        launch: The launch (its command is the entrypoint).
        options: Pod options.

    Returns:
        A ``ray.io/v1`` RayJob.
    """
    spec = launch.spec
    image = options.ray_image or spec.image
    assert image is not None
    entrypoint = spec.command if isinstance(spec.command, str) else shlex.join(spec.command or ())
    workers = spec.nodes - 1
    cluster: dict[str, Any] = {
        # The head is one of the gang's GPU nodes: N nodes = head + N-1 workers.
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0"},
            "template": _template(launch, options, container="ray-head", image=image, ray=True),
        }
    }
    if workers:
        worker = _template(launch, options, container="ray-worker", image=image, ray=True)
        cluster["workerGroupSpecs"] = [
            {
                "groupName": "gpu",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": worker,
            }
        ]
    body: dict[str, Any] = {
        "entrypoint": entrypoint,
        # The Ray cluster exists for this job only: KubeRay deletes it when the job ends.
        "shutdownAfterJobFinishes": True,
        "backoffLimit": 0,
        "rayClusterSpec": cluster,
    }
    group, version, _ = RAY
    return {"apiVersion": f"{group}/{version}", "kind": "RayJob", "metadata": _meta(launch),
            "spec": _queued(launch, body)}

