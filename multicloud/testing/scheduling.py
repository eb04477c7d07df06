"""Drive the scheduling cycle (no Ray) in tests: one harness, builders, fast settings.

:class:`SchedulerHarness` runs a :class:`~multicloud.service.scheduler.Scheduler` over a
store and a fleet's adapters on a :class:`~multicloud.testing.clock.FakeClock` that the
scheduler *and* the simulated clouds read. A step is: one tick, wait (in real time) for
the adapter calls and the plan it started to finish, then move the fake clock on. Nothing
depends on how fast the machine is: a window, a TTL, a back-off or a simulated run ends
when the fake clock says so.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from multicloud import providers as registry
from multicloud.lifecycle import JobState
from multicloud.models import Fleet, Job
from multicloud.planner import Policy
from multicloud.provider import Provider
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import CrashPoints, Scheduler, Settings
from multicloud.service.scheduler.lease import LeaseKeeper
from multicloud.sim import SimProvider, SimState
from multicloud.store import Holder, Store
from multicloud.testing.clock import FakeClock

__all__ = [
    "T0",
    "SchedulerHarness",
    "quick_settings",
    "run_until",
    "sim_fleet",
    "sim_offer",
]

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
"""The wall time at the fake clock's zero."""


def sim_offer(region: str, price: float, capacity: int | None = 4, **extra: Any) -> dict[str, Any]:
    """An inline offer of a simulated cloud: one 8×H100 node type.

    Args:
        region: Region.
        price: On-demand price per node-hour.
        capacity: Nodes (None: unlimited).
        **extra: Further offer fields (``spot_price``, ``zone``, ``accelerator``, ...).

    Returns:
        The offer document.
    """
    return {
        "region": region,
        "instance_type": "h100x8",
        "accelerator": "H100",
        "count": 8,
        "price": price,
        "capacity": capacity,
        **extra,
    }


