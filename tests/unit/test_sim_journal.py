"""Tests of the simulated cloud kept in a journal shared by processes (``SimState.open``)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pickle
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import pytest

from multicloud.errors import CapacityError, ProviderError, TransientError
from multicloud.models import Fault, InlineOffer
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    OwnedWorkload,
    Provider,
    ResourceRequest,
    SupportsSweep,
    WorkloadState,
    WorkloadStatus,
    request_id,
)
from multicloud.sim import SimProvider, SimState, SimWorkload
from multicloud.testing.clock import FakeClock
from multicloud.testing.conformance import ProviderConformance

SCALE = 100.0  # wall seconds per simulated hour

H100 = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "instance_type": "h100x8",
    "accelerator": "H100",
    "count": 8,
    "price": 30.0,
    "spot_price": 12.0,
    "capacity": 4,
}
L4 = {
    "region": "eu-west-1",
    "instance_type": "l4x1",
    "accelerator": "L4",
    "count": 1,
    "price": 1.0,
}


def make_sim(
    clock: FakeClock | None = None,
    offers: Sequence[dict[str, Any]] = (H100, L4),
    faults: Sequence[dict[str, Any]] = (),
    **kwargs: Any,
) -> SimProvider:
    return SimProvider(
        fleet_name=kwargs.pop("fleet_name", "simcloud"),
        offers=[InlineOffer.model_validate(o) for o in offers],
        faults=[Fault.model_validate(f) for f in faults],
        time_scale=kwargs.pop("time_scale", SCALE),
        clock=clock or FakeClock(),
        **kwargs,
    )


def spec(job: str, **kw: Any) -> LaunchSpec:
    return LaunchSpec(
        job_id=job,
        job_name=job,
        attempt=kw.pop("attempt", 1),
        nodes=kw.pop("nodes", 1),
        market=kw.pop("market", MarketKind.ON_DEMAND),
        install_id=kw.pop("install_id", "inst-a"),
        duration_hours=kw.pop("duration_hours", 1.0),
        **kw,
    )


def pool(sim: SimProvider, instance_type: str = "h100x8") -> Offer:
    return next(o for o in sim.offers(ResourceRequest()) if o.instance_type == instance_type)


def launch(sim: SimProvider, job: str, offer: Offer | None = None, **kw: Any) -> Handle:
    offer = offer or pool(sim)
    s = spec(job, **kw)
    return sim.launch(offer, s, request_id=request_id(job, s.attempt, offer.region))


def state_of(sim: SimProvider, handle: Handle) -> WorkloadState:
    return sim.status([handle])[handle.id].state


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "clouds" / "sim.jsonl"


# -- the conformance suite -------------------------------------------------------------------


class TestJournaledSimConformance(ProviderConformance):
    """A sim on a journal passes the suite every adapter passes."""

    @pytest.fixture(autouse=True)
    def _journal_path(self, tmp_path: Path) -> None:
        self.journal = tmp_path / "sim.jsonl"

    def make_provider(self) -> Provider:
        self.clock = FakeClock()
        return make_sim(self.clock, state=SimState.open(self.journal))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class _Alternating:
    """Sends each call to the next of several providers, as the scheduler's processes do."""

    name: ClassVar[str] = "sim"
    capabilities: ClassVar[frozenset[Capability]] = SimProvider.capabilities

    def __init__(self, *providers: SimProvider) -> None:
        self._next = itertools.cycle(providers).__next__

    def check(self) -> None:
        self._next().check()

    def offers(self, request: ResourceRequest) -> list[Offer]:
        return self._next().offers(request)

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        return self._next().launch(offer, spec, request_id=request_id)

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        return self._next().status(handles)

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        self._next().terminate(handle, request_id=request_id)


