"""The adapter conformance suite, run against the Azure adapter and a fake ARM on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_azure import AzureProvider
from multicloud_azure.testing import FakeArm, serve

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance


class TestAzureConformance(ProviderConformance):
    """Every conformance test, each against a fresh fake Resource Manager."""

    fake: FakeArm

    @pytest.fixture(autouse=True)
    def _fake_arm(self) -> Iterator[None]:
        # A fresh fake per test: conformance tests reuse job ids, so shared VMs would leak
        # from one test into the next.
        with serve() as fake:
            self.fake = fake
            yield

    def make_provider(self) -> Provider:
        # One region keeps offers() to one resource-SKU listing per provider.
        return AzureProvider(fleet_name="azure", regions=["eastus"], **self.fake.options)
