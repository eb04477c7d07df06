"""The shared conformance suite on the OCI adapter, through the real ``oci`` SDK and the fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_oci import OCIProvider
from multicloud_oci.testing import FakeOCI, serve

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance


class TestOCIConformance(ProviderConformance):
    fake: FakeOCI

    @pytest.fixture(autouse=True)
    def _fake(self) -> Iterator[None]:
        with serve() as fake:
            self.fake = fake
            yield

    def make_provider(self) -> Provider:
        return OCIProvider(fleet_name="oci-conf", regions=["us-ashburn-1"], **self.fake.options)