class TestTwoReplicasConformance(ProviderConformance):
    """Two replicas of one journal, taking turns, behave as one cloud."""

    @pytest.fixture(autouse=True)
    def _journal_path(self, tmp_path: Path) -> None:
        self.journal = tmp_path / "sim.jsonl"

    def make_provider(self) -> Provider:
        self.clock = FakeClock()
        return _Alternating(
            make_sim(self.clock, state=SimState.open(self.journal)),
            make_sim(self.clock, state=SimState.open(self.journal)),
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


# -- several processes -----------------------------------------------------------------------


def _process_cloud(path: str, capacity: int | None, transient: int) -> SimProvider:
    offer = {**L4, "capacity": capacity}
    faults = [{"kind": "transient", "times": transient}] if transient else []
    return SimProvider(
        fleet_name="simcloud",
        offers=[InlineOffer.model_validate(offer)],
        faults=[Fault.model_validate(f) for f in faults],
        state_path=path,  # wall clock: both processes must agree on time
    )


def _launch_in_process(
    path: str, capacity: int | None, transient: int, jobs: list[str], ready: str, go: str
) -> list[tuple[str, str]]:
    """Launch ``jobs`` one by one once ``go`` exists; return each job's handle id or error."""
    sim = _process_cloud(path, capacity, transient)
    offer = sim.offers(ResourceRequest())[0]
    Path(ready).touch()
    deadline = time.monotonic() + 60.0
    while not os.path.exists(go):  # both processes start together, so their launches race
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.001)
    out = []
    for job in jobs:
        try:
            handle = sim.launch(offer, spec(job), request_id=request_id(job, 1, offer.region))
            out.append((job, handle.id))
        except ProviderError as exc:
            out.append((job, type(exc).__name__))
    return out


@pytest.fixture(scope="module")
def two_processes() -> Iterator[tuple[ProcessPoolExecutor, ProcessPoolExecutor]]:
    # One single-worker pool each, so the two launchers are surely two processes, spawned
    # once for every row of the table.
    ctx = get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as first,
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as second,
    ):
        yield first, second


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("capacity", "transient", "jobs_a", "jobs_b", "workloads", "errors", "same_outcomes"),
    [
        pytest.param(
            5, 0, _names("a", 40), _names("b", 40), 5, {"CapacityError": 75}, False,
            id="capacity-never-over-committed",
        ),
        pytest.param(
            None, 0, _names("s", 40), _names("s", 40), 40, {}, True,
            id="same-request-id-one-workload",
        ),
        pytest.param(
            10, 0, _names("s", 40), _names("s", 40)[::-1], 10, {"CapacityError": 60}, True,
            id="same-request-ids-into-a-full-pool",
        ),
        pytest.param(
            None, 3, _names("a", 40), _names("b", 40), 77, {"TransientError": 3}, False,
            id="a-fault-fires-its-times-across-processes",
        ),
    ],
)  # fmt: skip
def test_two_processes_share_one_cloud(
    two_processes: tuple[ProcessPoolExecutor, ProcessPoolExecutor],
    tmp_path: Path,
    capacity: int | None,
    transient: int,
    jobs_a: list[str],
    jobs_b: list[str],
    workloads: int,
    errors: dict[str, int],
    same_outcomes: bool,
) -> None:
    path, go = str(tmp_path / "sim.jsonl"), str(tmp_path / "go")
    futures = [
        pool_.submit(_launch_in_process, path, capacity, transient, jobs, str(tmp_path / name), go)
        for pool_, jobs, name in zip(two_processes, (jobs_a, jobs_b), ("a", "b"), strict=True)
    ]
    deadline = time.monotonic() + 60.0
    while not all((tmp_path / name).exists() for name in ("a", "b")):
        assert time.monotonic() < deadline and not any(f.done() for f in futures)
        time.sleep(0.001)
    Path(go).touch()
    outcome_a, outcome_b = (dict(f.result(timeout=60)) for f in futures)

    state = SimState.open(path)
    assert len(state.workloads) == workloads
    assert len({w.request_id for w in state.workloads.values()}) == workloads
    launched = {h for o in (outcome_a, outcome_b) for h in o.values() if h.startswith("sim-")}
    assert launched == set(state.workloads)
    if capacity is not None:
        assert sum(w.nodes for w in state.workloads.values()) == capacity
        assert pool(_process_cloud(path, capacity, transient), "l4x1").capacity == 0
    got_errors: dict[str, int] = {}
    for outcome in itertools.chain(outcome_a.values(), outcome_b.values()):
        if not outcome.startswith("sim-"):
            got_errors[outcome] = got_errors.get(outcome, 0) + 1
    assert got_errors == errors
    assert sum(state.fault_uses.values()) == transient
    if same_outcomes:
        # One key, one outcome: the same workload from both processes, or no room for it.
        assert outcome_a == outcome_b


