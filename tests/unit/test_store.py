"""Tests of the durable store, each run against SQLite and PostgreSQL.

PostgreSQL is expected on 127.0.0.1:5432 (user ``postgres``, trust auth; override with
``MULTICLOUD_TEST_POSTGRES``). Each module run creates its own database and drops it at the
end. Without PostgreSQL the PostgreSQL half is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from multicloud.models import Job
from multicloud.planner.types import Assignment, AuditEntry
from multicloud.provider import Handle, MarketKind, Place, request_id
from multicloud.store import (
    SCHEMA_VERSION,
    TERMINAL_STATES,
    TRANSITIONS,
    AttemptEndedError,
    AttemptNotFoundError,
    Decision,
    IdempotencyConflictError,
    InvalidTransitionError,
    JobNotFoundError,
    JobState,
    NewAttempt,
    SchemaVersionError,
    Store,
    StoreError,
    Transition,
    engine_url,
)
from multicloud.store.engine import Database
from multicloud.testing.builders import job, offer

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
S = JobState


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sqlite_url(tmp_path: Any) -> str:
    # A directory that does not exist yet: open() must create it.
    return f"sqlite:///{tmp_path}/state/dir/store.db"


def _drop_schema(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A store URL on a database without any schema, one per backend."""
    if backend == "sqlite":
        yield _sqlite_url(tmp_path)
        return
    database: str = request.getfixturevalue("pg_database")
    _drop_schema(database)
    try:
        yield database
    finally:
        # Leave no odd schema (say, from the future) to the tests sharing the database.
        _drop_schema(database)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A store URL on a database without rows (with or without the schema), per backend."""
    if backend == "sqlite":
        return _sqlite_url(tmp_path)
    database: str = request.getfixturevalue("pg_database")
    # Migrating costs ~100 ms on PostgreSQL (DDL commits); emptying the tables a few ms.
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('public.jobs') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            with conn.transaction():
                for table in ("events", "audit", "decisions", "attempts", "jobs"):
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
    return database


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store.open(url) as opened:
        yield opened


def raw_rows(url: str, table: str) -> list[dict[str, Any]]:
    """Read a table around the store, as a test of what is really on disk."""
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM {table}"))
            return [dict(row) for row in result.mappings()]
    finally:
        engine.dispose()


def path_to(target: JobState) -> list[JobState]:
    """Shortest walk of the lifecycle from PENDING to ``target`` (PENDING excluded)."""
    previous: dict[JobState, JobState | None] = {S.PENDING: None}
    queue = deque([S.PENDING])
    while queue:
        state = queue.popleft()
        for nxt in sorted(TRANSITIONS[state], key=lambda s: s.value):
            if nxt not in previous:
                previous[nxt] = state
                queue.append(nxt)
    walk: list[JobState] = []
    node: JobState | None = target
    while node is not None and node is not S.PENDING:
        walk.append(node)
        node = previous[node]
    return walk[::-1]


def submit(
    store: Store, spec: Job, *, now: datetime, client_key: str | None = None
) -> tuple[str, bool]:
    """One job through the batch call."""
    return store.submit_many([(spec, client_key)], now=now)[0]


def move(
    store: Store,
    job_id: str,
    to: JobState,
    *,
    reason: str,
    now: datetime,
    expect: JobState | Iterable[JobState] | None = None,
) -> JobState:
    """One lifecycle move through the batch call."""
    return store.transition_many([Transition(job_id, to, reason, expect)], now=now)[0]


def submitted_in(store: Store, state: JobState, name: str = "j") -> str:
    job_id, _ = submit(store, job(name), now=T0)
    for i, step in enumerate(path_to(state), start=1):
        move(store, job_id, step, reason="setup", now=at(i))
    return job_id


PLACE = Place(
    offer(instance_type="p5.48xlarge", spot_price=30.75, catalog_version="cat-7"),
    2,
    MarketKind.SPOT,
    61.5,
)


def record(store: Store, job_id: str, *, attempt: int = 1, rid: str, when: datetime) -> list[Any]:
    return store.begin_attempts([NewAttempt(job_id, attempt, rid, PLACE)], now=when)


def launch(store: Store, job_id: str, *, attempt: int = 1, region: str = "us-east-1") -> str:
    rid = request_id(job_id, attempt, region)
    record(store, job_id, attempt=attempt, rid=rid, when=at(attempt))
    return rid


def handle(rid: str, handle_id: str = "i-0abc") -> Handle:
    return Handle(
        "aws",
        handle_id,
        rid,
        "us-east-1",
        None,
        "p5.48xlarge",
        2,
        MarketKind.SPOT,
        "j",
        (("asg", "mc-1"),),
    )


# --------------------------------------------------------------------------- URLs, schema


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:pw@db.example:5432/mc", "postgresql+psycopg"),
        ("postgres://u@db.example/mc", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/mc", "postgresql+psycopg"),
        ("sqlite:///var/lib/multicloud/store.db", "sqlite"),
        ("sqlite://", "sqlite"),
    ],
)
def test_engine_url_picks_the_driver(given: str, driver: str) -> None:
    assert engine_url(given).drivername == driver


@pytest.mark.parametrize("given", ["mysql://u@h/db", "not a url", "redis://localhost"])
def test_engine_url_rejects_other_databases(given: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        engine_url(given)


def test_schema_version_recorded_and_reopen_is_a_no_op(fresh_url: str) -> None:
    with Store.open(fresh_url) as first:
        assert first.schema_version() == SCHEMA_VERSION
        job_id, _ = submit(first, job("keep"), now=T0)
    versions = raw_rows(fresh_url, "schema_version")
    assert [v["version"] for v in versions] == list(range(1, SCHEMA_VERSION + 1))

    with Store.open(fresh_url) as again:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.get(job_id).name == "keep"
    assert raw_rows(fresh_url, "schema_version") == versions


def test_concurrent_opens_migrate_once(fresh_url: str) -> None:
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            with Store.open(fresh_url) as opened:
                opened.schema_version()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(raw_rows(fresh_url, "schema_version")) == SCHEMA_VERSION


def test_newer_schema_is_refused(fresh_url: str) -> None:
    Store.open(fresh_url).close()
    engine = sa.create_engine(engine_url(fresh_url))
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO schema_version (version, description) VALUES (:v, 'future')"),
            {"v": SCHEMA_VERSION + 1},
        )
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="upgrade multicloud"):
        Store.open(fresh_url)


def test_migration_3_gives_old_attempts_their_place_from_what_is_known(fresh_url: str) -> None:
    from multicloud.store.migrations import MIGRATIONS, VERSIONS

    if fresh_url.startswith("sqlite"):
        Store.open(fresh_url).close()  # creates the file and its directory
        raw = sa.create_engine(engine_url(fresh_url))
        with raw.begin() as conn:
            for table in ("lease", "events", "audit", "decisions", "attempts", "meta", "jobs"):
                conn.execute(sa.text(f"DROP TABLE {table}"))
            conn.execute(sa.text("DELETE FROM schema_version"))
        raw.dispose()
    engine = sa.create_engine(engine_url(fresh_url))
    either = job("either", accelerator=["H100", "H200"], count=8).model_dump(mode="json")
    single = job("single", accelerator="A100", count=4).model_dump(mode="json")
    with engine.begin() as conn:
        VERSIONS.create(conn, checkfirst=True)
        for migration in MIGRATIONS[:2]:  # a store written by multicloud before version 3
            migration.apply(conn)
            conn.execute(sa.insert(VERSIONS).values(version=migration.version, description="x"))
        for i, (name, spec) in enumerate(
            (("job-00000000000a", either), ("job-00000000000b", single))
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, name, priority, spec, spec_hash, state, "
                    "submitted_at, updated_at) VALUES (:id, :n, 0, :spec, 'h', 'running', :t, :t)"
                ),
                {"id": name, "n": spec["name"], "spec": json.dumps(spec), "t": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO attempts (job_id, attempt, request_id, provider, region, "
                    "instance_type, nodes, market, price_per_hour, started_at) VALUES "
                    "(:id, 1, :rid, 'aws', 'us-east-1', :it, 2, :m, 20.0, :t)"
                ),
                {
                    "id": name,
                    "rid": f"r{i}",
                    "it": f"type{i}",
                    "m": ("spot", "on-demand")[i],
                    "t": T0,
                },
            )
        placement = {
            "provider": "aws",
            "region": "us-east-1",
            "zone": None,
            "instance_type": "type0",
            "accelerator": "H200",
            "nodes": 2,
        }
        conn.execute(
            sa.text(
                "INSERT INTO decisions (job_id, at, placement, reasons, catalog_version) "
                "VALUES ('job-00000000000a', :t, :p, '[]', 'cat-9')"
            ),
            {"t": T0, "p": json.dumps([placement])},
        )
    engine.dispose()

    with Store.open(fresh_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        (a,) = store.get("job-00000000000a").attempts
        (b,) = store.get("job-00000000000b").attempts
    # From the job's decision: the accelerator it was placed on and the catalog version.
    assert (a.place.offer.accelerator, a.place.offer.count, a.place.offer.catalog_version) == (
        "H200",
        8,
        "cat-9",
    )
    assert (a.market, a.place.offer.spot_price, a.place.offer.price) == (
        MarketKind.SPOT,
        10.0,
        None,
    )
    # No decision: the spec's only accelerator; no catalog version is recorded anywhere.
    assert (b.place.offer.accelerator, b.place.offer.count, b.place.offer.catalog_version) == (
        "A100",
        4,
        "",
    )
    assert (b.place.price_per_hour, b.place.offer.price, b.nodes) == (20.0, 10.0, 2)


def test_sqlite_file_uses_wal(tmp_path: Any) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    Store.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_wal_starts_again_under_a_steady_stream_of_commits(tmp_path: Any) -> None:
    # A checkpoint that only ever runs beside the writers never copies the last frames,
    # so the WAL never starts again and grows for as long as the commits keep coming.
    path = tmp_path / "store.db"
    db = Database(f"sqlite:///{path}")
    with db.write(fenced=False) as conn:
        conn.exec_driver_sql("CREATE TABLE t (x BLOB)")

    def commit() -> None:
        with db.write(fenced=False) as conn:
            for _ in range(10):
                conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(4000))")

    # Frames one commit writes, measured alone: the WAL starts again after a full
    # checkpoint, so the next checkpoint sees exactly this commit's frames.
    db.checkpoint()
    commit()
    one = db.checkpoint()
    assert one is not None and one[1] > 0
    per_commit = one[1]
    stop = threading.Event()
    commits = 0

    def write() -> None:
        nonlocal commits
        while not stop.is_set():
            commit()
            commits += 1

    writer = threading.Thread(target=write)
    writer.start()
    answers = []
    ends = [0]  # commits counted when each checkpoint returned
    try:
        for _ in range(10):
            before = commits
            while commits < before + 5:
                stop.wait(0.001)
            answers.append(db.checkpoint())
            ends.append(commits)
    finally:
        stop.set()
        writer.join()
    db.dispose()
    assert all(a is not None and a[0] == 0 and a[1] == a[2] for a in answers), answers
    # Each round's frames are those of the commits since the last checkpoint, however many
    # the writer got in (its counter is read just after a commit or a checkpoint: two more
    # on each side; and a commit's frames vary by a few as the table's b-tree grows: up to
    # twice those of the commit measured alone). A WAL that never started again would hold
    # every commit so far, which by the third round is already more than that.
    frames = [a[1] for a in answers if a is not None]
    since = [ends[i + 1] - ends[i] + 4 for i in range(len(frames))]
    over = [(f, n) for f, n in zip(frames, since, strict=True) if f > 2 * per_commit * n]
    assert not over, (per_commit, over, frames, since)


# --------------------------------------------------------------------------- jobs


def test_submit_get_and_list_in_submission_order(store: Store) -> None:
    spec = job("train", priority=7, team="research", nodes=2)
    first, created = submit(store, spec, now=T0)
    second, _ = submit(store, job("serve", priority=100), now=at(1))
    third, _ = submit(store, job("later", priority=-3), now=at(2))

    assert created and first.startswith("job-") and len(first) == len("job-") + 12
    got = store.get(first)
    assert (got.id, got.name, got.state, got.priority, got.team) == (
        first,
        "train",
        S.PENDING,
        7,
        "research",
    )
    assert got.job == spec
    assert got.submitted_at == T0 == got.updated_at
    assert got.attempts == ()

    move(store, second, S.PLACED, reason="planned", now=at(3))
    assert [r.id for r in store.list_jobs()] == [first, second, third]
    assert [r.id for r in store.list_jobs([S.PENDING])] == [first, third]
    assert [r.id for r in store.active_jobs()] == [first, second, third]
    assert [r.id for r in store.list_jobs([S.PLACED, S.RUNNING])] == [second]
    assert store.list_jobs([]) == []
    assert store.get(second).updated_at == at(3)


def test_unknown_job_is_reported(store: Store) -> None:
    for call in (
        lambda: store.get("job-000000000000"),
        lambda: store.events("job-000000000000"),
        lambda: store.decisions("job-000000000000"),
        lambda: move(store, "job-000000000000", S.PLACED, reason="x", now=T0),
    ):
        with pytest.raises(JobNotFoundError, match="job-000000000000"):
            call()


@pytest.mark.parametrize(
    ("first", "second", "same_job"),
    [
        pytest.param(("k1", job("a")), ("k1", job("a")), True, id="same-key-same-spec"),
        pytest.param(
            ("k1", job("a", accelerator="h100")),
            ("k1", job("a", accelerator="H100")),
            True,
            id="same-key-equal-after-validation",
        ),
        pytest.param((None, job("a")), (None, job("a")), False, id="no-key-twice"),
        pytest.param(("k1", job("a")), ("k2", job("a")), False, id="other-key-same-spec"),
    ],
)
def test_idempotent_submission(
    store: Store, first: tuple[str | None, Any], second: tuple[str | None, Any], same_job: bool
) -> None:
    id1, created1 = submit(store, first[1], now=T0, client_key=first[0])
    id2, created2 = submit(store, second[1], now=at(1), client_key=second[0])
    assert created1
    assert (id1 == id2) is same_job
    assert created2 is not same_job
    assert len(store.list_jobs()) == (1 if same_job else 2)
    # A repeated submission is not a second event either.
    assert len(store.events(id1)) == 1


def test_same_key_other_spec_is_an_error_naming_the_key(store: Store) -> None:
    job_id, _ = submit(store, job("a"), now=T0, client_key="deploy-42")
    with pytest.raises(IdempotencyConflictError, match="deploy-42") as err:
        submit(store, job("a", priority=5), now=at(1), client_key="deploy-42")
    assert job_id in str(err.value)
    assert [r.id for r in store.list_jobs()] == [job_id]


def test_only_the_spec_is_stored_never_secret_values(
    store: Store, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_value = "hf_" + uuid.uuid4().hex
    monkeypatch.setenv("HF_TOKEN", secret_value)
    spec = job(
        "secretive",
        run={"command": "python train.py", "env": {"LOG_LEVEL": "debug"}, "secrets": ["HF_TOKEN"]},
    )
    submit(store, spec, now=T0, client_key="k")

    (row,) = raw_rows(url, "jobs")
    stored = row["spec"] if isinstance(row["spec"], dict) else json.loads(row["spec"])
    assert stored == spec.model_dump(mode="json")
    assert stored["run"]["env"] == {"LOG_LEVEL": "debug"}
    assert stored["run"]["secrets"] == ["HF_TOKEN"]
    everything = repr(
        [raw_rows(url, t) for t in ("jobs", "events", "attempts", "decisions", "audit")]
    )
    assert secret_value not in everything


def test_naive_timestamps_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        submit(store, job("a"), now=datetime(2030, 1, 1))


def test_timestamps_come_back_in_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    job_id, _ = submit(store, job("a"), now=datetime(2030, 1, 1, 14, 0, tzinfo=plus_two))
    got = store.get(job_id)
    assert got.submitted_at == T0
    assert got.submitted_at.tzinfo == timezone.utc


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_table_is_complete_and_consistent() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state in JobState:
        assert state.is_terminal == (state in TERMINAL_STATES) == (not TRANSITIONS[state])
        assert state not in TRANSITIONS[state]
        # Everything is reachable, and nothing is a trap: a terminal state is always reachable.
        assert state is S.PENDING or path_to(state)
        assert state.is_terminal or TRANSITIONS[state] & {S.CANCELLED}
    assert {s.value for s in TERMINAL_STATES} == {"succeeded", "failed", "cancelled"}


ALLOWED = [
    pytest.param(src, dst, id=f"{src.value}->{dst.value}")
    for src in JobState
    for dst in sorted(TRANSITIONS[src], key=lambda s: s.value)
]


@pytest.mark.parametrize(("src", "dst"), ALLOWED)
def test_every_allowed_transition_passes(store: Store, src: JobState, dst: JobState) -> None:
    job_id = submitted_in(store, src)
    assert move(store, job_id, dst, reason=f"to {dst.value}", now=at(60)) is src
    assert store.get(job_id).state is dst
    last = store.events(job_id)[-1]
    assert (last.from_state, last.to_state, last.reason) == (src, dst, f"to {dst.value}")


FORBIDDEN = [
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.PENDING),
    (S.PLACED, S.RUNNING),
    (S.PROVISIONING, S.SUCCEEDED),
    (S.RUNNING, S.PENDING),
    (S.RUNNING, S.PROVISIONING),
    (S.PREEMPTED, S.RUNNING),
    (S.PREEMPTED, S.PLACED),
]


@pytest.mark.parametrize(
    ("src", "dst"), [pytest.param(s, d, id=f"{s.value}->{d.value}") for s, d in FORBIDDEN]
)
def test_forbidden_transitions_raise_and_change_nothing(
    store: Store, src: JobState, dst: JobState
) -> None:
    job_id = submitted_in(store, src)
    before = store.events(job_id)
    with pytest.raises(InvalidTransitionError, match=f"from {src.value} to {dst.value}"):
        move(store, job_id, dst, reason="nope", now=at(60))
    assert store.get(job_id).state is src
    assert store.events(job_id) == before


@pytest.mark.parametrize("terminal", [s for s in JobState if s.is_terminal])
def test_terminal_states_stay_terminal(store: Store, terminal: JobState) -> None:
    job_id = submitted_in(store, terminal)
    for target in JobState:
        with pytest.raises(InvalidTransitionError):
            move(store, job_id, target, reason="revive", now=at(60))
    assert store.get(job_id).state is terminal


@pytest.mark.parametrize(
    ("expect", "passes"),
    [
        (S.PENDING, False),
        ([S.PENDING, S.RUNNING], False),
        (S.PLACED, True),
        ([S.PENDING, S.PLACED], True),
        (None, True),
    ],
)
def test_transition_is_a_compare_and_set(store: Store, expect: Any, passes: bool) -> None:
    job_id = submitted_in(store, S.PLACED)
    if passes:
        move(store, job_id, S.PROVISIONING, reason="launch", now=at(9), expect=expect)
        assert store.get(job_id).state is S.PROVISIONING
    else:
        with pytest.raises(InvalidTransitionError, match="is placed, expected"):
            move(store, job_id, S.PROVISIONING, reason="launch", now=at(9), expect=expect)
        assert store.get(job_id).state is S.PLACED


def test_events_tell_the_story(store: Store) -> None:
    job_id, _ = submit(store, job("a"), now=T0)
    story = [
        (S.PLACED, "cheapest offer"),
        (S.PROVISIONING, "launching"),
        (S.PREEMPTED, "spot reclaimed"),
        (S.PENDING, "requeued after preemption"),
        (S.PLACED, "re-placed"),
        (S.PROVISIONING, "launching"),
        (S.RUNNING, "nodes up"),
        (S.SUCCEEDED, "exit 0"),
    ]
    for minute, (state, reason) in enumerate(story, start=1):
        move(store, job_id, state, reason=reason, now=at(minute))
    events = store.events(job_id)
    first = events[0]
    assert (first.job_id, first.at, first.from_state, first.to_state, first.reason) == (
        job_id,
        T0,
        None,
        S.PENDING,
        "submitted",
    )
    assert [(e.to_state, e.reason) for e in events[1:]] == story
    assert [e.from_state for e in events[1:]] == [S.PENDING] + [s for s, _ in story[:-1]]
    assert [e.at for e in events] == [at(m) for m in range(len(story) + 1)]


# --------------------------------------------------------------------------- attempts


def test_attempts_are_idempotent_by_request_id(store: Store) -> None:
    job_id = submitted_in(store, S.PLACED)
    rid = launch(store, job_id)
    # The restarted scheduler re-records the same decision: it gets the row it already had.
    (again,) = record(store, job_id, rid=rid, when=at(30))
    assert again.started_at == at(1)
    (only,) = store.get(job_id).attempts
    assert only == again
    assert (only.request_id, only.market, only.nodes, only.price_per_hour) == (
        rid,
        MarketKind.SPOT,
        2,
        61.5,
    )
    # The place comes back exactly as it went in: the planned offer, whole.
    assert only.place == PLACE and only.place.offer.catalog_version == "cat-7"


@pytest.mark.parametrize(
    ("other_job", "attempt"), [(True, 1), (False, 2)], ids=["other-job", "other-attempt"]
)
def test_a_request_id_cannot_name_two_attempts(store: Store, other_job: bool, attempt: int) -> None:
    owner = submitted_in(store, S.PLACED, "owner")
    rid = launch(store, owner)
    target = submitted_in(store, S.PLACED, "other") if other_job else owner
    with pytest.raises(IdempotencyConflictError, match=rid):
        record(store, target, attempt=attempt, rid=rid, when=at(5))


def test_attempt_for_unknown_job_is_refused(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        launch(store, "job-000000000000")


def test_attempt_handle_outcome_and_live_set(store: Store) -> None:
    a = submitted_in(store, S.PROVISIONING, "a")
    b = submitted_in(store, S.PROVISIONING, "b")
    ra = launch(store, a)
    rb1 = launch(store, b, attempt=1, region="us-west-2")
    rb2 = launch(store, b, attempt=1, region="eu-west-1")  # a second offer of one attempt
    assert [x.request_id for x in store.live_attempts()] == [ra, rb1, rb2]

    workload = handle(ra)
    store.set_attempt_handles([(ra, workload)])
    store.end_attempts([(ra, "preempted")], now=at(40))
    (ended,) = store.get(a).attempts
    assert (ended.handle, ended.outcome, ended.ended_at, ended.live) == (
        workload,
        "preempted",
        at(40),
        False,
    )
    store.end_attempts([(ra, "preempted")], now=at(50))
    assert store.get(a).attempts[0].ended_at == at(40)
    with pytest.raises(AttemptEndedError, match="preempted"):
        store.end_attempts([(ra, "succeeded")], now=at(50))
    assert [x.request_id for x in store.live_attempts()] == [rb1, rb2]
    # The handle round-trips through its own JSON form.
    assert store.get(a).attempts[0].handle == workload and workload.get("asg") == "mc-1"

    for call in (
        lambda: store.set_attempt_handles([("nope", handle("nope"))]),
        lambda: store.end_attempts([("nope", "failed")], now=at(1)),
    ):
        with pytest.raises(AttemptNotFoundError, match="nope"):
            call()


# --------------------------------------------------------------------------- decisions, audit


def test_decisions_round_trip(store: Store) -> None:
    job_id, _ = submit(store, job("a", nodes=2), now=T0)
    assignment = Assignment(
        job=job_id,
        offer=offer(zone="us-east-1a"),
        market=MarketKind.ON_DEMAND,
        nodes=2,
        replicas=1,
        node_price=10.0,
        duration_hours=3.0,
        rofr=None,
        reasons=("cheapest feasible", "commitment behind schedule"),
    )
    placement = assignment.to_dict()
    store.record_decisions(
        [Decision(job_id, [placement], list(assignment.reasons), "2030-01-01")], now=at(1)
    )
    store.record_decisions([Decision(job_id, [placement, placement], [], "v2")], now=at(2))
    got = store.decisions(job_id)
    assert [(d.job_id, d.at, d.placement, d.reasons, d.catalog_version) for d in got] == [
        (
            job_id,
            at(1),
            (placement,),
            ("cheapest feasible", "commitment behind schedule"),
            "2030-01-01",
        ),
        (job_id, at(2), (placement, placement), (), "v2"),
    ]
    with pytest.raises(JobNotFoundError):
        store.record_decisions([Decision("job-000000000000", [], [], "v")], now=at(3))


def entry(job_id: str, holder: str, answer: str, when: datetime | None) -> AuditEntry:
    return AuditEntry(
        job=job_id,
        holder=holder,
        terms={
            "accelerators": ["H100"],
            "count": 8,
            "nodes": 4,
            "regions": ["us-*"],
            "residency": [],
            "nested": {"window_s": 30.0},
        },
        outside_price_per_hour=98.3125,
        holder_price_per_hour=None if answer == "declined" else 101.5,
        answer=answer,  # type: ignore[arg-type]
        reason=f"{holder} {answer}",
        billed_price_per_hour=None if answer == "declined" else 98.3125,
        at=when,
        catalog_version="cat-7",
    )


def test_audit_round_trip_and_filters(store: Store) -> None:
    a, _ = submit(store, job("a"), now=T0)
    b, _ = submit(store, job("b"), now=T0)
    explicit = datetime(2030, 1, 1, 7, 30, tzinfo=timezone(timedelta(hours=-5)))
    entries = [
        entry(a, "coreweave", "declined", None),
        entry(a, "azure", "accepted", explicit),
        entry(b, "coreweave", "accepted", None),
    ]
    store.record_audit(entries, now=at(5))
    store.record_audit([], now=at(6))

    stamped = [
        dataclasses.replace(entries[0], at=at(5)),
        dataclasses.replace(entries[1], at=explicit.astimezone(timezone.utc)),
        dataclasses.replace(entries[2], at=at(5)),
    ]
    assert store.audit() == stamped
    assert store.audit(job_id=a) == stamped[:2]
    assert store.audit(holder="coreweave") == [stamped[0], stamped[2]]
    assert store.audit(job_id=b, holder="azure") == []


def test_audit_is_all_or_nothing(store: Store) -> None:
    a, _ = submit(store, job("a"), now=T0)
    with pytest.raises(JobNotFoundError, match="job-000000000000"):
        store.record_audit(
            [entry(a, "azure", "accepted", None), entry("job-000000000000", "x", "declined", None)],
            now=at(1),
        )
    assert store.audit() == []


# --------------------------------------------------------------------------- restart safety


def test_a_second_store_on_the_same_url_sees_writes(url: str) -> None:
    with Store.open(url) as one, Store.open(url) as two:
        job_id, _ = submit(one, job("shared"), now=T0, client_key="ck")
        assert two.get(job_id).state is S.PENDING
        assert submit(two, job("shared"), now=at(1), client_key="ck") == (job_id, False)
        move(two, job_id, S.PLACED, reason="planned by two", now=at(2))
        assert one.get(job_id).state is S.PLACED
        rid = launch(one, job_id)
        assert [x.request_id for x in two.live_attempts()] == [rid]
        with pytest.raises(InvalidTransitionError):
            move(one, job_id, S.PROVISIONING, reason="stale", now=at(3), expect=S.PENDING)


def test_everything_survives_close_and_reopen(url: str) -> None:
    with Store.open(url) as before:
        job_id, _ = submit(before, job("durable", team="ml"), now=T0, client_key="d1")
        move(before, job_id, S.PLACED, reason="planned", now=at(1))
        rid = launch(before, job_id)
        before.set_attempt_handles([(rid, handle(rid, "i-1"))])
        before.record_decisions([Decision(job_id, [{"provider": "aws"}], ["r"], "v")], now=at(1))
        before.record_audit([entry(job_id, "azure", "declined", None)], now=at(1))
        snapshot = (
            before.get(job_id),
            before.events(job_id),
            before.decisions(job_id),
            before.audit(),
        )

    with Store.open(url) as after:
        assert (
            after.get(job_id),
            after.events(job_id),
            after.decisions(job_id),
            after.audit(),
        ) == snapshot
        assert [x.request_id for x in after.live_attempts()] == [rid]
        assert submit(after, job("durable", team="ml"), now=at(9), client_key="d1") == (
            job_id,
            False,
        )


@pytest.mark.parametrize("what", ["submit", "begin_attempts"])
def test_racing_writers_with_one_key_make_one_row(url: str, what: str) -> None:
    with Store.open(url) as setup:
        job_id = submitted_in(setup, S.PLACED, "racer")
    rid = request_id(job_id, 1, "us-east-1")
    stores = [Store.open(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[object] = []

    def race(mine: Store) -> None:
        barrier.wait()
        try:
            if what == "submit":
                results.append(submit(mine, job("same"), now=T0, client_key="race")[0])
            else:
                results.append(launch(mine, job_id))
        except BaseException as exc:  # collected for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for opened in stores:
            opened.close()
    assert len(results) == len(stores)
    assert len(set(map(repr, results))) == 1, results
    assert not isinstance(results[0], BaseException)
    if what == "submit":
        assert len(raw_rows(url, "jobs")) == 2
    else:
        assert [r["request_id"] for r in raw_rows(url, "attempts")] == [rid]


# --------------------------------------------------------------------------- batches


def test_submit_many_is_one_transaction_all_or_none(store: Store) -> None:
    results = store.submit_many([(job("a"), "k-a"), (job("b"), None)], now=at(0))
    assert [created for _, created in results] == [True, True]
    assert [r.name for r in store.list_jobs()] == ["a", "b"]
    # A conflicting key anywhere in the batch: nothing of it is accepted.
    with pytest.raises(IdempotencyConflictError):
        store.submit_many([(job("c"), None), (job("other", priority=9), "k-a")], now=at(1))
    assert [r.name for r in store.list_jobs()] == ["a", "b"]
    again = store.submit_many([(job("a"), "k-a")], now=at(2))
    assert again == [(results[0][0], False)]


def test_batch_rolls_back_every_call_on_error(store: Store) -> None:
    job_id, _ = submit(store, job("a"), now=at(0))
    with pytest.raises(RuntimeError), store.batch():
        move(store, job_id, S.PLACED, reason="planned", now=at(1))
        raise RuntimeError("crash mid-cycle")
    assert store.get(job_id).state is S.PENDING
    assert [e.to_state for e in store.events(job_id)] == [S.PENDING]


def test_batches_do_not_nest(store: Store) -> None:
    with store.batch(), pytest.raises(StoreError, match="nest"), store.batch():
        pass


def test_install_id_is_created_once_and_kept(url: str) -> None:
    with Store.open(url) as first:
        made = first.install_id()
        assert made.startswith("mc-") and first.install_id() == made
    with Store.open(url) as second:
        assert second.install_id() == made


def test_state_times_gives_first_entry_into_each_state(store: Store) -> None:
    job_id, _ = submit(store, job("a"), now=at(0))
    move(store, job_id, S.PLACED, reason="planned", now=at(1))
    move(store, job_id, S.PENDING, reason="capacity", now=at(2))
    move(store, job_id, S.PLACED, reason="planned again", now=at(3))
    times = store.state_times([job_id])
    assert times[job_id] == {S.PENDING: at(0), S.PLACED: at(1)}
    assert store.state_times([]) == {}
    assert set(store.state_times()) == {job_id}
