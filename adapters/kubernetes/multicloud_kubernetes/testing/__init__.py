"""A fake Kubernetes API server for the Kubernetes adapters' tests, examples and benchmarks.

It serves on 127.0.0.1 (``multicloud.testing.fakecloud.serve_json``), with a bearer token,
the part of the API the adapter uses — nodes, pods, Services, ResourceQuotas, batch/v1 Jobs,
KubeRay ``ray.io/v1`` RayJobs, Kueue's Workloads and queues, and their API discovery — and
stands in for the controllers behind it: the Job controller (Indexed Job pods with their
completion index and hostname, the pod failure policy, suspension), the kube-scheduler
(node selectors, taints, GPUs, RDMA, CPU and memory; ``Unschedulable`` with the scheduler's
own wording), KubeRay (its RayJob states, including ``STOPPED`` and a failed submitter),
Kueue (:mod:`.kueue`: Workloads, quota admission, eviction, requeue, finishing), the kubelet
(:meth:`FakeCluster.environment` resolves a pod's env as the kubelet would) and cluster DNS
(:meth:`FakeCluster.resolve`).

It refuses what the API server, KubeRay and Kueue's webhooks refuse for the fields the
adapter sends (:mod:`.rules`, each rule citing its source). Tests drive it with the shared
vocabulary (``fail_next``, ``preempt``, ``finish``), KubeRay's ends
(:meth:`FakeCluster.stop`, :meth:`FakeCluster.fail_submitter`) and Kueue's
(``kube.kueue.evict``, ``kube.kueue.readmit``).

Usage::

    with serve(kueue="v1beta2") as kube:
        kube.add_nodes(2, product="NVIDIA-H100-80GB-HBM3", region="us-east-1")
        kube.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16"})
        kube.kueue.add_local_queue("team-a", "gpus")
        provider = KubernetesProvider(**kube.options, local_queue="team-a")
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from multicloud.testing.fakecloud import serve_json
from multicloud_kubernetes.testing.cluster import TOKEN, FakeCluster, write_kubeconfig
from multicloud_kubernetes.testing.rules import field_selector_matches, label_selector_matches

__all__ = [
    "TOKEN", "FakeCluster", "FakeKube", "field_selector_matches", "label_selector_matches",
    "serve", "serve_fake", "write_kubeconfig",
]

Fake = TypeVar("Fake", bound=FakeCluster)


class FakeKube(FakeCluster):
    """A generic GPU cluster: nodes labelled by NVIDIA GPU feature discovery or AMD's labeller."""

    NAMED_BY = ("product",)

    def add_node(
        self,
        name: str,
        *,
        product: str | None = "NVIDIA-H100-80GB-HBM3",
        vendor: Literal["nvidia", "amd"] = "nvidia",
        gpus: int = 8,
        region: str | None = "us-east-1",
        labels: Mapping[str, str] | None = None,
        **hardware: Any,
    ) -> None:
        """Add one node, labelled as GPU feature discovery (or AMD's labeller) labels it.

        Args:
            name: Node name.
            product: ``nvidia.com/gpu.product`` (``amd.com/gpu.product-name`` for AMD), and
                ``nvidia.com/gpu.count`` = ``gpus``; None: no GPU labels at all.
            vendor: Whose GPUs (``nvidia.com/gpu`` or ``amd.com/gpu`` allocatable).
            gpus: Allocatable GPUs.
            region: ``topology.kubernetes.io/region`` (None: no such label).
            labels: Extra labels (they win).
            **hardware: :meth:`FakeCluster.put_node`'s (zone, taints, ready, rdma, ...).
        """
        found: dict[str, str] = {}
        if product is not None and vendor == "nvidia":
            found = {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus)}
        elif product is not None:
            found = {"amd.com/gpu.product-name": product}
        self.put_node(name, {**found, **(labels or {})}, gpus=gpus,
                      gpu_resource=f"{vendor}.com/gpu", region=region, **hardware)


@contextlib.contextmanager
def serve_fake(factory: Callable[..., Fake], *, namespace: str = "jobs",
               **options: Any) -> Iterator[Fake]:
    """Run a fake cluster made by ``factory`` on 127.0.0.1 for the duration of the block.

    Args:
        factory: The fake's class (a preset's).
        namespace: Namespace the yielded options point the adapter at.
        **options: For the factory (``rayjob_crd``, ``kueue``).

    Yields:
        The fake cluster; ``.options`` are fleet-entry options for the adapter.
    """
    kube = factory(namespace, **options)
    with serve_json(kube.answer, name="fake-kube") as url, tempfile.TemporaryDirectory(
        prefix="fake-kube-"
    ) as tmp:
        kube.url, kube.kubeconfig = url, str(Path(tmp) / "kubeconfig")
        write_kubeconfig(Path(kube.kubeconfig), url, namespace=namespace)
        yield kube


@contextlib.contextmanager
def serve(*, namespace: str = "jobs", rayjob_crd: bool = True,
          kueue: str | None = None) -> Iterator[FakeKube]:
    """Run a generic fake GPU cluster on 127.0.0.1 for the duration of the block.

    Args:
        namespace: Namespace the yielded options point the adapter at.
        rayjob_crd: Whether KubeRay starts installed.
        kueue: The ``kueue.x-k8s.io`` version to serve (``v1beta2``, ``v1beta1``), if any.

    Yields:
        The fake cluster; ``.options`` are fleet-entry options for the adapter.
    """
    with serve_fake(FakeKube, namespace=namespace, rayjob_crd=rayjob_crd, kueue=kueue) as kube:
        yield kube
