"""Errors the store raises."""

from __future__ import annotations

from multicloud.errors import MulticloudError
from multicloud.lifecycle import InvalidTransitionError

__all__ = [
    "AttemptEndedError",
    "AttemptNotFoundError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "SchemaVersionError",
    "StoreError",
]


class StoreError(MulticloudError):
    """The store cannot be opened or used as asked."""


class JobNotFoundError(StoreError):
    """No job has the given id."""


class AttemptNotFoundError(StoreError):
    """No launch attempt has the given request id."""


class IdempotencyConflictError(StoreError):
    """An idempotency key was reused for something different from what it first named."""


class AttemptEndedError(StoreError):
    """An attempt that already ended was ended again with another outcome."""


class SchemaVersionError(StoreError):
    """The database was written by a newer multicloud than this one."""
