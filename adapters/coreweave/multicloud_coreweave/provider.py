"""The CoreWeave adapter: a preset of the generic Kubernetes adapter for CKS.

CoreWeave compute is Kubernetes-native (CKS): everything that runs, reads status, deletes
and sweeps is :class:`multicloud_kubernetes.KubernetesProvider`. What is CoreWeave's is here:

* **node labels** — the GPU class label ``gpu.nvidia.com/class`` (``H100_NVLINK_80GB``),
  else the CKS instance id every node carries as ``node.kubernetes.io/instance-type``
  (``gd-8xh100ib-i128``: 8 × H100 with InfiniBand), else NVIDIA GPU feature discovery's
  ``nvidia.com/gpu.product``;
* **InfiniBand** — an instance id with ``ib`` after the GPU, or the ``ib.coreweave.cloud/*``
  labels CKS puts on InfiniBand nodes: pods request ``rdma/ib: 1`` (CoreWeave's documented
  resource, "used as a boolean to schedule Pods onto servers with InfiniBand") and IPC_LOCK;
* **node states** — only nodes in the ``node.coreweave.cloud/state=production`` lifecycle
  state take customer work;
* **list prices** — the shipped CoreWeave list prices for pools not on the price card.

See docs/providers/coreweave.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes.nodes import GFD_PRODUCT, INSTANCE_TYPE

from multicloud.accelerators import canonical
from multicloud.adapterkit import KUBERNETES_LABELS

__all__ = [
    "CLASS_LABEL", "LABEL_ATTEMPT", "LABEL_INSTALL", "LABEL_JOB", "CoreWeaveProvider",
    "instance_type_of",
]

LABEL_JOB = KUBERNETES_LABELS.key("job")
LABEL_ATTEMPT = KUBERNETES_LABELS.key("attempt")
LABEL_INSTALL = KUBERNETES_LABELS.key("install")

CLASS_LABEL = "gpu.nvidia.com/class"
STATE_LABEL = "node.coreweave.cloud/state"
IB_FABRIC_LABEL = "ib.coreweave.cloud/fabric"

# CKS instance ids: gd-8xh100ib-i128 (count × GPU, "ib" for InfiniBand, CPU cores) and the
# rack-scale gb200-4x. CKS: "all Nodes within a Node Pool are tagged with an Instance ID
# using the instance-type label" (docs.coreweave.com, Workload scheduling on CKS).
_INSTANCE_ID = (
    re.compile(r"^(?:[a-z]+-)?(?P<count>\d+)x(?P<gpu>[a-z0-9]+?)(?P<ib>ib)?(?:-[a-z]\d+)*$"),
    re.compile(r"^(?P<gpu>[a-z]+[0-9]+[a-z0-9]*?)(?P<ib>ib)?-(?P<count>\d+)x$"),
)
# GPU words of instance ids that are not the canonical spelling: CoreWeave's A100 instances
# are HGX A100 80 GB (coreweave.com/pricing).
_GPU_WORDS = {"a100": "A100-80GB"}


def instance_type_of(instance_id: str) -> tuple[str, int, bool] | None:
    """Read a CKS instance id: the accelerator, GPUs per node and InfiniBand.

    ``gd-8xh100ib-i128`` → ``("H100", 8, True)``, ``gd-8xl40s-i128`` → ``("L40S", 8,
    False)``, ``gb200-4x`` → ``("GB200", 4, False)``.

    Args:
        instance_id: The ``node.kubernetes.io/instance-type`` value.

    Returns:
        ``(accelerator, count, infiniband)``, or None when it is not an id of a known GPU.
    """
    for pattern in _INSTANCE_ID:
        m = pattern.match(instance_id.lower())
        if m is None:
            continue
        word = m["gpu"]
        try:
            accelerator = canonical(_GPU_WORDS.get(word, word))
        except ValueError:
            return None
        if accelerator != "CPU":
            return accelerator, int(m["count"]), bool(m["ib"])
    return None


class CoreWeaveProvider(KubernetesProvider):
    """Runs workloads on a CoreWeave CKS cluster (the generic Kubernetes adapter's options).

    The options are :class:`~multicloud_kubernetes.KubernetesProvider`'s; ``type_labels``
    default to CKS's (GPU class, instance id, GPU product) and ``list_prices`` to
    CoreWeave's.
    """

    name: ClassVar[str] = "coreweave"
    TYPE_LABELS: ClassVar[tuple[str, ...]] = (CLASS_LABEL, INSTANCE_TYPE, GFD_PRODUCT)
    LIST_PRICES: ClassVar[str | None] = "coreweave"

    def read_label(self, key: str, value: str) -> str | None:
        """Read a type label as the base does, a CKS instance id by its grammar first."""
        parsed = instance_type_of(value) if key == INSTANCE_TYPE else None
        if parsed is not None and value not in self.gpu_classes:
            return parsed[0]
        return super().read_label(key, value)

    def node_rdma(self, labels: Mapping[str, str]) -> bool:
        """InfiniBand: an ``ib`` instance id, or CKS's InfiniBand fabric label."""
        parsed = instance_type_of(labels.get(INSTANCE_TYPE, ""))
        return bool(parsed and parsed[2]) or IB_FABRIC_LABEL in labels

    def node_usable(self, labels: Mapping[str, str]) -> bool:
        """Only ``production`` nodes take work (CKS node lifecycle: zap, triage, ... do not)."""
        return labels.get(STATE_LABEL, "production") == "production"
