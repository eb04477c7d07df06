"""A fake CKS cluster: the generic fake Kubernetes API server, nodes labelled as CKS does.

Everything but the node labels is :mod:`multicloud_kubernetes.testing` (the API server,
its controllers, KubeRay, Kueue and the shared test vocabulary).

Usage::

    with serve() as kube:
        kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        provider = CoreWeaveProvider(**kube.options)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from multicloud_kubernetes.testing import TOKEN, FakeCluster, serve_fake, write_kubeconfig

__all__ = ["TOKEN", "FakeKube", "serve", "write_kubeconfig"]


class FakeKube(FakeCluster):
    """A fake CKS cluster: GPU class and instance-id labels, node lifecycle state."""

    NAMED_BY = ("gpu_class", "instance_type")

    def add_node(
        self,
        name: str,
        *,
        gpu_class: str | None = "H100_NVLINK_80GB",
        instance_type: str | None = None,
        region: str | None = "US-EAST-04",
        labels: Mapping[str, str] | None = None,
        rdma: bool | None = None,
        **hardware: Any,
    ) -> None:
        """Add one node, labelled as CKS labels its nodes (in the ``production`` state).

        Args:
            name: Node name.
            gpu_class: ``gpu.nvidia.com/class`` (None: no such label).
            instance_type: ``node.kubernetes.io/instance-type``, the CKS instance id.
            region: ``topology.kubernetes.io/region`` (None: no such label).
            labels: Extra labels (they win).
            rdma: Whether it advertises ``rdma/ib`` (default: an ``ib`` instance id).
            **hardware: :meth:`FakeCluster.put_node`'s (gpus, zone, taints, ready, ...).
        """
        cks = {"node.coreweave.cloud/state": "production"}
        for key, value in (("gpu.nvidia.com/class", gpu_class),
                           ("node.kubernetes.io/instance-type", instance_type)):
            if value is not None:
                cks[key] = value
        ib = bool(re.search(r"\dx[a-z0-9]+ib", instance_type or "")) if rdma is None else rdma
        self.put_node(name, {**cks, **(labels or {})}, region=region, rdma=ib, **hardware)


@contextlib.contextmanager
def serve(*, namespace: str = "jobs", rayjob_crd: bool = True,
          kueue: str | None = None) -> Iterator[FakeKube]:
    """Run a fake CKS cluster on 127.0.0.1 for the duration of the block.

    Args:
        namespace: Namespace the yielded options point the adapter at.
        rayjob_crd: Whether KubeRay starts installed.
        kueue: The ``kueue.x-k8s.io`` version to serve, if any.

    Yields:
        The fake cluster; ``.options`` are fleet-entry options for the adapter.
    """
    with serve_fake(FakeKube, namespace=namespace, rayjob_crd=rayjob_crd, kueue=kueue) as kube:
        yield kube
