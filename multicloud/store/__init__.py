"""The durable store behind the scheduler: jobs, attempts, decisions, the ROFR ledger, events.

A package by concern (``docs/architecture.md``, "The store"):

- ``records``: the typed records the store takes and returns;
- ``schema`` and ``migrations``: the tables and the versioned steps that built them;
- ``engine``: connections, transactions, the one write choke point;
- ``jobs``, ``attempts``, ``ledger``: the statements, in bulk, per table family;
- ``lease``: one scheduler per store: the lease, its fencing epoch, ``Store.lease``;
- ``core``: :class:`Store`, one transaction per call, on top of them.
"""

from __future__ import annotations

from multicloud.lifecycle import (
    TERMINAL_STATES,
    TRANSITIONS,
    InvalidTransitionError,
    JobState,
    Transition,
    can_transition,
)
from multicloud.store.core import Store
from multicloud.store.engine import engine_url
from multicloud.store.errors import (
    AttemptEndedError,
    AttemptNotFoundError,
    IdempotencyConflictError,
    JobNotFoundError,
    LeaseHeldError,
    LeaseLost,
    SchemaVersionError,
    StoreError,
    unreachable,
)
from multicloud.store.jobs import spec_hash
from multicloud.store.lease import Holder, Lease
from multicloud.store.migrations import SCHEMA_VERSION
from multicloud.store.records import (
    AttemptRecord,
    Charge,
    Decision,
    DecisionRecord,
    EventRecord,
    JobRecord,
    NewAttempt,
)

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "AttemptEndedError",
    "AttemptNotFoundError",
    "AttemptRecord",
    "Charge",
    "Decision",
    "DecisionRecord",
    "EventRecord",
    "Holder",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "JobRecord",
    "JobState",
    "Lease",
    "LeaseHeldError",
    "LeaseLost",
    "NewAttempt",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "Transition",
    "can_transition",
    "engine_url",
    "spec_hash",
    "unreachable",
]
