"""The store's lease and its fencing, on SQLite and PostgreSQL (``docs/architecture.md``).

Two ``Store`` objects on one URL stand for two schedulers on one store. Expiry is made
immediate with a TTL of 0 rather than waited for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest

from multicloud.lifecycle import Transition
from multicloud.store import Holder, JobState, LeaseHeldError, LeaseLost, Store
from multicloud.testing.builders import job

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
LONG = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    database: str = request.getfixturevalue("pg_database")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return database


@pytest.fixture
def stores(url: str) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        opened.append(Store.open(url))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def holder(owner: str = "a", **fields: Any) -> Holder:
    return Holder(**{"owner": owner, "install_id": "mc-test", "host": "h", "pid": 1, **fields})


# --------------------------------------------------------------------------- acquiring


def test_a_fresh_store_has_a_free_lease_at_epoch_0(stores: Callable[[], Store]) -> None:
    lease = stores().lease.read()
    assert (lease.epoch, lease.held, lease.holder) == (0, False, None)
    assert lease.to_json()["held"] is False


@dataclass(frozen=True)
class Takeover:
    first_ttl: float  # 0: expired by the time the second one tries
    second: str  # owner key of the second scheduler
    own: bool  # the second may take it from its own owner key at once
    takes: bool


TAKEOVERS = {
    "held by another: refused": Takeover(LONG, "b", own=True, takes=False),
    "expired: taken": Takeover(0.0, "b", own=False, takes=True),
    "same installation, own allowed: taken at once": Takeover(LONG, "a", own=True, takes=True),
    "same installation, own not allowed: refused": Takeover(LONG, "a", own=False, takes=False),
}


@pytest.mark.parametrize("case", TAKEOVERS.values(), ids=TAKEOVERS.keys())
def test_who_may_take_the_lease(stores: Callable[[], Store], case: Takeover) -> None:
    first, second = stores(), stores()
    got = first.lease.acquire(holder("a"), case.first_ttl)
    assert got.epoch == 1 and got.holder == holder("a")
    if case.takes:
        taken = second.lease.acquire(holder(case.second, pid=2), LONG, own=case.own)
        assert taken.epoch == 2 and taken.held and taken.holder is not None
        assert taken.holder.pid == 2
        with pytest.raises(LeaseLost):
            first.lease.renew(LONG)
    else:
        with pytest.raises(LeaseHeldError) as refused:
            second.lease.acquire(holder(case.second, pid=2), LONG, own=case.own)
        seen = refused.value.lease
        assert seen.epoch == 1 and seen.holder == holder("a")
        assert "held by a" in str(refused.value)
        assert first.lease.renew(LONG).epoch == 1
    assert second.lease.read().epoch == (2 if case.takes else 1)


def test_renewing_pushes_the_expiry_and_keeps_the_epoch(stores: Callable[[], Store]) -> None:
    store = stores()
    first = store.lease.acquire(holder(), 0.0)
    assert not store.lease.read().held
    renewed = store.lease.renew(LONG)
    assert renewed.epoch == first.epoch and renewed.held
    assert renewed.expires_at > first.expires_at
    assert renewed.renewed_at is not None and first.started_at == renewed.started_at


def test_release_lets_another_take_it_at_once(stores: Callable[[], Store]) -> None:
    first, second = stores(), stores()
    first.lease.acquire(holder("a"), LONG)
    assert first.lease.release() is True
    assert first.lease.epoch is None
    lease = second.lease.read()
    assert not lease.held and lease.holder == holder("a")  # who held it last stays
    assert second.lease.acquire(holder("b"), LONG).epoch == 2
    assert first.lease.release() is False


# --------------------------------------------------------------------------- fencing

WRITES: dict[str, Callable[[Store, str], object]] = {
    "submit": lambda s, _: s.submit_many([(job("late"), None)], now=NOW),
    "transition": lambda s, j: s.transition_many(
        [Transition(j, JobState.CANCELLED, "late")], now=NOW
    ),
    "end attempts": lambda s, _: s.end_attempts([("nope", "failed")], now=NOW),
    "batch": lambda s, j: _in_batch(s, j),
    "check before a cloud call": lambda s, _: s.lease.check(),
    "renew": lambda s, _: s.lease.renew(LONG),
}


def _in_batch(store: Store, job_id: str) -> None:
    with store.batch():
        store.transition_many([Transition(job_id, JobState.CANCELLED, "late")], now=NOW)


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_stale_holder_s_writes_are_refused(
    stores: Callable[[], Store], write: Callable[[Store, str], object]
) -> None:
    stale, fresh = stores(), stores()
    stale.lease.acquire(holder("a"), 0.0)
    ((job_id, _),) = stale.submit_many([(job("mine"), None)], now=NOW)
    before = stale.lease.last_write_at
    assert before is not None
    taken = fresh.lease.acquire(holder("b"), LONG)
    assert before < taken.now
    with pytest.raises(LeaseLost, match="lease lost"):
        write(stale, job_id)
    # Nothing of the refused write reached the store; the stale fence stays refused.
    assert [(j.name, j.state) for j in fresh.list_jobs()] == [("mine", JobState.PENDING)]
    assert stale.lease.last_write_at == before
    with pytest.raises(LeaseLost):
        stale.lease.check()
    fresh.transition_many([Transition(job_id, JobState.CANCELLED, "by the holder")], now=NOW)
    assert fresh.get(job_id).state is JobState.CANCELLED


def test_unfenced_stores_write_freely(stores: Callable[[], Store]) -> None:
    tool = stores()
    stores().lease.acquire(holder(), LONG)
    assert tool.lease.epoch is None
    tool.lease.check()
    assert len(tool.submit_many([(job("x"), None)], now=NOW)) == 1


def test_a_takeover_waits_for_a_write_under_way(stores: Callable[[], Store]) -> None:
    holder_store, other = stores(), stores()
    holder_store.lease.acquire(holder("a"), 0.0)
    inside, done = threading.Event(), threading.Event()
    taken: list[int] = []

    def take() -> None:
        inside.wait(10)
        taken.append(other.lease.acquire(holder("b"), LONG).epoch)
        done.set()

    thread = threading.Thread(target=take)
    thread.start()
    with holder_store.batch():
        holder_store.submit_many([(job("racing"), None)], now=NOW)
        inside.set()
        # The takeover cannot pass the write in progress (SQLite's write lock, PostgreSQL's
        # share lock on the lease row): the batch commits under the old epoch first.
        assert not done.wait(0.3)
    thread.join(10)
    assert taken == [2]
    assert [j.name for j in other.list_jobs()] == ["racing"]
    with pytest.raises(LeaseLost):
        holder_store.submit_many([(job("after"), None)], now=NOW)


def test_a_holder_s_postgresql_sessions_end_when_idle_in_a_transaction(
    stores: Callable[[], Store], url: str
) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    store = stores()
    store.lease.acquire(holder(), 7.5)
    with store._db.read() as conn:
        limit = conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
    assert limit == "7500ms"
    with stores()._db.read() as conn:  # a store that holds nothing is left alone
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "0"


# --------------------------------------------------------------------------- the CLI


def test_start_against_a_held_store_says_who_and_exits_3(
    stores: Callable[[], Store], url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from multicloud.cli import app

    monkeypatch.setenv("MULTICLOUD_HOME", str(tmp_path / "home"))
    stores().lease.acquire(holder("elsewhere", pid=4242, ray_address="10.0.0.9:6379"), LONG)
    result = CliRunner().invoke(app, ["start", "--store", url])
    assert result.exit_code == 3, result.output
    assert "held by elsewhere" in result.stderr and "pid 4242" in result.stderr
    assert "10.0.0.9:6379" in result.stderr and "--standby" in result.stderr
    # Refused before anything started: no Ray cluster, no saved config.
    assert not (tmp_path / "home" / "ray" / "cluster.json").exists()
    assert not (tmp_path / "home" / "service.json").exists()
