"""The adapter conformance suite, run against the GCP adapter and the fake Compute/TPU APIs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_gcp import GCPProvider
from multicloud_gcp.testing import FakeGCP, serve_offline

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance


class TestGCPConformance(ProviderConformance):
    """Every conformance test, through the real google-cloud clients' REST transport."""

    fake: FakeGCP

    @pytest.fixture(autouse=True)
    def _fake_cloud(self) -> Iterator[None]:
        # One fake per test (fresh state); the guard proves nothing leaves 127.0.0.1.
        with serve_offline() as fake:
            self.fake = fake
            yield

    def make_provider(self) -> Provider:
        # One region keeps the listings small; it has GPU VMs, and TPU slices without spot.
        return GCPProvider(regions=["us-central1"], **self.fake.options)
