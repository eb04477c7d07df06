"""One job's state while the planner works on it (docs/architecture.md, the planner)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from multicloud.models import Job
from multicloud.planner.options import Opt, Options
from multicloud.planner.types import RofrOutcome

EPS = 1e-9


@dataclass
class Slot:
    """One job's state during planning."""

    idx: int
    id: str
    job: Job
    options: Options
    nodes: int
    replicas: int
    spread: int
    pinned: bool = False
    restricted: bool = False  # ROFR declined: non-holder options only
    # ROFR declined on price: outside gang prices must stay below this (what the
    # holders would also have declined)
    ceiling: float | None = None
    chosen: list[tuple[Opt, int, float]] = field(default_factory=list)  # opt, replicas, node price
    rofr: RofrOutcome | None = None
    reasons: list[str] = field(default_factory=list)
    unplaced: str | None = None
    details: list[str] = field(default_factory=list)
    static_fail: bool = False  # can never be placed in this snapshot, whatever others do
    contended: bool = False  # lost a cheaper option to capacity (or a budget) in the walk

    def cost_of(self, choice: Sequence[tuple[Opt, int, float]]) -> float:
        return sum(price * self.nodes * reps for _, reps, price in choice) * self.job.duration_hours
