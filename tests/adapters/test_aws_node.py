"""The node program exactly as the SDK sent it to the fake EC2, run here for real.

Each gang is launched through ``AWSProvider`` against the fake; the user-data of its
``RunInstances`` call is taken from the fake's request log and run with ``run_gang``: ``curl``
answers as IMDSv2 would for node 0 and node 1, ``aws`` as the CLI would (rank 0's address
127.0.0.1, secrets, create-tags), ``docker`` records its flags and runs the command. What the
nodes report is then applied to the fake, and ``status()`` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from multicloud_aws import AWSProvider
from multicloud_aws.node import EXIT_TAG
from multicloud_aws.testing import FakeAWS, serve

from multicloud.adapterkit import PREEMPTED, NodeExit
from multicloud.provider import (
    Handle,
    MarketKind,
    Offer,
    ResourceRequest,
    WorkloadState,
    request_id,
)
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    Answer,
    NodeRun,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)

REGION = "us-east-1"
RESERVATION = "r-0fake0gang0000001"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAWS]:
    with serve() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAWS) -> FakeAWS:
    server.reset()
    return server


def launch(
    fake: FakeAWS,
    instance_type: str,
    command: str,
    *,
    nodes: int = 2,
    market: MarketKind = MarketKind.ON_DEMAND,
    secrets: tuple[str, ...] = (),
    **env: str,
) -> tuple[AWSProvider, Handle, str]:
    """Launch a gang through the adapter; return it with the user-data the fake received."""
    provider = AWSProvider(regions=[REGION], _session=fake.session(), **fake.options)
    offer: Offer = next(
        o
        for o in provider.offers(ResourceRequest())
        if o.instance_type == instance_type and o.reservation is None
    )
    spec = gang_spec(command, job="job-aws-node", job_name="node", nodes=nodes, market=market,
                     secrets=secrets, env=env)
    handle = provider.launch(offer, spec, request_id=request_id(spec.job_id, 1, REGION))
    return provider, handle, fake.user_data()


def imds(
    rank: int, instance_id: str, *, reclaimed: bool = False, secrets: dict[str, str] | None = None
) -> dict[str, list[Answer]]:
    """Stand-ins answering as EC2's IMDSv2 and the AWS CLI do on node ``rank``."""
    meta = "169.254.169.254/latest/meta-data"
    return {
        "curl": [
            Answer(r"-X PUT http://169\.254\.169\.254/latest/api/token", "AQAEtoken=="),
            Answer(f"{meta}/instance-id$", instance_id),
            Answer(f"{meta}/placement/region$", REGION),
            Answer(f"{meta}/ami-launch-index$", str(rank)),
            Answer(f"{meta}/reservation-id$", RESERVATION),
            # IMDS answers 404 (curl -f: 22) until EC2 sends the spot interruption notice.
            Answer(
                f"{meta}/spot/instance-action$",
                '{"action": "terminate", "time": "2026-01-01T00:00:00Z"}' if reclaimed else "",
                0 if reclaimed else 22,
            ),
        ],
        "aws": [
            Answer(
                f"ec2 describe-instances --region {REGION} --filters "
                f"Name=reservation-id,Values={RESERVATION} Name=launch-index,Values=0 ",
                "127.0.0.1\n",
            ),
            Answer(f"ec2 create-tags --region {REGION} --resources {instance_id} "),
            *[
                Answer(f"secretsmanager get-secret-value .*--secret-id {name} ", value + "\n")
                for name, value in (secrets or {}).items()
            ],
            Answer("secretsmanager get-secret-value", exit=254),
            Answer("ssm get-parameter", exit=254),
        ],
    }


def reported(node: NodeRun) -> list[str]:
    """What a node tagged itself with (``multicloud:exit=<value>``)."""
    return [
        argv[-1].split("Value=", 1)[1]
        for argv in node.argv_of("aws")
        if argv[:2] == ["ec2", "create-tags"]
    ]


def apply_reports(fake: FakeAWS, handle: Handle, nodes: list[NodeRun]) -> None:
    """Do to the fake what the nodes did (tag their end, power off) and what EC2 did."""
    ec2 = fake.client("ec2", REGION)
    for iid, node in zip(handle.id.split(","), nodes, strict=True):
        (value,) = reported(node)
        ec2.create_tags(Resources=[iid], Tags=[{"Key": EXIT_TAG, "Value": value}])
        if value == PREEMPTED:
            fake.preempt(iid)  # EC2 reclaimed the spot instance
        else:
            fake.finish(iid, None)  # the node powered itself off


