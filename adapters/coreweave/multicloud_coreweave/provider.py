"""The CoreWeave adapter: a thin preset of the generic Kubernetes adapter for CKS.

CoreWeave compute is Kubernetes-native (CKS): everything that runs, reads status, deletes
and sweeps is the generic machinery of :mod:`multicloud_coreweave.kube`. What is
CoreWeave's is here:

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

import dataclasses
import re
from collections.abc import Mapping
from typing import ClassVar

from multicloud.accelerators import canonical
from multicloud.adapterkit import KUBERNETES_LABELS
from multicloud_coreweave.kube.adapter import KubernetesAdapter, accelerator_of
from multicloud_coreweave.kube.pools import NodePool, NodeType

__all__ = [
    "INSTANCE_TYPE_LABEL", "LABEL_ATTEMPT", "LABEL_INSTALL", "LABEL_JOB", "CoreWeaveProvider",
    "NodePool", "accelerator_of", "instance_type_of",
]

LABEL_JOB = KUBERNETES_LABELS.key("job")
LABEL_ATTEMPT = KUBERNETES_LABELS.key("attempt")
LABEL_INSTALL = KUBERNETES_LABELS.key("install")

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
"""CKS: "all Nodes within a Node Pool are tagged with an Instance ID using the instance-type
label" (docs.coreweave.com, Workload scheduling on CKS)."""
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
STATE_LABEL = "node.coreweave.cloud/state"
IB_FABRIC_LABEL = "ib.coreweave.cloud/fabric"

# CKS instance ids: gd-8xh100ib-i128 (count × GPU, "ib" for InfiniBand, CPU cores) and the
# rack-scale gb200-4x.
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


class CoreWeaveProvider(KubernetesAdapter):
    """Runs workloads on a CoreWeave CKS cluster (the generic Kubernetes adapter's options).

    The options are :class:`~multicloud_coreweave.kube.adapter.KubernetesAdapter`'s;
    ``class_label`` defaults to CoreWeave's GPU class label, and pools not on the
    ``price_card`` take CoreWeave's list prices.
    """

    name: ClassVar[str] = "coreweave"
    CLASS_LABEL: ClassVar[str] = "gpu.nvidia.com/class"
    LIST_PRICES: ClassVar[str | None] = "coreweave"

    def node_type(self, labels: Mapping[str, str]) -> NodeType | str:
        """Read a CoreWeave node's GPU type: class label, instance id, GPU product.

        Args:
            labels: The node's labels.

        Returns:
            Its type, or why it is left out.
        """
        instance_id = labels.get(INSTANCE_TYPE_LABEL, "")
        parsed = instance_type_of(instance_id) if instance_id else None
        ib = bool(parsed and parsed[2]) or IB_FABRIC_LABEL in labels
        if labels.get(self.class_label):
            found = super().node_type(labels)
            return found if isinstance(found, str) else dataclasses.replace(found, rdma=ib)
        if instance_id:
            accelerator = (
                canonical(self.gpu_classes[instance_id]) if instance_id in self.gpu_classes
                else parsed[0] if parsed else accelerator_of(instance_id)
            )
            if accelerator is not None:
                return NodeType(accelerator, INSTANCE_TYPE_LABEL, instance_id, ib)
        product = labels.get(GPU_PRODUCT_LABEL)
        accelerator = accelerator_of(product, self.gpu_classes) if product else None
        if product and accelerator:
            return NodeType(accelerator, GPU_PRODUCT_LABEL, product, ib)
        return (
            f"no {self.class_label} label and instance type {instance_id or '(none)'!r} "
            "names no known GPU; add it to gpu_classes"
        )

    def node_usable(self, labels: Mapping[str, str]) -> bool:
        """Only ``production`` nodes take work (CKS node lifecycle: zap, triage, ... do not)."""
        return labels.get(STATE_LABEL, "production") == "production"
