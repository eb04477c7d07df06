"""Azure's node program, exactly as the adapter PUT it as custom data, run on this machine.

Each node's program is taken from the fake Resource Manager (the decoded ``customData`` of its
VM's PUT) and run by ``run_gang`` with stand-ins that answer as Azure answers that VM
(``FakeArm.node_answers``: IMDS tokens, its private IP and scheduled events, Key Vault, Azure
DNS). The ARM calls a node made to report its end (tag, deallocate) are then replayed, as
made, against the fake (``FakeArm.replay``), and the adapter's ``status`` reads the result —
and, for the scheduler tests, the scheduler acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_azure import AzureProvider
from multicloud_azure.testing import FakeArm, serve, vcpus_of
from typer.testing import CliRunner

from multicloud import providers as registry
from multicloud.adapterkit import PREEMPTED, NodeExit
from multicloud.cli import app
from multicloud.models import Fleet
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    WorkloadState,
    request_id,
)
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    NodeRun,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)
from multicloud.testing.scheduling import quick_settings, run_until

ND_H100 = "Standard_ND96isr_H100_v5"  # InfiniBand ("r"), no spot price in the catalog
NC_A100 = "Standard_NC24ads_A100_v4"  # no InfiniBand, sold as Spot too


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


def provider_for(fake: FakeArm, **options: Any) -> AzureProvider:
    return AzureProvider(**{"regions": ["eastus"], **fake.options, **options})


def offer_of(provider: AzureProvider, size: str) -> Offer:
    return next(o for o in provider.offers(ResourceRequest()) if o.instance_type == size)


def spec_for(
    command: str,
    *,
    nodes: int = 1,
    market: MarketKind = MarketKind.ON_DEMAND,
    secrets: tuple[str, ...] = (),
    **env: str,
) -> LaunchSpec:
    return gang_spec(command, job="job-node", job_name="node", nodes=nodes, market=market,
                     secrets=secrets, env=env)


def run_nodes(fake: FakeArm, handle: Handle, workdir: Path, timeout: float = 60) -> list[NodeRun]:
    """Run each node's program as PUT, with Azure's answers for its VM."""
    names = [f"{handle.id}-{rank}" for rank in range(handle.nodes)]
    programs = [fake.custom_data(name) for name in names]
    answers = [fake.node_answers(name) for name in names]
    return run_gang(programs, answers, workdir=workdir, timeout=timeout)


def reports(node: NodeRun) -> list[str]:
    """What the node tagged its VM with (each try of the report)."""
    return [
        argv[argv.index("-d") + 1].split('"multicloud:exit":"')[1].split('"')[0]
        for argv in node.argv_of("curl")
        if "PATCH" in argv
    ]


def test_a_two_node_gang_really_runs_and_reports(fake: FakeArm, tmp_path: Path) -> None:
    provider = provider_for(fake)
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    spec = spec_for(torchrun_command(script), nodes=2, MASTER_PORT=str(free_port()))
    offer = offer_of(provider, ND_H100)
    handle = provider.launch(offer, spec, request_id=request_id("job-node", 1, "eastus"))

    nodes = run_nodes(fake, handle, tmp_path / "gang", timeout=240)
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        [container] = node.containers
        env = container.env
        assert (env["NODE_RANK"], env["PET_NODE_RANK"]) == (str(node.index),) * 2
        assert (env["MASTER_ADDR"], env["NNODES"], env["WORLD_SIZE"]) == ("127.0.0.1", "2", "16")
        assert env["MULTICLOUD_ACCELERATOR"] == "H100"
        flags = " ".join(container.flags)
        for flag in (
            "--network host",
            "--ipc host",
            "--gpus all",
            "--ulimit memlock=-1:-1",
            "--device=/dev/infiniband",
            "--cap-add=IPC_LOCK",
        ):
            assert flag in flags
        assert reports(node) == ["0"]
        # The node reported through ARM itself; the halt is the deallocate, not a shutdown.
        assert fake.replay(node.argv_of("curl")) == [200, 202]
        assert not node.halted
    # Rank 1 found rank 0 by its VM name (Azure DNS); rank 0 asked IMDS for its own address.
    assert nodes[1].argv_of("getent") == [["hosts", f"{handle.id}-0"]]
    assert any("privateIpAddress" in " ".join(a) for a in nodes[0].argv_of("curl"))

    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (WorkloadState.SUCCEEDED, 0), status.message
    # Deallocated, not just powered off: the vCPUs are released (not billed).
    assert all("PowerState/deallocated" in str(fake.vm(f"{handle.id}-{r}")) for r in range(2))
    assert fake.usage("eastus", "cores")[0] == 0


@pytest.mark.parametrize(
    ("size", "infiniband"), [(ND_H100, True), ("Standard_ND96asr_v4", True), (NC_A100, False)]
)
def test_infiniband_devices_only_on_sizes_that_have_them(
    fake: FakeArm, size: str, infiniband: bool
) -> None:
    provider = provider_for(fake)
    handle = provider.launch(offer_of(provider, size), spec_for("true"), request_id=f"r-{size}")
    [run] = [
        line
        for line in fake.custom_data(f"{handle.id}-0").splitlines()
        if line.startswith("docker run")
    ]
    assert ("--device=/dev/infiniband" in run) is infiniband
    assert "--gpus all" in run and "--network host" in run and "--ipc host" in run


@pytest.mark.parametrize(
    ("vault", "report", "started"),
    [
        ({"HF-TOKEN": "s3cr3t"}, "0", True),
        # Regression: a multi-line value was folded into one line and passed on; now the
        # kit's one rule refuses it before the container starts.
        ({"HF-TOKEN": "line one\nline two"}, str(int(NodeExit.SECRET_MULTILINE)), False),
        ({}, str(int(NodeExit.SECRET_UNREADABLE)), False),
    ],
    ids=["read", "multi-line", "missing"],
)
def test_secrets_come_from_key_vault_by_name(
    fake: FakeArm,
    tmp_path: Path,
    vault: dict[str, str],
    report: str,
    started: bool,
) -> None:
    for name, value in vault.items():
        fake.set_secret("kv-acme", name, value)
    provider = provider_for(fake, key_vault="kv-acme")
    spec = spec_for('test "${#HF_TOKEN}" = 6', secrets=("HF_TOKEN",))  # no value in the spec
    handle = provider.launch(offer_of(provider, NC_A100), spec, request_id="r-secret")
    assert "s3cr3t" not in fake.custom_data(f"{handle.id}-0")
    [node] = run_nodes(fake, handle, tmp_path)
    assert reports(node) == [report], node.stderr
    assert bool(node.containers) is started
    assert "line one" not in node.stderr + node.stdout
    fake.replay(node.argv_of("curl"))
    status = provider.status([handle])[handle.id]
    assert status.exit_code == int(report)


def test_a_node_reclaimed_while_its_command_exits_143_reports_preempted(
    fake: FakeArm, tmp_path: Path
) -> None:
    provider = provider_for(fake)
    spec = spec_for("exit 143", nodes=2, market=MarketKind.SPOT)
    handle = provider.launch(offer_of(provider, NC_A100), spec, request_id="r-spot")
    fake.preempt(handle.id)  # a Preempt scheduled event per VM, then eviction (Delete)
    for node in run_nodes(fake, handle, tmp_path):
        assert node.returncode == 143
        assert reports(node)[0] == PREEMPTED
        assert any("scheduledevents" in " ".join(a) for a in node.argv_of("curl"))
        # The VM is gone (eviction policy Delete): the report has nowhere to land...
        assert set(fake.replay(node.argv_of("curl"))) == {404}
    # ...and status reads Azure's eviction signal, not an exit code.
    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (WorkloadState.PREEMPTED, None)


def test_a_vm_without_an_identity_cannot_report_and_stays_allocated(
    fake: FakeArm, tmp_path: Path
) -> None:
    # The fake refuses what Azure refuses: IMDS issues no token to a VM without a managed
    # identity, so its node can neither tag nor deallocate it. (The adapter now refuses such
    # a fleet; the VM here is PUT without the identity to show why.)
    provider = provider_for(fake)
    handle = provider.launch(offer_of(provider, NC_A100), spec_for("true"), request_id="r-id")
    name = f"{handle.id}-0"
    vm = fake._vms[(fake.resource_group.lower(), name)]
    vm.pop("identity")
    answers = fake.node_answers(name)
    tokens = [a for a in answers["curl"] if "oauth2/token" in a.pattern]
    assert tokens and all(a.exit == 22 for a in tokens)
    fake.finish(name, 0)  # its command ends: the node can only power off
    assert "PowerState/stopped" in str(fake.vm(name))
    assert fake.usage("eastus", "cores")[0] == vcpus_of(NC_A100)  # still allocated
    status = provider.status([handle])[handle.id]
    assert status.state is WorkloadState.FAILED and "without reporting" in status.message


# -- the scheduler ------------------------------------------------------------------------------


class Cycle:
    """A scheduler over a fresh SQLite store and one azure fleet entry on the fake."""

    def __init__(self, tmp_path: Path, fake: FakeArm) -> None:
        doc = {
            "providers": {
                "azure": {"adapter": "azure", "regions": ["eastus"], "options": fake.options}
            }
        }
        self.fleet = Fleet.model_validate(doc)
        self.effects = InlineEffects({"azure": registry.from_fleet(self.fleet, "azure")})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=quick_settings())

    def run_until(self, done: Callable[[], bool]) -> None:
        run_until(self.scheduler, done, timeout=20.0, pause=0.005)

    def handle(self, job_id: str, attempt: int) -> Handle:
        record = self.store.get(job_id).attempts[attempt - 1]
        assert record.handle is not None
        return record.handle


@pytest.fixture
def cycle(fake: FakeArm, tmp_path: Path) -> Iterator[Cycle]:
    c = Cycle(tmp_path, fake)
    try:
        yield c
    finally:
        c.effects.close()
        c.store.close()


def _job(command: str, **fields: Any) -> Any:
    run = {"image": "ghcr.io/acme/train:1", "command": command}
    return job("a100", accelerator="A100-80GB", count=1, run=run, **fields)


def test_a_reclaimed_node_exiting_143_is_re_placed(
    cycle: Cycle, fake: FakeArm, tmp_path: Path
) -> None:
    ((job_id, _),) = cycle.scheduler.submit([(_job("exit 143", market="spot"), None)])
    cycle.run_until(lambda: cycle.store.get(job_id).state is JobState.RUNNING)
    first = cycle.handle(job_id, 1)
    assert first.market is MarketKind.SPOT
    fake.preempt(first.id)
    [node] = run_nodes(fake, first, tmp_path / "node")
    assert (node.returncode, reports(node)[0]) == (143, PREEMPTED)
    fake.replay(node.argv_of("curl"))
    # The scheduler reads PREEMPTED and launches attempt 2, which then finishes.
    cycle.run_until(
        lambda: (
            len(cycle.store.get(job_id).attempts) == 2
            and cycle.store.get(job_id).state is JobState.RUNNING
        )
    )
    fake.finish(cycle.handle(job_id, 2).id, 0)
    cycle.run_until(lambda: cycle.store.get(job_id).state.is_terminal)
    record = cycle.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]


def test_a_node_whose_command_exits_3_fails_the_job(
    cycle: Cycle, fake: FakeArm, tmp_path: Path
) -> None:
    ((job_id, _),) = cycle.scheduler.submit([(_job("exit 3"), None)])
    cycle.run_until(lambda: cycle.store.get(job_id).state is JobState.RUNNING)
    [node] = run_nodes(fake, cycle.handle(job_id, 1), tmp_path / "node")
    assert (node.returncode, reports(node)) == (3, ["3"])
    assert fake.replay(node.argv_of("curl")) == [200, 202]
    cycle.run_until(lambda: cycle.store.get(job_id).state.is_terminal)
    record = cycle.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [a.outcome for a in record.attempts] == ["failed"]
    assert "exit code 3" in cycle.store.events(job_id)[-1].reason


# -- a fleet without an identity ----------------------------------------------------------------


def test_start_refuses_a_fleet_without_identity_before_anything_starts(
    fake: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: such a fleet was accepted; every job then read FAILED and every finished VM
    # stayed allocated (billed), since no node could report or deallocate itself.
    import yaml

    from multicloud.service import control

    monkeypatch.setenv("MULTICLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(control, "start", lambda *a, **k: pytest.fail("the service started"))
    options = {k: v for k, v in fake.options.items() if k != "identity_id"}
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump({"providers": {"gpu": {"adapter": "azure", "options": options}}})
    )
    result = CliRunner().invoke(app, ["start", "--fleet", str(fleet)])
    assert result.exit_code == 2
    assert "providers.gpu.options.identity_id" in result.output
    assert "deallocate" in result.output
    assert fake.requests == []
