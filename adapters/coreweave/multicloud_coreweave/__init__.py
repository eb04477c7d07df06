"""multicloud-coreweave: the CoreWeave (CKS, Kubernetes-native) adapter of multicloud.

Registered in the ``multicloud.providers`` entry-point group as ``coreweave``; load it with
``multicloud.providers.load("coreweave", kubeconfig=..., namespace=...)`` or from a fleet
file entry with ``adapter: coreweave``. The generic Kubernetes machinery it is a preset of
lives in :mod:`multicloud_coreweave.kube`. See ``docs/providers/coreweave.md``.
"""

from __future__ import annotations

from multicloud_coreweave.provider import (
    CoreWeaveProvider,
    NodePool,
    accelerator_of,
    instance_type_of,
)

__all__ = ["CoreWeaveProvider", "NodePool", "accelerator_of", "instance_type_of"]
