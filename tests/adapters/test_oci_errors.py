"""The OCI adapter's error table, row by row, through the real ``oci`` SDK and the fake.

Each OCI error is injected into the fake for the call where Oracle answers it and must come
out of the adapter as exactly one typed error with the right scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multicloud_oci.errors import RULES
from multicloud_oci.testing import FakeOCI, pick, serve

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import request_id
from multicloud.testing.builders import launch_spec

REGION, AD1 = "us-ashburn-1", "FAKE:US-ASHBURN-1-AD-1"


@pytest.fixture
def fake() -> Iterator[FakeOCI]:
    with serve() as f:
        yield f


@dataclass(frozen=True)
class Row:
    """One OCI error, the call it is injected into, and what the adapter must raise."""

    error: str
    expected: type[ProviderError]
    width: str  # "zone", "region" or "provider"
    operation: str = "LaunchInstance"
    rule: str | None = None  # the adapter's own rule it exercises (None: the kit's fallback)

    def scope(self) -> str:
        return {"zone": f"oci/{REGION}/{AD1}", "region": f"oci/{REGION}", "provider": "oci"}[
            self.width
        ]


ROWS = [
    Row("OutOfHostCapacity", CapacityError, "zone", rule="out of host capacity"),
    Row("LimitExceeded", QuotaError, "zone", rule="tenancy limit exceeded"),
    Row("QuotaExceeded", QuotaError, "zone", rule="compartment quota exceeded"),
    Row("InvalidatedRetryToken", InvalidRequestError, "region", rule="retry token invalidated"),
    Row("NotAuthorizedOrNotFound", AuthError, "provider", rule="not authorized or not found"),
    Row("NotAuthorizedOrNotFound", AuthError, "provider", operation="ListInstances",
        rule="not authorized or not found"),
    Row("NotAuthenticated", AuthError, "provider"),
    Row("NotAuthorized", AuthError, "provider"),
    Row("TooManyRequests", TransientError, "region"),
    Row("TooManyRequests", TransientError, "region", operation="ListShapes"),
    Row("InternalServerError", TransientError, "region"),
    Row("ServiceUnavailable", TransientError, "region"),
    Row("IncorrectState", TransientError, "region"),
    Row("InvalidParameter", InvalidRequestError, "region"),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.operation}-{r.error}")
def test_each_oci_error_becomes_one_typed_error(fake: FakeOCI, row: Row) -> None:
    p = fake.provider(cache_ttl_s=0.0)
    o = pick(p)
    fake.fail_next(row.operation, row.error)
    with pytest.raises(ProviderError) as caught:
        p.launch(o, launch_spec(), request_id=request_id("job-1", 1, REGION))
    assert type(caught.value) is row.expected, caught.value
    assert caught.value.scope == row.scope()
    assert caught.value.provider == "oci"


def test_every_rule_of_the_table_has_a_row() -> None:
    covered = {r.rule for r in ROWS}
    assert {rule.name.split(" (")[0] for rule in RULES} <= covered


def test_a_request_signed_with_another_key_is_not_authenticated(fake: FakeOCI) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    p = fake.provider(config={**fake.options["config"], "key_content": pem})
    with pytest.raises(AuthError) as caught:
        p.check()
    assert caught.value.scope == "oci"


def test_an_unreachable_endpoint_is_transient(fake: FakeOCI) -> None:
    p = fake.provider(endpoint="http://127.0.0.1:9")
    with pytest.raises(TransientError) as caught:
        p.check()
    assert caught.value.scope == f"oci/{REGION}"


def test_a_status_listing_that_fails_raises_rather_than_losing_the_workload(
    fake: FakeOCI,
) -> None:
    # The scheduler counts an UNKNOWN workload as lost; a throttled listing must not be.
    p = fake.provider()
    handle = p.launch(pick(p), launch_spec(), request_id="r" * 32)
    fake.fail_next("ListInstances", "TooManyRequests")
    with pytest.raises(TransientError):
        p.status([handle])
    assert p.status([handle])[handle.id].state.value == "running"
