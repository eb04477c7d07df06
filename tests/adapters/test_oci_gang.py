"""A two-node OCI gang really runs: the node program exactly as the SDK sent it to the fake.

The program is decoded from the ``user_data`` of each ``LaunchInstance`` the fake received and
run here with stand-ins answering as OCI would for node 0 and node 1: the instance metadata
service (``curl`` to ``169.254.169.254/opc/v2`` with ``Authorization: Bearer Oracle``), the
VCN resolver (``getent``) and the OCI CLI with the instance principal (``oci``). A real
two-process torchrun gloo all-reduce runs from the contract's environment alone. What each
node reported through the CLI is then replayed against the fake through the SDK, and the
adapter's ``status`` reads the end.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import oci
import pytest
from multicloud_oci import OCIProvider
from multicloud_oci.testing import FakeOCI, pick, serve

from multicloud.adapterkit import PREEMPTED
from multicloud.provider import Handle, MarketKind, WorkloadState
from multicloud.testing.builders import launch_spec
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    Answer,
    NodeRun,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)

REGION = "us-ashburn-1"

VAULT = "ocid1.vault.oc1..fakevault"


@pytest.fixture
def fake() -> Iterator[FakeOCI]:
    with serve() as f:
        yield f


def answers(fake: FakeOCI, handle: Handle, rank: int, *, state: str = "RUNNING"
            ) -> dict[str, list[Answer]]:
    """How OCI answers node ``rank`` of the launch: IMDSv2, the resolver, the OCI CLI."""
    iid = fake.members(handle.id)[rank]["id"]
    imds = r"-H Authorization: Bearer Oracle -L http://169\.254\.169\.254/opc/v2/"
    cli = rf"^--auth instance_principal compute instance VERB --instance-id {iid} "
    return {
        "curl": [
            Answer(imds + r"instance/metadata/multicloud_rank$", str(rank)),
            Answer(imds + r"instance/id$", iid),
        ],
        "getent": [Answer(rf"^hosts {handle.id}-0$", f"127.0.0.1       {handle.id}-0\n")],
        "oci": [
            Answer(cli.replace("VERB", "get") + r"--query", state),
            Answer(cli.replace("VERB", "update")
                   + rf"--display-name {handle.id}-{rank} exit=\S+ --force$"),
            Answer(cli.replace("VERB", "terminate")
                   + r"--preserve-boot-volume false --force$"),
            Answer(rf"^--auth instance_principal secrets secret-bundle get-secret-bundle-by-name "
                   rf"--vault-id {VAULT} --secret-name HF_TOKEN ",
                   base64.b64encode(b"s3cr3t").decode()),
        ],
    }


def replay(p: OCIProvider, node: NodeRun) -> list[str]:
    """Send what the node asked the OCI CLI to do to the fake, through the SDK."""
    compute = p._clients.compute(REGION)
    reports = []
    for argv in node.argv_of("oci"):
        iid = argv[argv.index("--instance-id") + 1] if "--instance-id" in argv else ""
        if argv[2:5] == ["compute", "instance", "update"]:
            name = argv[argv.index("--display-name") + 1]
            reports.append(re.sub(r".* exit=", "", name))
            compute.update_instance(iid, oci.core.models.UpdateInstanceDetails(display_name=name))
        elif argv[2:5] == ["compute", "instance", "terminate"]:
            compute.terminate_instance(iid, preserve_boot_volume=False)
    return reports


def test_a_two_node_gang_forms_and_all_reduces(fake: FakeOCI, tmp_path: Path) -> None:
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    p = fake.provider(vault_id=VAULT)
    job = gang_spec(torchrun_command(script), job="job-1", secrets=("HF_TOKEN",),
                    env={"MASTER_PORT": str(free_port())})
    handle = p.launch(pick(p, "BM.GPU.H100.8"), job, request_id="g" * 32)
    programs = fake.programs(handle.id)
    assert len(programs) == 2
    nodes = run_gang(programs, [answers(fake, handle, 0), answers(fake, handle, 1)],
                     workdir=tmp_path / "gang", timeout=240)
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        [container] = node.containers
        env = container.env
        assert (env["NODE_RANK"], env["PET_NODE_RANK"]) == (str(node.index), str(node.index))
        assert (env["MASTER_ADDR"], env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == (
            "127.0.0.1", "2", "8", "16")
        assert env["HF_TOKEN"] == "s3cr3t" and env["MULTICLOUD_ACCELERATOR"] == "H100"
        flags = " ".join(container.flags)
        for flag in ("--network host", "--ipc host", "--gpus all", "--ulimit memlock=-1:-1",
                     "--device=/dev/infiniband", "--cap-add=IPC_LOCK"):
            assert flag in flags
        assert not node.halted  # OCI bills a node stopped from its OS: it terminates itself
        assert replay(p, node) == ["0"]
    assert p.status([handle])[handle.id].state is WorkloadState.SUCCEEDED


@pytest.mark.parametrize(
    ("case", "command", "market", "shape", "state", "report", "end"),
    [
        ("command fails", "exit 3", MarketKind.ON_DEMAND, "BM.GPU.H100.8", "RUNNING", "3",
         WorkloadState.FAILED),
        ("reclaimed while the command is killed", "exit 143", MarketKind.SPOT, "VM.GPU3.1",
         "TERMINATING", PREEMPTED, WorkloadState.PREEMPTED),
    ],
)
def test_how_a_node_ends_reaches_status(
    fake: FakeOCI, tmp_path: Path, case: str, command: str, market: MarketKind, shape: str,
    state: str, report: str, end: WorkloadState,
) -> None:
    p = fake.provider()
    job = launch_spec(command=command, market=market)
    handle = p.launch(pick(p, shape), job, request_id="h" * 32)
    [node] = run_gang(fake.programs(handle.id), [answers(fake, handle, 0, state=state)],
                      workdir=tmp_path, timeout=60)
    assert replay(p, node) == [report], node.stderr
    if market is MarketKind.SPOT:
        fake.preempt(handle.id)  # OCI terminates the reclaimed instance
    status = p.status([handle])[handle.id]
    assert status.state is end
    assert status.exit_code == (3 if end is WorkloadState.FAILED else None)


def test_a_reclaimed_node_that_could_not_report_reads_preempted(fake: FakeOCI) -> None:
    p = fake.provider()
    job = launch_spec(market=MarketKind.SPOT)
    handle = p.launch(pick(p, "VM.GPU3.1"), job, request_id="i" * 32)
    fake.preempt(handle.id)
    assert p.status([handle])[handle.id].state is WorkloadState.PREEMPTED
