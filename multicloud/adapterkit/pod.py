"""The pod side of the node contract: what a Kubernetes container of a gang is given.

Kubernetes clouds run the container directly instead of the VM node program; this gives
it the same environment, secrets rule and devices (docs/architecture.md, "Adapters").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from multicloud.adapterkit.node import NodeShape, contract_env, secret_env_name
from multicloud.provider import LaunchSpec, Offer

__all__ = ["pod_contract"]


def pod_contract(
    spec: LaunchSpec,
    offer: Offer,
    request_id: str,
    shape: NodeShape,
    *,
    master_addr: str,
    secret_object: Mapping[str, str],
    gpu_resource: str = "nvidia.com/gpu",
    rdma_resource: str = "rdma/ib",
    shm_size: str | None = None,
    secret_key: Callable[[str], str] = secret_env_name,
    ranked: bool = True,
) -> dict[str, Any]:
    """Return the pod-side node contract: env, resources, volumes, security context.

    The rank comes from the Indexed Job's completion index (the downward API), rank 0 is
    ``master_addr`` (the index-0 pod's stable name behind a headless Service), secrets are
    read by the kubelet from Secret objects (``secretKeyRef``), never by multicloud.

    Args:
        spec: The launch.
        offer: The offer launched on.
        request_id: The launch's idempotency key.
        shape: The node's shape (accelerators per node, RDMA).
        master_addr: DNS name of rank 0.
        secret_object: Secret name → the Secret object holding it (key = the name).
        gpu_resource: Extended resource of the accelerators.
        rdma_resource: Extended resource of the RDMA devices (requested when
            ``shape.rdma``).
        shm_size: Size limit of the memory-backed ``/dev/shm`` (None: no limit).
        secret_key: The key a secret is read from in its Secret object (default: its
            environment variable name, ``prod/hf-token`` → ``HF_TOKEN``, always a valid key).
        ranked: Give the pod its rank and rank 0's address; False for the pods of a Ray
            cluster, which learn their cluster from Ray itself.

    Returns:
        ``{"env": [...], "resources": {...}, "volumes": [...], "volumeMounts": [...],
        "securityContext": {...}}`` to merge into the container and pod spec.
    """
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in contract_env(spec, offer, request_id, shape).items()
    ]
    if ranked:
        env += [
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
            {"name": "MASTER_ADDR", "value": master_addr},
            {"name": "PET_MASTER_ADDR", "value": master_addr},
        ]
    env += [
        {
            "name": secret_env_name(name),
            "valueFrom": {
                "secretKeyRef": {"name": secret_object[name], "key": secret_key(name)}
            },
        }
        for name in spec.secrets
    ]
    limits: dict[str, str] = {}
    if shape.family != "cpu":
        limits[gpu_resource] = str(shape.accelerators)
    if shape.rdma:
        limits[rdma_resource] = "1"
    shm: dict[str, Any] = {"medium": "Memory"}
    if shm_size:
        shm["sizeLimit"] = shm_size
    security: dict[str, Any] = {"capabilities": {"add": ["IPC_LOCK"]}} if shape.rdma else {}
    return {
        "env": env,
        "resources": {"limits": dict(limits), "requests": dict(limits)},
        "volumes": [{"name": "dshm", "emptyDir": shm}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": security,
    }
