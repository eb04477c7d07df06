"""What must hold however the service is hurt: the chaos soak's invariants, as one checker.

``bench/chaos.py`` runs the service under a mix of faults and calls :meth:`Invariants.check`
throughout and at the end; its short run in the tests asserts the same answers. The checker
reads the truth directly — the store's tables and the simulated clouds' journals — never
the scheduler's memory, and knows what the driver was told (the job id each client key got,
the cancellations that were answered "cancelled").

Invariants (docs/architecture.md, "The store" and "The scheduler"):

- **no job lost**: every acknowledged submission is in the store, once per client key;
- **none launched twice**: every workload in a cloud has a recorded attempt (its request
  id), and no attempt has more workloads than it has places;
- **no orphan**: no workload runs for an attempt that ended more than ``grace_s`` ago (the
  sweep's and the status poll's time) — counted from when the service last came back;
- **every job terminal with its reasons** (at the end): every job finished, its last event
  says so, every event has a reason, no attempt is live, a cancel answered "cancelled"
  stuck, no workload of the install runs;
- **one lease holder**: checked by the caller's ``lease_check``, where a store has a lease.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from multicloud.lifecycle import JobState
from multicloud.sim import SimState
from multicloud.sim.workload import TAG_ATTEMPT, TAG_INSTALL, SimWorkload
from multicloud.store.engine import engine_url
from multicloud.store.schema import ATTEMPTS, EVENTS, JOBS, META

__all__ = ["Invariants", "Submitted", "Violation"]


@dataclass(frozen=True)
class Violation:
    """One broken invariant.

    Attributes:
        invariant: Which (``lost``, ``launched-twice``, ``orphan``, ``not-terminal``, ...).
        subject: What it is about (a job id, a request id, a client key).
        detail: What was seen.
    """

    invariant: str
    subject: str
    detail: str


@dataclass
class Submitted:
    """What the driver was told by the service.

    Attributes:
        ids: Client key → the job id the submission was acknowledged with.
        cancelled: Jobs whose cancel was answered ``cancelled``.
    """

    ids: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)


@dataclass
class _Snapshot:
    """The store's jobs, attempts and events, read in one transaction."""

    jobs: dict[str, sa.RowMapping]
    attempts: list[sa.RowMapping]
    events: dict[str, list[sa.RowMapping]]
    install_id: str | None