# -- persistence -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["open", "pickle-provider", "provider-state-path"])
def test_state_survives_reopening(journal: Path, how: str) -> None:
    clock = FakeClock(1000.0)
    faults = (
        {"kind": "transient", "times": 2, "instance_type": "l4x1"},
        {"kind": "preemption", "after_hours": 0.5},
    )
    first = make_sim(clock, faults=faults, state=SimState.open(journal))
    with pytest.raises(TransientError):  # fails, yet uses the fault up: it is journaled
        launch(first, "l4", offer=pool(first, "l4x1"))
    spot = launch(first, "spot", market=MarketKind.SPOT, duration_hours=2.0)
    done = launch(first, "done", duration_hours=0.1)
    ended = launch(first, "ended")
    first.terminate(ended, request_id="t")
    clock.advance(0.2 * SCALE)
    snapshot = first.state.to_json()
    statuses = first.status([spot, done, ended])

    if how == "open":
        first.state.close()
        again = make_sim(clock, faults=faults, state=SimState.open(journal))
    elif how == "pickle-provider":
        again = pickle.loads(pickle.dumps(first))
        assert again.state is not first.state
    else:
        first.state.close()
        again = make_sim(clock, faults=faults, state_path=journal)

    assert again.state.to_json() == snapshot
    assert again.state.fault_uses == {"simcloud#0": 1, "simcloud#1": 1}
    assert again.status([spot, done, ended]) == statuses
    assert pool(again).capacity == 3
    with pytest.raises(TransientError):  # one of the two transient faults is left
        launch(again, "next", offer=pool(again, "l4x1"))
    launch(again, "next", offer=pool(again, "l4x1"))
    assert launch(again, "spot", market=MarketKind.SPOT, duration_hours=2.0) == spot


def test_in_memory_state_is_unchanged_and_not_shareable(tmp_path: Path) -> None:
    sim = make_sim()
    launch(sim, "a")
    assert sim.state.path is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match=r"SimState\.open"):
        pickle.dumps(sim.state)


def test_journal_layout(journal: Path) -> None:
    sim = make_sim(state_path=journal)
    assert sim.state.path == journal.resolve()
    assert journal.with_name("sim.jsonl.lock").exists()
    handle = launch(sim, "a")
    sim.terminate(handle, request_id="t")
    records = [json.loads(line) for line in lines(journal)]
    assert [r["op"] for r in records] == ["sim-journal", "add", "terminate"]
    assert records[1]["workload"]["id"] == handle.id


def test_one_write_per_outermost_transaction(journal: Path) -> None:
    sim = make_sim(state=SimState.open(journal))
    size = journal.stat().st_size
    with sim.state.transaction():
        launch(sim, "a")  # the launch's own transaction joins this one
        launch(sim, "b")
        assert journal.stat().st_size == size
    assert len(lines(journal)) == 3


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.add_workload(
            SimWorkload(
                id="w", provider="p", request_id="r", region="r", zone=None,
                instance_type="t", nodes=1, market="on-demand", job_id="j", pool="p",
                pooled=True, spec_digest="d", launched_at=0.0, duration_s=1.0,
            )
        ),
        lambda s: s.mark_terminated("w", 1.0),
        lambda s: s.use_fault("k"),
    ],
    ids=["add_workload", "mark_terminated", "use_fault"],
)  # fmt: skip
@pytest.mark.parametrize("journaled", [False, True])
def test_changes_need_a_transaction(journal: Path, change: Any, journaled: bool) -> None:
    state = SimState.open(journal) if journaled else SimState()
    with pytest.raises(RuntimeError, match="transaction"):
        change(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": SimState(), "state_path": "x.jsonl"}, "not both"),
        ({"time_scale": -1.0}, "time_scale"),
    ],
)
def test_constructor_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimProvider(**kwargs)


