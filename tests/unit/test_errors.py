"""Typed errors survive the trip from the scheduler actor to the client (pickling)."""

from __future__ import annotations

import pickle

import pytest

from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    MulticloudError,
    QuotaError,
    SpecError,
    TransientError,
)
from multicloud.store import IdempotencyConflictError, JobNotFoundError


@pytest.mark.parametrize(
    "error",
    [
        SpecError("jobs.yaml", [("jobs[0].resources.count", "must be ≥ 1")]),
        CapacityError("no H100", provider="aws", scope="aws/use1-az2"),
        QuotaError("quota", provider="gcp", scope="gcp/us-central1"),
        AuthError("denied", provider="azure"),
        InvalidRequestError("bad", provider="aws"),
        TransientError("later", provider="aws", scope="aws"),
        IdempotencyConflictError("key used"),
        JobNotFoundError("no job"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_round_trip_keeps_type_message_and_fields(error: MulticloudError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)