class Invariants:
    """Checks the invariants against a store and the simulated clouds' journals.

    Args:
        store_url: The store.
        sim_paths: The simulated clouds' journals.
        grace_s: How long an ended attempt's workload may still run (sweep interval and
            status poll, with slack).
        lease_check: Returns violations of the one-holder rule, where the store has a lease.
    """

    def __init__(
        self,
        store_url: str,
        sim_paths: Iterable[str],
        *,
        grace_s: float = 30.0,
        lease_check: Callable[[], list[Violation]] | None = None,
    ) -> None:
        # No pool: the soak kills the store's connections on purpose; each check connects anew.
        self._engine = sa.create_engine(engine_url(store_url), poolclass=NullPool)
        # Replicas kept open: each check reads only what the journals gained since.
        self._clouds = [SimState.open(path) for path in sim_paths]
        self.grace_s = grace_s
        self._lease_check = lease_check

    def close(self) -> None:
        """Release the engine and the journals."""
        self._engine.dispose()
        for state in self._clouds:
            state.close()

    def check(
        self, submitted: Submitted, *, final: bool = False, quiet_since: float = 0.0
    ) -> list[Violation]:
        """Check every invariant now.

        Args:
            submitted: What the driver was told.
            final: The run is over and settled: check the end-state invariants too.
            quiet_since: When the service last came back from a fault (``time.time()``);
                an orphan's grace counts from then at the earliest.

        Returns:
            The violations found (empty when all hold).
        """
        # The clouds first, then the store: an attempt is committed before its launch is
        # sent, so every workload read here has its attempt in the later store read.
        now = time.time()
        workloads = self._workloads()
        snap = self._snapshot()
        out = self._lost(submitted, snap)
        out += self._launched_twice(workloads, snap)
        out += self._orphans(workloads, snap, now, quiet_since)
        if final:
            out += self._settled(submitted, snap, workloads, now)
        if self._lease_check is not None:
            out += self._lease_check()
        return out

    # ------------------------------------------------------------------ reading

    def _workloads(self) -> list[SimWorkload]:
        found: list[SimWorkload] = []
        for state in self._clouds:
            with state.transaction():
                found.extend(state.workloads.values())
        return found

    def _snapshot(self) -> _Snapshot:
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                jobs = {r["id"]: r for r in conn.execute(sa.select(JOBS)).mappings()}
                attempts = list(conn.execute(sa.select(ATTEMPTS)).mappings())
                events: dict[str, list[sa.RowMapping]] = {}
                for r in conn.execute(sa.select(EVENTS).order_by(EVENTS.c.id)).mappings():
                    events.setdefault(r["job_id"], []).append(r)
                meta = conn.execute(
                    sa.select(META.c.value).where(META.c.key == "install_id")
                ).scalar()
        return _Snapshot(jobs, attempts, events, meta)

    # ------------------------------------------------------------------ the invariants

    def _lost(self, submitted: Submitted, snap: _Snapshot) -> list[Violation]:
        out = []
        by_key = Counter(r["client_key"] for r in snap.jobs.values() if r["client_key"])
        for key, n in by_key.items():
            if n > 1:
                out.append(Violation("duplicate-submission", key, f"{n} jobs for one key"))
        keys = {r["client_key"]: r["id"] for r in snap.jobs.values() if r["client_key"]}
        for key, job_id in submitted.ids.items():
            if job_id not in snap.jobs:
                out.append(Violation("lost", job_id, f"acknowledged for key {key}; not stored"))
            elif keys.get(key) != job_id:
                out.append(Violation("lost", job_id, f"key {key} now names {keys.get(key)}"))
        return out

    def _launched_twice(self, workloads: list[SimWorkload], snap: _Snapshot) -> list[Violation]:
        out = []
        recorded = {a["request_id"] for a in snap.attempts}
        places = Counter((a["job_id"], a["attempt"]) for a in snap.attempts)
        launched: Counter[tuple[str, int]] = Counter()
        for w in workloads:
            if w.request_id not in recorded:
                out.append(Violation("unrecorded-launch", w.request_id, f"workload {w.id}"))
                continue
            launched[(w.job_id, _attempt_of(w))] += 1
        for (job_id, attempt), n in launched.items():
            if n > places[(job_id, attempt)]:
                detail = f"attempt {attempt}: {n} workloads for {places[(job_id, attempt)]} places"
                out.append(Violation("launched-twice", job_id, detail))
        return out

    def _orphans(
        self, workloads: list[SimWorkload], snap: _Snapshot, now: float, quiet_since: float
    ) -> list[Violation]:
        out = []
        ended = {a["request_id"]: a for a in snap.attempts if a["outcome"] is not None}
        for w in workloads:
            attempt = ended.get(w.request_id)
            if attempt is None or not w.live_at(now):
                continue
            since = max(_epoch(attempt["ended_at"]), quiet_since)
            if now - since > self.grace_s:
                detail = (
                    f"workload {w.id} runs {now - since:.0f} s after its attempt ended "
                    f"({attempt['outcome']})"
                )
                out.append(Violation("orphan", w.request_id, detail))
        return out

    def _settled(
        self, submitted: Submitted, snap: _Snapshot, workloads: list[SimWorkload], now: float
    ) -> list[Violation]:
        out = []
        for job_id, job in snap.jobs.items():
            state = JobState(job["state"])
            events = snap.events.get(job_id, [])
            if not state.is_terminal:
                out.append(Violation("not-terminal", job_id, f"still {state.value}"))
            # A job still pending since its submission has no event row: its row's
            # ``submitted_at`` is that event (schema version 5).
            last = events[-1]["to_state"] if events else JobState.PENDING.value
            if last != state.value:
                out.append(Violation("no-reason", job_id, f"no event records {state.value}"))
            if any(not (e["reason"] or "").strip() for e in events):
                out.append(Violation("no-reason", job_id, "an event without a reason"))
            if job_id in submitted.cancelled and state is not JobState.CANCELLED:
                out.append(Violation("cancel-lost", job_id, f"answered cancelled; {state.value}"))
        for a in snap.attempts:
            if a["outcome"] is None:
                out.append(Violation("live-attempt", a["request_id"], f"job {a['job_id']}"))
        for w in workloads:
            if w.live_at(now) and w.tags.get(TAG_INSTALL) == snap.install_id:
                out.append(Violation("orphan", w.request_id, f"workload {w.id} still runs"))
        return out


def _attempt_of(workload: SimWorkload) -> int:
    try:
        return int(workload.tags.get(TAG_ATTEMPT, ""))
    except ValueError:
        return 0


def _epoch(value: Any) -> float:
    """Seconds since the epoch of a stored time (timezone-aware, UTC)."""
    return float(value.timestamp()) if value is not None else 0.0
