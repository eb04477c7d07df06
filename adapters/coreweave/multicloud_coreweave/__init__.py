"""multicloud-coreweave: the CoreWeave (CKS, Kubernetes-native) adapter of multicloud.

Registered in the ``multicloud.providers`` entry-point group as ``coreweave``; load it with
``multicloud.providers.load("coreweave", kubeconfig=..., namespace=...)`` or from a fleet
file entry with ``adapter: coreweave``. It is a preset of the generic Kubernetes adapter
(``multicloud-kubernetes``): CKS's node labels, InfiniBand, node states and list prices.
See ``docs/providers/coreweave.md``.
"""

from __future__ import annotations

from multicloud_coreweave.provider import CoreWeaveProvider, instance_type_of

__all__ = ["CoreWeaveProvider", "instance_type_of"]
