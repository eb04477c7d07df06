"""The scheduler actor comes up through a store that drops its connections while it starts.

Ray restarts a crashed scheduler actor (``max_restarts=-1``) but never one whose
constructor raised: a store connection ended while the restarted actor opened the store,
took its lease or read its index back left the service without a scheduler for good (the
chaos soak's ``actor_kill`` followed by ``store_connection_drop``, issue 13). Each case
makes one store call of the start fail the way a terminated PostgreSQL connection does; the
actor must still come up and become the active scheduler (``docs/architecture.md``, "One
scheduler per store").

The actor's body runs here without Ray: only its runtime context (who it is) is stood in.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from multicloud.models import Fleet
from multicloud.service.config import ServiceConfig
from multicloud.store import Holder, Store
from multicloud.store.lease import StoreLease
from multicloud.testing.builders import job, one_offer_fleet_doc

ray = pytest.importorskip("ray")

FLEET = Fleet.model_validate(one_offer_fleet_doc(time_scale=0.05))
SETTINGS = {"lease_ttl_s": 2.0, "lease_renew_s": 0.2, "lease_poll_s": 0.05}
OWNER = "test-host:/home#ns"


class _Context:
    """What the actor reads of Ray's runtime context."""

    gcs_address = "127.0.0.1:1"

    def get_actor_id(self) -> str:
        return "actor-under-test"


def _dropped() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when PostgreSQL ended the connection under a query."""
    return sa.exc.OperationalError(
        "SELECT 1", {}, Exception("server closed the connection unexpectedly")
    )


def _fail_call(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, nth: int = 1) -> None:
    """Make the ``nth`` call of ``owner.name`` (only that one) raise a dropped connection."""
    real: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise _dropped()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)


# (case, the store calls whose first call fails)
CASES: list[tuple[str, list[tuple[type, str]]]] = [
    ("opening the store", [(Store, "open")]),
    ("reading the install id", [(Store, "install_id")]),
    ("taking the lease", [(StoreLease, "acquire")]),
    ("reading the index back", [(Store, "active_jobs")]),
    ("reading the index back, then the release", [(Store, "active_jobs"), (StoreLease, "release")]),
]


def _until_active(actor: Any, case: str) -> float:
    """Wait until the actor says it is the active scheduler; return the test's deadline."""
    deadline = time.monotonic() + 20.0
    while actor.ping()["role"] != "active":
        assert time.monotonic() < deadline, f"{case}: the actor never became active"
        time.sleep(0.05)
    return deadline


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceConfig]:
    monkeypatch.setattr(ray, "get_runtime_context", _Context)
    yield ServiceConfig.build(
        FLEET,
        store_url=f"sqlite:///{tmp_path / 'store.db'}",
        sim_state=str(tmp_path / "sim.jsonl"),
        local_logs=str(tmp_path / "logs"),
        settings=SETTINGS,
    )
    gc.unfreeze()  # the actor freezes what exists at its start; a test process moves on


@pytest.mark.parametrize(("case", "failing"), CASES, ids=[c for c, _ in CASES])
def test_the_actor_becomes_active_after_a_dropped_connection_at_start(
    config: ServiceConfig,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    failing: list[tuple[type, str]],
) -> None:
    from multicloud.service.actor import SchedulerActor

    for owner, name in failing:
        _fail_call(monkeypatch, owner, name)
    actor = SchedulerActor(config.model_dump_json(), {"owner": OWNER})
    try:
        deadline = _until_active(actor, case)
        assert actor.lease().role == "active"
        # It schedules: a job submitted now runs to its end.
        [job_id] = actor.submit([job("after-the-drop").model_dump(mode="json")])
        while actor.states([job_id])[job_id] != "succeeded":
            assert time.monotonic() < deadline, f"{case}: {actor.states([job_id])}"
            time.sleep(0.05)
    finally:
        actor.shutdown()


def test_a_standby_takes_over_after_a_dropped_connection_while_it_waits(
    config: ServiceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multicloud.service.actor import SchedulerActor

    # Another installation holds the lease for one more second: the actor starts as a
    # standby, and its first look from the cycle's thread meets a dropped connection.
    with Store.open(config.store_url) as store:
        store.lease.acquire(Holder(owner="other-host:/home#ns"), ttl=1.0)
    _fail_call(monkeypatch, StoreLease, "acquire", nth=2)
    actor = SchedulerActor(config.model_dump_json(), {"owner": OWNER})
    try:
        assert actor.ping()["role"] == "standby"
        _until_active(actor, "a standby")
        assert actor.lease().lease.holder.owner == OWNER
    finally:
        actor.shutdown()
