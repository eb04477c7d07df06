"""Errors the store raises."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from multicloud.errors import MulticloudError
from multicloud.lifecycle import InvalidTransitionError

__all__ = [
    "AttemptEndedError",
    "AttemptNotFoundError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "LeaseHeldError",
    "LeaseLost",
    "SchemaVersionError",
    "StoreError",
    "unreachable",
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


class LeaseLost(StoreError):
    """This scheduler's lease on the store was taken over: its writes are refused.

    Raised by every fenced write once the store's lease epoch is no longer the one this
    scheduler acquired (``docs/architecture.md``, "One scheduler per store"). The
    transaction it was raised in is rolled back.
    """


class LeaseHeldError(StoreError):
    """Another live scheduler holds the store's lease.

    Args:
        message: What to show.
        lease: The lease as read (a :class:`multicloud.store.lease.Lease`).
    """

    def __init__(self, message: str, lease: object = None) -> None:
        # Both in ``args``: the error crosses Ray by pickle, which rebuilds it from them.
        super().__init__(message, lease)
        self.lease = lease

    def __str__(self) -> str:
        return str(self.args[0])


def unreachable(error: BaseException) -> bool:
    """True if ``error`` says the store could not be reached, not that it refused.

    A connection the server ended (``pg_terminate_backend``, a restart), one refused or
    reset, or a locked SQLite file: the same call may well succeed a moment later. A
    refusal of the store itself (a lease taken over, a job not found, a newer schema) is
    a :class:`StoreError` and never counts.

    Args:
        error: What a store call raised.

    Returns:
        True when trying again is worthwhile.
    """
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(error, sa_exc.DBAPIError) and bool(error.connection_invalidated)
