"""The adapter conformance suite, run against AWSProvider talking to a moto server.

The fake (``multicloud_aws.testing.serve``) runs on 127.0.0.1 with fake credentials; every
boto3 session the tests hand the adapter refuses requests to any other URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multicloud_aws import AWSProvider
from multicloud_aws.testing import FakeAWS, serve

from multicloud.provider import Provider
from multicloud.testing.conformance import ProviderConformance


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAWS]:
    with serve() as server:
        yield server


class TestAWSConformance(ProviderConformance):
    """Every conformance test, with one owned reservation so that a finite offer exists."""

    @pytest.fixture(autouse=True)
    def _clean_cloud(self, fake: FakeAWS) -> None:
        # Autouse runs before the suite's `provider` fixture: each test gets an empty cloud.
        fake.reset()
        # A two-node reservation gives the suite an offer with finite capacity, so that its
        # over-capacity case runs instead of being skipped.
        fake.add_reservation("us-east-1", "p5.48xlarge", "us-east-1a", total=2)
        self.fake = fake

    def make_provider(self) -> Provider:
        return AWSProvider(regions=["us-east-1"], _session=self.fake.session(), **self.fake.options)