def test_default_clock_is_the_wall_clock(journal: Path) -> None:
    sim = SimProvider(offers=[InlineOffer.model_validate(L4)], state_path=journal)
    before = time.time()
    launch(sim, "a", offer=pool(sim, "l4x1"))
    (workload,) = sim.state.workloads.values()
    assert before <= workload.launched_at <= time.time()


def test_state_path_replicas_are_shared_within_a_process(journal: Path) -> None:
    first, second = make_sim(state_path=journal), make_sim(state_path=str(journal))
    assert first.state is second.state
    assert SimState.open(journal) is not first.state


def test_closed_journal_refuses_transactions(journal: Path) -> None:
    state = SimState.open(journal)
    state.close()
    with pytest.raises(ValueError, match="closed"), state.transaction():
        pass


def test_forked_child_reopens_its_descriptors(
    journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim(state=SimState.open(journal))
    launch(sim, "a")
    assert sim.state._journal is not None
    before = sim.state._journal.pid
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as a forked child sees it
    launch(sim, "b")
    assert sim.state._journal.pid == pid + 1 != before
    assert len(SimState.open(journal).workloads) == 2


# -- damaged journals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "when"),
    [
        pytest.param(b'{"op":"add","workload":{"id":"sim-x', "before-open", id="torn-record"),
        pytest.param(b'{"op":"fault","key":"k","uses":1}', "before-open", id="no-newline"),
        pytest.param(b'{"op":"terminate","id":"sim-', "while-open", id="torn-while-open"),
        pytest.param(b"\xff\xfe", "while-open", id="torn-binary"),
    ],
)
def test_torn_trailing_line_is_cut_off(journal: Path, tail: bytes, when: str) -> None:
    clock = FakeClock()
    sim = make_sim(clock, state=SimState.open(journal))
    first = launch(sim, "a")
    if when == "before-open":
        sim.state.close()
    intact = journal.read_bytes()
    with journal.open("ab") as f:  # what a writer killed mid-write leaves behind
        f.write(tail)
    if when == "before-open":
        sim = make_sim(clock, state=SimState.open(journal))
    assert state_of(sim, first) is WorkloadState.PROVISIONING
    assert journal.read_bytes() == intact
    second = launch(sim, "b")
    fresh = make_sim(clock, state=SimState.open(journal))
    assert [state_of(fresh, h) for h in (first, second)] == [WorkloadState.PROVISIONING] * 2
    assert fresh.state.fault_uses == {}


def test_torn_header_starts_afresh(journal: Path) -> None:
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b'{"format":1,"op":"sim-jou')
    sim = make_sim(state=SimState.open(journal))
    assert sim.state.workloads == {}
    launch(sim, "a")
    assert len(SimState.open(journal).workloads) == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(SimState().to_json().encode(), id="a-to_json-snapshot"),
        pytest.param(b"hello\n", id="text"),
        pytest.param(b'{"format":2,"op":"sim-journal"}\n', id="other-format"),
    ],
)
def test_other_files_are_refused_untouched(journal: Path, content: bytes) -> None:
    journal.parent.mkdir(parents=True)
    journal.write_bytes(content)
    with pytest.raises(ValueError, match="not a sim journal"):
        SimState.open(journal)
    assert journal.read_bytes() == content


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b'{"op":"explode"}',
        b'{"op":"terminate","id":"nobody","at":1.0}',
        b'{"op":"add","workload":{"id":"x"}}',
    ],
)
def test_bad_record_is_an_error(journal: Path, record: bytes) -> None:
    sim = make_sim(state=SimState.open(journal))
    launch(sim, "a")
    with journal.open("ab") as f:
        f.write(record + b"\n")
    with pytest.raises(ValueError, match="bad record at byte"):
        SimState.open(journal)
    with pytest.raises(ValueError, match="bad record"):  # and again: nothing half-read
        sim.status([])


