"""What a GPU node is, read from its labels: the accelerator, and the label naming its pool.

A cluster says what its nodes are through labels, and which ones depends on who runs it:

* NVIDIA GPU feature discovery (GFD, part of the GPU operator): ``nvidia.com/gpu.product``
  (``NVIDIA-H100-80GB-HBM3``), ``nvidia.com/gpu.count`` (physical GPUs);
* AMD's GPU node labeller: ``amd.com/gpu.product-name`` (``AMD_Instinct_MI300X_OAM``);
* GKE: ``cloud.google.com/gke-accelerator`` (``nvidia-h100-80gb``);
* every managed node pool (EKS, GKE, AKS, OKE, CKS): ``node.kubernetes.io/instance-type``
  (``p5.48xlarge``), read through the shipped catalog's instance types;
* anything else: a label the fleet names, with a value → accelerator mapping it gives.

The reader tries the labels in order; the first that names a known accelerator wins and
becomes the pool's node selector.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from multicloud.accelerators import canonical
from multicloud.catalog import load_catalog

__all__ = [
    "GFD_COUNT", "GFD_PRODUCT", "INSTANCE_TYPE", "TYPE_LABELS", "NodeType", "accelerator_of",
    "catalog_accelerator", "gpu_count_mismatch", "read_type",
]

GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_COUNT = "nvidia.com/gpu.count"
AMD_PRODUCT = "amd.com/gpu.product-name"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
TYPE_LABELS: tuple[str, ...] = (GFD_PRODUCT, AMD_PRODUCT, GKE_ACCELERATOR, INSTANCE_TYPE)
"""The labels a generic cluster is read by, in order."""


@dataclass(frozen=True)
class NodeType:
    """What a node's labels say it is.

    Attributes:
        accelerator: Canonical accelerator name.
        label: The label key that names the node's pool (the pods' node selector).
        value: Its value.
        rdma: The type has RDMA devices (InfiniBand): pods request the RDMA resource.
    """

    accelerator: str
    label: str
    value: str
    rdma: bool = False


_VENDOR_WORDS = frozenset({
    "nvidia", "tesla", "geforce", "sxm", "sxm4", "sxm5", "pcie", "hbm3", "amd", "instinct", "oam",
})


def accelerator_of(product: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """Map a GPU product or class label value to a canonical accelerator name.

    ``H100_NVLINK_80GB`` → H100, ``A100_NVLINK_80GB`` → A100-80GB, ``NVIDIA-H100-80GB-HBM3``
    → H100, ``AMD_Instinct_MI300X_OAM`` → MI300X, ``nvidia-h100-80gb`` → H100.

    Args:
        product: The label value.
        overrides: Value → accelerator name (the ``gpu_classes`` option).

    Returns:
        The canonical name, or None when nothing matches.
    """
    if overrides and product in overrides:
        return canonical(overrides[product])
    tokens = [t for t in re.split(r"[_\-.\s]+", product) if t and t.lower() not in _VENDOR_WORDS]
    memory = next((t for t in tokens if re.fullmatch(r"\d+g(b)?", t.lower())), None)
    candidates = [product]
    if tokens and memory and memory != tokens[0]:
        candidates.append(f"{tokens[0]}-{memory.upper().rstrip('B')}B")
    if len(tokens) >= 2:
        candidates.append("-".join(tokens[:2]))
    for candidate in [*candidates, *tokens]:
        try:
            name = canonical(candidate)
        except ValueError:
            continue
        if name != "CPU":
            return name
    return None


@cache
def _instance_types() -> dict[str, str]:
    return {r.instance_type: r.accelerator for r in load_catalog().rows if r.accelerator != "CPU"}


def catalog_accelerator(instance_type: str) -> str | None:
    """Return the accelerator of a cloud instance type the shipped catalog knows.

    ``p5.48xlarge`` → H100, ``a3-highgpu-8g`` → H100, ``BM.GPU.MI300X.8`` → MI300X: the
    ``node.kubernetes.io/instance-type`` of managed node pools on EKS, GKE, AKS and OKE.

    Args:
        instance_type: The label value.

    Returns:
        The canonical accelerator, or None.
    """
    return _instance_types().get(instance_type)


def read_type(
    labels: Mapping[str, str], keys: Sequence[str], read: Callable[[str, str], str | None]
) -> NodeType | str:
    """Read a node's type from the first of ``keys`` whose value names an accelerator.

    Args:
        labels: The node's labels.
        keys: Label keys, in order.
        read: ``(key, value)`` → canonical accelerator or None (the adapter's reading,
            which a preset extends).

    Returns:
        The type, or why the node is left out.
    """
    tried = []
    for key in keys:
        value = labels.get(key)
        if not value:
            continue
        accelerator = read(key, value)
        if accelerator is not None:
            return NodeType(accelerator, key, value)
        tried.append(f"{key}={value}")
    if not tried:
        return f"none of the labels {', '.join(keys)}"
    return f"{'; '.join(tried)} names no known accelerator; add it to gpu_classes"


def gpu_count_mismatch(labels: Mapping[str, str], allocatable: int) -> str | None:
    """Say why a node whose schedulable GPUs differ from its physical ones is left out.

    GFD's ``nvidia.com/gpu.count`` is the physical count; allocatable ``nvidia.com/gpu`` is
    lower when GPUs are MIG-partitioned (``mixed`` strategy) or unhealthy. With the
    ``single`` MIG strategy GFD names the product ``…-MIG-1g.5gb``. Either way the node has
    no whole GPUs to offer a job that takes all of them.

    Args:
        labels: The node's labels.
        allocatable: Its allocatable GPUs.

    Returns:
        The reason, or None for a node of whole, healthy GPUs.
    """
    if "-mig-" in labels.get(GFD_PRODUCT, "").lower():
        return f"MIG partitions ({labels[GFD_PRODUCT]}) are not whole GPUs"
    physical = labels.get(GFD_COUNT)
    if physical and physical.isdigit() and int(physical) != allocatable:
        return (f"{allocatable} of its {physical} GPUs are allocatable (MIG partitions or "
                "unhealthy GPUs)")
    return None
