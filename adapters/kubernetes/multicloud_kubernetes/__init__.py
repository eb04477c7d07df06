"""multicloud-kubernetes: any Kubernetes GPU cluster as a multicloud provider.

Registered in the ``multicloud.providers`` entry-point group as ``kubernetes``; load it with
``multicloud.providers.load("kubernetes", kubeconfig=..., namespace=...)`` or from a fleet
file entry with ``adapter: kubernetes``. Presets of it (``multicloud-coreweave``) subclass
:class:`KubernetesProvider`. See ``docs/providers/kubernetes.md``.

* :mod:`.errors` — the Kubernetes rows of the error boundary (the HTTP fallback is the kit's).
* :mod:`.cluster` — one API server, its client and its API discovery.
* :mod:`.nodes` — what a GPU node is, from its labels.
* :mod:`.pools` — GPU node pools read from nodes and pods.
* :mod:`.pricing` — the fleet's price card (owned capacity amortised), list prices.
* :mod:`.manifests` — Indexed Job + headless Service, or RayJob, from the kit's pod contract.
* :mod:`.status` — how a Job, a RayJob and their pods read as a workload status.
* :mod:`.kueue` — submitting through a LocalQueue and reading Kueue's Workload.
* :mod:`.provider` — the Provider: offers, launch, status, terminate, owned.
"""

from __future__ import annotations

from multicloud_kubernetes.nodes import NodeType, accelerator_of
from multicloud_kubernetes.pools import NodePool
from multicloud_kubernetes.provider import KubernetesProvider

__all__ = ["KubernetesProvider", "NodePool", "NodeType", "accelerator_of"]