def test_truncated_journal_is_read_again(journal: Path) -> None:
    sim = make_sim(state=SimState.open(journal))
    handle = launch(sim, "a")
    os.truncate(journal, 0)  # somebody reset the cloud
    assert state_of(sim, handle) is WorkloadState.UNKNOWN
    assert pool(sim).capacity == 4
    launch(sim, "b")
    assert len(SimState.open(journal).workloads) == 1


# -- the orphan sweep -----------------------------------------------------------------------


@pytest.mark.parametrize("journaled", [False, True])
@pytest.mark.parametrize(
    ("install_id", "expected"),
    [
        ("inst-a", [("a", 2), ("c", 1)]),
        ("inst-b", [("b", 1)]),  # the provider's own install id filled in
        ("inst-z", []),
    ],
)
def test_owned_lists_live_workloads_of_an_install(
    journal: Path, journaled: bool, install_id: str, expected: list[tuple[str, int]]
) -> None:
    clock = FakeClock()
    state = SimState.open(journal) if journaled else SimState()
    sim = make_sim(clock, install_id="inst-b", state=state)
    other = make_sim(clock, fleet_name="othercloud", state=state)
    a = launch(sim, "a", attempt=2)
    b = launch(sim, "b", install_id="default")
    c = launch(sim, "c", offer=pool(sim, "l4x1"))
    launch(sim, "finished", duration_hours=0.1)
    gone = launch(sim, "gone")
    sim.terminate(gone, request_id="t")
    launch(other, "elsewhere")  # same install, same cloud, another fleet provider
    clock.advance(0.1 * SCALE)

    assert isinstance(sim, SupportsSweep)
    got = sim.owned(install_id)
    assert [(o.job_id, o.attempt) for o in got] == expected
    by_job = {"a": a, "b": b, "c": c}
    assert got == [OwnedWorkload(by_job[job], job, attempt) for job, attempt in expected]
    assert [o.handle for o in got] == sim.list_owned(install_id)


def test_owned_attempt_of_unreadable_tag_is_zero() -> None:
    sim = make_sim()
    handle = launch(sim, "a")
    sim.state.workloads[handle.id].tags["multicloud:attempt"] = "?"
    assert sim.owned("inst-a") == [OwnedWorkload(handle, "a", 0)]


# -- the capacity index ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_held_capacity_matches_a_full_recount(journal: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    faults = ({"kind": "preemption", "after_hours": 0.3, "times": 50},)
    offers = ({**H100, "capacity": 40}, {**L4, "capacity": 40, "spot_price": 0.4})
    sim = make_sim(clock, offers=offers, faults=faults, state=SimState.open(journal))
    reader = make_sim(clock, offers=offers, faults=faults, state=SimState.open(journal))
    handles: list[Handle] = []
    for step in range(300):
        roll = rng.random()
        if roll < 0.5:
            offer = pool(sim, rng.choice(["h100x8", "l4x1"]))
            if rng.random() < 0.2:
                offer = dataclasses.replace(offer, reservation="block")
            market = rng.choice([MarketKind.ON_DEMAND, MarketKind.SPOT])
            with contextlib.suppress(CapacityError):
                handles.append(
                    launch(
                        sim,
                        f"j{step}",
                        offer=offer,
                        nodes=rng.randint(1, 3),
                        market=market,
                        duration_hours=rng.choice([0.05, 0.5, 2.0]),
                    )
                )
        elif roll < 0.65 and handles:
            sim.terminate(rng.choice(handles), request_id="t")
        elif roll < 0.95:
            clock.advance(rng.choice([0.0, 1.0, 5.0, 30.0]))
        else:
            clock.set(clock.now - rng.choice([1.0, 30.0]))  # the index must survive this
        for s in (sim, reader):
            with s.state.transaction() as state:
                now = clock()
                recount: dict[str, int] = {}
                for w in state.workloads.values():
                    if w.pooled and w.live_at(now):
                        recount[w.pool] = recount.get(w.pool, 0) + w.nodes
                assert state.held_at(now) == recount, step