def test_a_two_node_gang_forms_and_all_reduces_from_what_the_sdk_sent(
    fake: FakeAWS, tmp_path: Path
) -> None:
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    provider, handle, program = launch(
        fake, "p5.48xlarge", torchrun_command(script), MASTER_PORT=str(free_port())
    )
    ids = handle.id.split(",")
    nodes = run_gang(
        [program, program],
        [imds(0, ids[0]), imds(1, ids[1])],
        workdir=tmp_path / "gang",
        timeout=240,
    )
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        [container] = node.containers
        env = container.env
        assert (env["NODE_RANK"], env["PET_NODE_RANK"]) == (str(node.index), str(node.index))
        assert (env["MASTER_ADDR"], env["NNODES"], env["WORLD_SIZE"]) == ("127.0.0.1", "2", "16")
        assert env["NPROC_PER_NODE"] == "8" and env["MULTICLOUD_ACCELERATOR"] == "H100"
        flags = " ".join(container.flags)
        for flag in (
            "--network host",
            "--ipc host",
            "--gpus all",
            "--ulimit memlock=-1:-1",
            "--device=/dev/infiniband",  # p5 gangs get EFA interfaces at launch
            "--cap-add=IPC_LOCK",
        ):
            assert flag in flags
        assert reported(node) == ["0"] and node.halted
        # IMDSv2 only: every metadata read carries a session token.
        reads = [a for a in node.argv_of("curl") if "/meta-data/" in a[-1]]
        assert reads and all("X-aws-ec2-metadata-token: AQAEtoken==" in a for a in reads)
    apply_reports(fake, handle, nodes)
    assert provider.status([handle])[handle.id].state is WorkloadState.SUCCEEDED


@pytest.mark.parametrize(
    ("instance_type", "nodes", "efa", "devices", "absent"),
    [
        ("p5.48xlarge", 2, 32, ["--gpus all", "--device=/dev/infiniband"], []),
        ("p5.48xlarge", 1, 0, ["--gpus all"], ["/dev/infiniband"]),
        ("p4d.24xlarge", 2, 4, ["--gpus all", "--device=/dev/infiniband"], []),
        ("g5.xlarge", 2, 0, ["--gpus all"], ["/dev/infiniband"]),
        ("trn1.32xlarge", 2, 8, ["--device=/dev/infiniband"], ["--gpus"]),
        ("inf2.xlarge", 1, 0, [], ["--gpus", "/dev/infiniband"]),
    ],
)
def test_devices_and_efa_interfaces_follow_the_instance_type(
    fake: FakeAWS,
    instance_type: str,
    nodes: int,
    efa: int,
    devices: list[str],
    absent: list[str],
) -> None:
    _, _, program = launch(fake, instance_type, "true", nodes=nodes)
    [run_line] = [line for line in program.splitlines() if line.startswith("docker run")]
    for flag in ["--network host", "--ipc host", "memlock=-1:-1", *devices]:
        assert flag in run_line
    for flag in absent:
        assert flag not in run_line
    call = fake.calls("RunInstances")[-1]
    kinds = [v for k, v in call.items() if k.endswith(".InterfaceType")]
    assert kinds == ["efa"] * efa
    cards = sorted(int(v) for k, v in call.items() if k.endswith(".NetworkCardIndex"))
    assert cards == list(range(efa))
    if efa:  # with interfaces, the subnet travels on each of them, never beside them
        assert "SubnetId" not in call


def test_a_neuron_node_hands_every_neuron_device_to_the_container(
    fake: FakeAWS, tmp_path: Path
) -> None:
    _, handle, program = launch(fake, "trn1.2xlarge", "true", nodes=1)
    assert "--gpus" not in program
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("neuron0", "neuron1"):
        (devices / name).touch()
    # The only change: where the node's /dev is.
    program = program.replace("/dev/neuron", f"{devices}/neuron")
    [node] = run_gang([program], [imds(0, handle.id)], workdir=tmp_path / "node", timeout=60)
    assert node.returncode == 0, node.stderr
    [container] = node.containers
    assert [f for f in container.flags if f.startswith("--device=")] == [
        f"--device={devices}/neuron0",
        f"--device={devices}/neuron1",
    ]


@pytest.mark.parametrize(
    ("case", "command", "reclaimed", "secrets", "report", "state"),
    [
        ("command fails", "exit 3", False, {"prod/hf-token": "hf_x"}, "3", WorkloadState.FAILED),
        (
            "reclaimed while killed",
            "exit 143",
            True,
            {"prod/hf-token": "hf_x"},
            PREEMPTED,
            WorkloadState.PREEMPTED,
        ),
        (
            "secret unreadable",
            "true",
            False,
            {},
            str(int(NodeExit.SECRET_UNREADABLE)),
            WorkloadState.FAILED,
        ),
        (
            "secret spans lines",
            "true",
            False,
            {"prod/hf-token": "a\nb"},
            str(int(NodeExit.SECRET_MULTILINE)),
            WorkloadState.FAILED,
        ),
    ],
)
def test_how_a_node_ends_reaches_status(
    fake: FakeAWS,
    tmp_path: Path,
    case: str,
    command: str,
    reclaimed: bool,
    secrets: dict[str, str],
    report: str,
    state: WorkloadState,
) -> None:
    provider, handle, program = launch(
        fake, "p5.48xlarge", command, nodes=1, market=MarketKind.SPOT, secrets=("prod/hf-token",)
    )
    assert "hf_x" not in program  # secrets travel by name
    answers = imds(0, handle.id, reclaimed=reclaimed, secrets=secrets)
    [node] = run_gang([program], [answers], workdir=tmp_path, timeout=60)
    assert reported(node) == [report], node.stderr
    assert node.halted
    if command == "exit 3":
        assert node.containers[0].env["HF_TOKEN"] == "hf_x"
    apply_reports(fake, handle, [node])
    status = provider.status([handle])[handle.id]
    assert status.state is state, status
