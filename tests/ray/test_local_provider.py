"""The ``local`` provider against a real (throwaway) Ray cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from multicloud import providers
from multicloud.accelerators import canonical
from multicloud.errors import CapacityError, InvalidRequestError
from multicloud.local import GONE_MESSAGE, LocalProvider
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    Provider,
    ResourceRequest,
    SupportsSweep,
    WorkloadState,
    WorkloadStatus,
    request_id,
)
from multicloud.testing.conformance import ProviderConformance

pytestmark = pytest.mark.ray

T = TypeVar("T")
Factory = Callable[..., LocalProvider]


# ---------------------------------------------------------------------------- helpers


def _ray() -> Any:
    # Imported late, never at collection: Ray reads its auth settings once, when first
    # imported, and the session fixture sets them before starting the cluster.
    import ray

    return ray


def wait_for(fn: Callable[[], T | None], *, timeout: float = 30.0, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or fn}: last value {last!r}")


def spec(command: str | tuple[str, ...] | None, **kw: Any) -> LaunchSpec:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "job_name": "local-test",
        "attempt": 1,
        "nodes": 1,
        "market": MarketKind.ON_DEMAND,
        "command": command,
    }
    fields.update(kw)
    return LaunchSpec(**fields)


def offer_of(p: LocalProvider) -> Offer:
    (offer,) = p.offers(ResourceRequest(accelerators=("CPU",)))
    return offer


def launch(p: LocalProvider, s: LaunchSpec, key: str | None = None) -> Handle:
    key = key or request_id(s.job_id, s.attempt, "local")
    return p.launch(offer_of(p), s, request_id=key)


def state_of(p: LocalProvider, h: Handle) -> WorkloadStatus:
    return p.status([h])[h.id]


def wait_state(p: LocalProvider, h: Handle, *states: WorkloadState) -> WorkloadStatus:
    def done() -> WorkloadStatus | None:
        s = state_of(p, h)
        return s if s.state in states else None

    return wait_for(done, what=f"{h.id} to reach {[s.value for s in states]}")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # Members that are only zombies waiting to be reaped count as gone.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True


def pid_of(p: LocalProvider, h: Handle) -> int:
    path = p.logs_dir / f"{h.id}.pid"
    wait_for(path.exists, what="the pid file")
    return int(json.loads(path.read_text())["pid"])


def named_in(namespace: str) -> list[str]:
    return [
        a["name"]
        for a in _ray().util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    ]


def cleanup(made: list[LocalProvider], namespace: str) -> None:
    """Leave no actor or process behind, whatever the test did."""
    for p in made:
        for sidecar in p.logs_dir.glob("*.json"):
            handle = Handle(
                provider=p.fleet_name,
                id=sidecar.stem,
                request_id="cleanup",
                region="local",
                zone=None,
                instance_type="local",
                nodes=1,
                market=MarketKind.ON_DEMAND,
                job_id="cleanup",
            )
            with contextlib.suppress(Exception):
                p.terminate(handle, request_id="cleanup")
        for pid_file in p.logs_dir.glob("*.pid"):
            with contextlib.suppress(Exception):
                os.killpg(int(json.loads(pid_file.read_text())["pid"]), signal.SIGKILL)
    for name in named_in(namespace):
        with contextlib.suppress(ValueError):
            _ray().kill(_ray().get_actor(name, namespace=namespace), no_restart=True)
    wait_for(lambda: not named_in(namespace), timeout=30, what="test actors to exit")


@pytest.fixture
def make_provider(ray_cluster: str, tmp_path: Path) -> Iterator[Factory]:
    """Build LocalProviders in a namespace of their own; kill what they launched after."""
    namespace = f"mc-test-{uuid.uuid4().hex[:8]}"
    made: list[LocalProvider] = []

    def make(**kw: Any) -> LocalProvider:
        kw.setdefault("logs_dir", tmp_path / "logs")
        kw.setdefault("namespace", namespace)
        p = LocalProvider(**kw)
        made.append(p)
        return p

    try:
        yield make
    finally:
        cleanup(made, namespace)


# ---------------------------------------------------------------------------- conformance


class TestLocalConformance(ProviderConformance):
    """The shared adapter conformance suite, against a live local cluster."""

    @pytest.fixture
    def provider(self, make_provider: Factory) -> Provider:
        # Half a CPU each, so the batch tests' three launches fit the 2-CPU test cluster.
        return make_provider(slots=4, cpus=0.5)

    def make_spec(
        self,
        offer: Offer,
        *,
        job_id: str = "conformance-job",
        attempt: int = 1,
        nodes: int = 1,
        market: MarketKind | None = None,
    ) -> LaunchSpec:
        base = super().make_spec(offer, job_id=job_id, attempt=attempt, nodes=nodes, market=market)
        # Long enough that a workload still holds its slot when the tests count capacity.
        return LaunchSpec(**{**_fields(base), "command": "sleep 30"})


def _fields(s: LaunchSpec) -> dict[str, Any]:
    return {name: getattr(s, name) for name in LaunchSpec.__dataclass_fields__}


# ---------------------------------------------------------------------------- offers


def test_cpu_is_an_accelerator() -> None:
    assert canonical("cpu") == "CPU"


def test_registry_builds_it(tmp_path: Path) -> None:
    p = providers.load("local", fleet_name="mine", logs_dir=tmp_path)
    assert isinstance(p, LocalProvider)
    assert isinstance(p, SupportsSweep)


def test_fleet_entry_builds_it(tmp_path: Path) -> None:
    from multicloud.specs import parse_fleet

    fleet = parse_fleet(
        f"providers:\n  box: {{adapter: local, options: {{slots: 3, cpus: 0.5, "
        f"logs_dir: {tmp_path}}}}}\n"
    )
    p = providers.from_fleet(fleet, "box")
    assert isinstance(p, LocalProvider)
    assert (p.fleet_name, p.slots, p.cpus) == ("box", 3, 0.5)


def test_offer_shape_and_filters(make_provider: Factory) -> None:
    p = make_provider(fleet_name="box", slots=3, price=0.25)
    offer = offer_of(p)
    assert (offer.provider, offer.region, offer.zone, offer.instance_type) == (
        "box",
        "local",
        None,
        "local",
    )
    assert (offer.accelerator, offer.count, offer.price, offer.spot_price) == ("CPU", 1, 0.25, None)
    assert offer.capacity == 3
    assert offer.jurisdiction is None
    assert p.offers(ResourceRequest()) == [offer]
    assert p.offers(ResourceRequest(accelerators=("H100",))) == []
    assert p.offers(ResourceRequest(count=2)) == []
    assert p.offers(ResourceRequest(regions=("us-*",))) == []
    assert p.offers(ResourceRequest(regions=("loc*",))) == [offer]
    assert make_provider(regions=("eu-*",)).offers(ResourceRequest()) == []


def test_capacity_drops_while_a_workload_runs(make_provider: Factory) -> None:
    p = make_provider(slots=2)
    assert offer_of(p).capacity == 2
    h = launch(p, spec("sleep 60"))
    assert offer_of(p).capacity == 1
    wait_state(p, h, WorkloadState.RUNNING)
    assert offer_of(p).capacity == 1
    p.terminate(h, request_id="t")
    assert offer_of(p).capacity == 2


def test_launch_beyond_the_slots_is_a_capacity_error(make_provider: Factory) -> None:
    p = make_provider(slots=1)
    launch(p, spec("sleep 60", job_id="a"))
    assert offer_of(p).capacity == 0
    with pytest.raises(CapacityError) as info:
        launch(p, spec("sleep 60", job_id="b"))
    assert info.value.scope == "local/local"


# ---------------------------------------------------------------------------- runs


def test_success_with_logs_and_the_cpus_come_back(make_provider: Factory) -> None:
    p = make_provider()
    h = launch(p, spec("echo hello-from-local; echo to-stderr >&2"))
    assert (h.provider, h.region, h.instance_type, h.nodes) == ("local", "local", "local", 1)
    status = wait_state(p, h, WorkloadState.SUCCEEDED, WorkloadState.FAILED)
    assert status == WorkloadStatus(WorkloadState.SUCCEEDED, "exited with code 0", exit_code=0)
    out = p.logs(h)
    assert "hello-from-local" in out and "to-stderr" in out
    # A finished workload's actor goes away, so it holds no CPUs.
    wait_for(lambda: not named_in(p.namespace), what="the finished actor to exit")
    total = _ray().cluster_resources()["CPU"]
    wait_for(lambda: _ray().available_resources().get("CPU") == total, what="CPUs to be free")
    assert offer_of(p).capacity == p.slots


def test_failure_reports_the_exit_code(make_provider: Factory) -> None:
    p = make_provider()
    h = launch(p, spec("echo about to fail; exit 3"))
    status = wait_state(p, h, WorkloadState.SUCCEEDED, WorkloadState.FAILED)
    assert status.state is WorkloadState.FAILED
    assert status.exit_code == 3
    assert "3" in status.message
    assert "about to fail" in p.logs(h)


def test_argv_command_and_unrunnable_program(make_provider: Factory) -> None:
    p = make_provider()
    ok = launch(p, spec(("/bin/echo", "two words", "$HOME")))
    bad = launch(p, spec(("/no/such/program",), job_id="job-2"))
    assert wait_state(p, ok, WorkloadState.SUCCEEDED).exit_code == 0
    assert p.logs(ok).strip() == "two words $HOME"  # no shell in between
    failed = wait_state(p, bad, WorkloadState.FAILED)
    assert failed.exit_code == 127
    assert "/no/such/program" in p.logs(bad)


def test_launch_is_idempotent_one_run(make_provider: Factory, tmp_path: Path) -> None:
    p = make_provider()
    marks = tmp_path / "runs.txt"
    s = spec(f"echo run >> {marks}")
    first = launch(p, s, "key-1")
    assert launch(p, s, "key-1") == first
    wait_state(p, first, WorkloadState.SUCCEEDED)
    # Once it has finished, the same key still names the same, finished workload.
    assert launch(p, s, "key-1") == first
    time.sleep(1.0)
    assert marks.read_text() == "run\n"
    assert state_of(p, first).state is WorkloadState.SUCCEEDED
    with pytest.raises(InvalidRequestError, match="already used"):
        launch(p, spec("echo other"), "key-1")


def test_relaunch_after_a_crash_before_the_actor_existed(
    make_provider: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multicloud.local.runner as runner

    p = make_provider()
    s = spec("echo survived")

    def crash() -> Any:
        raise RuntimeError("launcher killed here")

    # The launcher dies after writing the sidecar, before creating the actor.
    with monkeypatch.context() as m:
        m.setattr(runner, "runner_actor_class", crash)
        with pytest.raises(RuntimeError):
            launch(p, s, "key-crash")
    assert (p.logs_dir / f"{p._handle_id('key-crash')}.json").exists()
    h = launch(p, s, "key-crash")
    assert wait_state(p, h, WorkloadState.SUCCEEDED).exit_code == 0
    assert "survived" in p.logs(h)


def test_a_recreated_actor_never_runs_the_command_again(
    make_provider: Factory, tmp_path: Path
) -> None:
    import multicloud.local.runner as runner

    p = make_provider()
    marks = tmp_path / "runs.txt"
    h = launch(p, spec(f"echo run >> {marks}"))
    wait_state(p, h, WorkloadState.SUCCEEDED)
    wait_for(lambda: not named_in(p.namespace), what="the finished actor to exit")
    # What a launch racing the end of the first actor could do: create the actor again.
    runner.runner_actor_class().options(
        name=h.id, namespace=p.namespace, lifetime="detached", num_cpus=0.5
    ).remote(h.id, str(p.logs_dir), ["/bin/sh", "-c", f"echo run >> {marks}"], {})
    wait_for(lambda: h.id in named_in(p.namespace) or None, timeout=5, what="the duplicate")
    wait_for(lambda: not named_in(p.namespace), what="the duplicate to exit by itself")
    assert marks.read_text() == "run\n"
    assert state_of(p, h).state is WorkloadState.SUCCEEDED


def test_terminate_kills_the_process_group(make_provider: Factory) -> None:
    p = make_provider()
    # A background child as well, to see the whole group go.
    h = launch(p, spec("sleep 60 & sleep 60; wait"))
    wait_state(p, h, WorkloadState.RUNNING)
    pgid = pid_of(p, h)
    assert not group_gone(pgid)
    p.terminate(h, request_id="t1")
    assert state_of(p, h).state is WorkloadState.TERMINATED
    wait_for(lambda: group_gone(pgid), what="the process group to die")
    wait_for(lambda: not named_in(p.namespace), what="the actor to exit")
    p.terminate(h, request_id="t1")  # idempotent
    assert state_of(p, h).state is WorkloadState.TERMINATED
    # Terminating a finished workload leaves its final state alone.
    done = launch(p, spec("true", job_id="job-2"))
    wait_state(p, done, WorkloadState.SUCCEEDED)
    p.terminate(done, request_id="t2")
    assert state_of(p, done).state is WorkloadState.SUCCEEDED


def test_terminate_before_the_command_starts(make_provider: Factory) -> None:
    # More CPUs than are free: the actor waits, then must never run the command.
    p = make_provider(cpus=2.0)
    blocker = launch(p, spec("sleep 60", job_id="blocker"))
    wait_state(p, blocker, WorkloadState.RUNNING)
    queued = launch(p, spec("echo should-not-run", job_id="queued"))
    assert state_of(p, queued).state is WorkloadState.PROVISIONING
    p.terminate(queued, request_id="t")
    p.terminate(blocker, request_id="t")
    assert state_of(p, queued).state is WorkloadState.TERMINATED
    time.sleep(1.0)
    assert "should-not-run" not in p.logs(queued)


def test_env_and_secrets(make_provider: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    monkeypatch.setenv("MC_TEST_SECRET", secret)
    p = make_provider()
    s = spec(
        'echo "greeting=$GREETING secret=$MC_TEST_SECRET job=$MULTICLOUD_JOB_ID"',
        job_id="job-env",
        env={"GREETING": "hello"},
        secrets=("MC_TEST_SECRET",),
    )
    h = launch(p, s)
    wait_state(p, h, WorkloadState.SUCCEEDED)
    assert f"greeting=hello secret={secret} job=job-env" in p.logs(h)
    for path in p.logs_dir.iterdir():
        if path.suffix != ".log":
            assert secret not in path.read_text(), path
    sidecar = json.loads((p.logs_dir / f"{h.id}.json").read_text())
    assert (sidecar["job_id"], sidecar["attempt"], sidecar["request_id"]) == (
        "job-env",
        1,
        h.request_id,
    )
    monkeypatch.delenv("MC_TEST_SECRET")
    with pytest.raises(InvalidRequestError, match="MC_TEST_SECRET") as info:
        launch(p, spec("true", job_id="job-nosecret", secrets=("MC_TEST_SECRET",)))
    assert secret not in str(info.value)


def test_owned_lists_live_workloads_of_the_install(make_provider: Factory) -> None:
    p = make_provider(install_id="inst-a")
    h = launch(p, spec("sleep 60", job_id="job-own", attempt=2))
    other = make_provider(install_id="inst-b", logs_dir=p.logs_dir)
    launch(other, spec("sleep 60", job_id="job-other"))
    (owned,) = p.owned("inst-a")
    assert (owned.handle, owned.job_id, owned.attempt) == (h, "job-own", 2)
    assert [w.job_id for w in p.owned("inst-b")] == ["job-other"]
    assert p.owned("nobody") == []
    p.terminate(h, request_id="t")
    assert p.owned("inst-a") == []


def test_status_is_unknown_when_the_actor_died_without_an_exit(make_provider: Factory) -> None:
    p = make_provider()
    h = launch(p, spec("sleep 60"))
    wait_state(p, h, WorkloadState.RUNNING)
    pgid = pid_of(p, h)
    # What a Ray restart does to it: the actor's process dies at once, no exit file is
    # written. (ray.kill() is not that: the dying worker first kills its children, and the
    # watcher thread may still record the command's SIGKILL as its exit.)
    actor = _ray().get_actor(h.id, namespace=p.namespace)
    worker_pid = _ray().get(actor.__ray_call__.remote(lambda _self: os.getpid()))
    os.kill(worker_pid, signal.SIGKILL)
    gone = wait_state(p, h, WorkloadState.UNKNOWN)
    assert gone.message == GONE_MESSAGE
    # The same key does not run it again.
    assert launch(p, spec("sleep 60"), h.request_id) == h
    assert state_of(p, h).state is WorkloadState.UNKNOWN
    # terminate() still reaches what the dead actor left behind, by its recorded pid.
    p.terminate(h, request_id="t")
    wait_for(lambda: group_gone(pgid), what="the orphaned process group to die")
    assert state_of(p, h).state is WorkloadState.TERMINATED


def test_status_batch_mixes_states(make_provider: Factory) -> None:
    p = make_provider(slots=4, cpus=0.5)
    ok = launch(p, spec("true", job_id="ok"))
    bad = launch(p, spec("exit 4", job_id="bad"))
    live = launch(p, spec("sleep 60", job_id="live"))
    wait_state(p, ok, WorkloadState.SUCCEEDED)
    wait_state(p, bad, WorkloadState.FAILED)
    wait_state(p, live, WorkloadState.RUNNING)
    ghost = Handle(
        "local",
        "local-local-000000000000",
        "x",
        "local",
        None,
        "local",
        1,
        MarketKind.ON_DEMAND,
        "ghost",
    )
    got = p.status([ok, bad, live, ghost, ok])
    assert list(got) == [ok.id, bad.id, live.id, ghost.id]
    assert [s.state for s in got.values()] == [
        WorkloadState.SUCCEEDED,
        WorkloadState.FAILED,
        WorkloadState.RUNNING,
        WorkloadState.UNKNOWN,
    ]


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"command": None}, "no command"),
        ({"command": "   "}, "no command"),
        ({"command": ()}, "no command"),
        ({"market": MarketKind.SPOT}, "spot"),
        ({"nodes": 2}, "one node"),
        ({"cpus": 64.0}, "CPU"),
    ],
)
def test_invalid_launches(make_provider: Factory, change: dict[str, Any], match: str) -> None:
    p = make_provider()
    base = {"command": "true", **change}
    with pytest.raises(InvalidRequestError, match=match):
        launch(p, spec(**base))


def test_without_ray_in_the_process(
    make_provider: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_provider()
    monkeypatch.setattr(_ray(), "is_initialized", lambda: False)
    assert offer_of(p).capacity == p.slots  # offers still answer, without live counts
    with pytest.raises(InvalidRequestError, match="needs Ray"):
        launch(p, spec("true"))
    with pytest.raises(InvalidRequestError, match="needs Ray"):
        p.owned("default")
