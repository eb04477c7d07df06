"""The adapter conformance suite, run against the CoreWeave adapter and a fake API server.

The fake (``multicloud_coreweave.testing``) is a real HTTP server on 127.0.0.1, so every call
goes through the kubernetes client's own serialisation, transport and error handling.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_coreweave import CoreWeaveProvider
from multicloud_coreweave.testing import FakeKube, serve

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance


class TestCoreWeaveConformance(ProviderConformance):
    """Conformance on a cluster of four H100 nodes and two A100-80GB nodes."""

    kube: FakeKube

    @pytest.fixture(autouse=True)
    def _cluster(self) -> Iterator[None]:
        # A fresh server per test: each test sees an empty cluster.
        with serve() as kube:
            kube.add_nodes(4, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
            kube.add_nodes(2, gpu_class="A100_NVLINK_80GB", region="US-WEST-01")
            self.kube = kube
            yield

    def make_provider(self) -> Provider:
        return CoreWeaveProvider(**self.kube.options)
