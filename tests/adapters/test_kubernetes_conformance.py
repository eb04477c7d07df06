"""The adapter conformance suite on the generic Kubernetes adapter and the fake API server.

Twice: a plain GPU cluster, and one running Kueue where every launch goes through a
LocalQueue (created suspended, admitted by Kueue against its ClusterQueue's quota). The fake
(``multicloud_kubernetes.testing``) is a real HTTP server on 127.0.0.1, so every call goes
through the kubernetes client's own serialisation, transport and error handling.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes.testing import FakeKube, serve

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance

PRICES = {"H100": 40.0, "A100-80GB": 20.0}


class TestKubernetesConformance(ProviderConformance):
    """Conformance on four H100 nodes and two A100-80GB nodes, priced by the price card."""

    kube: FakeKube

    @pytest.fixture(autouse=True)
    def _cluster(self) -> Iterator[None]:
        # A fresh server per test: each test sees an empty cluster.
        with serve() as kube:
            kube.add_nodes(4, region="us-east-1")
            kube.add_nodes(2, product="NVIDIA-A100-SXM4-80GB", region="us-west-2")
            self.kube = kube
            yield

    def make_provider(self) -> Provider:
        return KubernetesProvider(**self.kube.options, price_card=PRICES)


class TestKubernetesKueueConformance(TestKubernetesConformance):
    """The same cluster running Kueue: a LocalQueue on a ClusterQueue with room for all."""

    @pytest.fixture(autouse=True)
    def _cluster(self) -> Iterator[None]:
        with serve(kueue="v1beta2") as kube:
            kube.add_nodes(4, region="us-east-1")
            kube.add_nodes(2, product="NVIDIA-A100-SXM4-80GB", region="us-west-2")
            kube.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "48"})
            kube.kueue.add_local_queue("team", "gpus")
            self.kube = kube
            yield

    def make_provider(self) -> Provider:
        return KubernetesProvider(**self.kube.options, price_card=PRICES, local_queue="team")
