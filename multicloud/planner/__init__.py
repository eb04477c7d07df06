"""The pure planner: ``plan(snapshot, policy) -> Plan`` (DESIGN.md §3, §5)."""

from __future__ import annotations

from multicloud.planner.core import plan, queue_order
from multicloud.planner.shapes import ShapeCache
from multicloud.planner.types import (
    Assignment,
    AuditEntry,
    Plan,
    PlanStats,
    Policy,
    RofrOutcome,
    Snapshot,
    Unplaced,
)

__all__ = [
    "Assignment",
    "AuditEntry",
    "Plan",
    "PlanStats",
    "Policy",
    "RofrOutcome",
    "ShapeCache",
    "Snapshot",
    "Unplaced",
    "plan",
    "queue_order",
]