def sim_fleet(time_scale: float = 0.05, **providers: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet document of simulated clouds.

    Args:
        time_scale: Seconds per simulated hour.
        **providers: Fleet provider name → its settings (``offers``, ``faults``, ...).

    Returns:
        The fleet document.
    """
    return {
        "providers": {name: {"adapter": "sim", **cfg} for name, cfg in providers.items()},
        "time_scale": time_scale,
    }


def quick_settings(**overrides: Any) -> Settings:
    """Return scheduler settings for tests: every step on every tick, short back-offs.

    Args:
        **overrides: Settings fields to change (e.g. a long ``blocked_ttl_s``).

    Returns:
        The settings.
    """
    values: dict[str, Any] = {
        "tick_s": 0.0,
        "status_interval_s": 0.0,
        "replan_interval_s": 0.05,
        "sweep_interval_s": 0.1,
        "retry_backoff_s": 0.01,
        "blocked_ttl_s": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


def run_until(
    scheduler: Scheduler,
    done: Callable[[], bool],
    *,
    timeout: float = 10.0,
    pause: float = 0.002,
) -> None:
    """Tick a scheduler on the real clock until ``done()`` holds (adapters on real time).

    Args:
        scheduler: The scheduler to drive.
        done: The condition to reach.
        timeout: Seconds before giving up.
        pause: Sleep between ticks (adapter calls run on threads meanwhile).

    Raises:
        AssertionError: On timeout, with the scheduler's stats.
    """
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; stats: {scheduler.stats()}"
        scheduler.tick()
        time.sleep(pause)


class SchedulerHarness:
    """A scheduler over a store and a fleet's adapters, on a fake clock, stepped by hand.

    Simulated clouds of the fleet are built on the harness's clock and one shared
    :class:`SimState` (pass ``state`` to share it with another harness, as after a
    restart); other adapters are built from the fleet as they are.

    Args:
        fleet: The fleet (a model or its document).
        store: The store (the harness closes it unless it was given).
        store_url: Where to open one when ``store`` is not given.
        wrap: Called with each fleet provider name and adapter; returns what the
            scheduler uses instead (a recording or failing wrapper).
        settings: Scheduler settings (default: :func:`quick_settings`).
        policy: Planner settings.
        state: Shared simulated-cloud state.
        crash: Crash points.
        clock: The fake clock (a new one at 0 by default).
        step_s: Fake seconds each step moves the clock on.
        settle_s: Real seconds a step waits for the calls it started.
        holder: Take the store's lease as this holder first, and fence every write with
            it (None: no lease, as for a lone scheduler).

    Raises:
        LeaseHeldError: ``holder`` is given and another live scheduler holds the lease.
    """

    def __init__(
        self,
        fleet: Fleet | Mapping[str, Any],
        *,
        store: Store | None = None,
        store_url: str | None = None,
        wrap: Callable[[str, Provider], Provider] | None = None,
        settings: Settings | None = None,
        policy: Policy | None = None,
        state: SimState | None = None,
        crash: CrashPoints | None = None,
        clock: FakeClock | None = None,
        step_s: float = 0.01,
        settle_s: float = 5.0,
        holder: Holder | None = None,
    ) -> None:
        self.fleet = fleet if isinstance(fleet, Fleet) else Fleet.model_validate(fleet)
        self.clock = clock if clock is not None else FakeClock()
        self.state = state if state is not None else SimState()
        self.step_s = step_s
        self.settle_s = settle_s
        self.sims: dict[str, SimProvider] = {}
        self.providers: dict[str, Provider] = {}
        for name in self.fleet.providers:
            if self.fleet.adapter_of(name) == "sim":
                built = registry.from_fleet(self.fleet, name, state=self.state, clock=self.clock)
                assert isinstance(built, SimProvider)
                self.sims[name] = built
            else:
                built = registry.from_fleet(self.fleet, name)
            self.providers[name] = wrap(name, built) if wrap else built
        if store is None and store_url is None:
            raise ValueError("give the harness a store or a store_url")
        self._owns_store = store is None
        self.store = store if store is not None else Store.open(str(store_url))
        self.effects = InlineEffects(self.providers)
        settings = settings or quick_settings()
        self.lease: LeaseKeeper | None = None
        if holder is not None:
            self.lease = LeaseKeeper(self.store, holder, settings, self.clock)
            self.lease.acquire(own=False)
        self.scheduler = Scheduler(
            self.store,
            self.fleet,
            self.effects,
            settings=settings,
            policy=policy,
            crash=crash,
            clock=self.clock,
            wall=self.wall,
            lease=self.lease,
        )

    @classmethod
    def in_dir(
        cls, tmp_path: Path, fleet: Fleet | Mapping[str, Any], **kwargs: Any
    ) -> SchedulerHarness:
        """Build a harness over a fresh SQLite store in ``tmp_path`` (or the given store)."""
        if "store" not in kwargs:
            kwargs["store_url"] = f"sqlite:///{tmp_path / 'store.db'}"
        return cls(fleet, **kwargs)

    def wall(self) -> datetime:
        """The wall time the fake clock stands for."""
        return T0 + timedelta(seconds=self.clock())

    def submit(self, *jobs: Job) -> list[str]:
        """Submit jobs in one batch; return their ids."""
        return [job_id for job_id, _ in self.scheduler.submit([(j, None) for j in jobs])]

    def step(self) -> None:
        """One tick, then the calls it started finish, then the clock moves on."""
        self.scheduler.tick()
        pending = self.scheduler.outstanding()
        if pending:
            cf.wait(pending, timeout=self.settle_s)
        self.clock.advance(self.step_s)

    def run_until(self, done: Callable[[], bool], *, steps: int = 5_000) -> int:
        """Step until ``done()`` holds.

        Args:
            done: The condition.
            steps: Steps before the test fails.

        Returns:
            The steps taken.

        Raises:
            AssertionError: If ``done()`` never held, with the scheduler's stats.
        """
        for taken in range(steps):
            if done():
                return taken
            self.step()
        raise AssertionError(f"not done after {steps} steps; stats: {self.scheduler.stats()}")

    def steps(self, n: int) -> None:
        """Step ``n`` times."""
        for _ in range(n):
            self.step()

    def state_of(self, job_id: str) -> JobState:
        """A job's state in the store."""
        return self.store.get(job_id).state

    def all_final(self, ids: list[str]) -> Callable[[], bool]:
        """A condition: every one of ``ids`` is finished."""
        return lambda: all(self.state_of(i).is_terminal for i in ids)

    def events(self, job_id: str) -> list[str]:
        """The states a job went through, in order."""
        return [e.to_state.value for e in self.store.events(job_id)]

    def close(self) -> None:
        """Stop the scheduler's threads and the adapters' pools; close an owned store."""
        self.scheduler.close()
        self.effects.close()
        if self._owns_store:
            self.store.close()
