"""The node contract, rendered by the core for every cloud, run for real on this machine.

A made-up cloud binding (a metadata service reached with curl) stands in for a cloud; each
cloud adapter's own tests run its real binding the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from multicloud.adapterkit import (
    PREEMPTED,
    Binding,
    NodeExit,
    NodeShape,
    gang_end,
    node_end,
    pod_contract,
    render_node_program,
)
from multicloud.provider import LaunchSpec, MarketKind, WorkloadState, WorkloadStatus
from multicloud.testing.builders import offer
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    Answer,
    NodeRun,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)

MD = "http://metadata.test"

BINDING = Binding(
    cloud="testcloud",
    prelude=f'md() {{ curl -sf "{MD}/$1"; }}',
    rank="md rank",
    master="md master",
    secret='curl -sf "' + MD + '/secret/$1"',
    reclaimed="md reclaimed >/dev/null",
    report='curl -sf -X PUT -d "$1" "' + MD + '/report"',
)


def spec(command: str, *, nodes: int = 2, secrets: tuple[str, ...] = (), **env: str) -> LaunchSpec:
    return gang_spec(command, job_name="contract", nodes=nodes, image="ghcr.io/example/trainer:1",
                     secrets=secrets, env=env)


def answers(
    rank: int,
    *,
    reclaimed: bool = False,
    secrets: dict[str, str] | None = None,
    rank_known: bool = True,
) -> dict[str, list[Answer]]:
    rules = [
        Answer(r"/rank$", str(rank)) if rank_known else Answer(r"/rank$", exit=22),
        Answer(r"/master$", "127.0.0.1"),
        Answer(r"/reclaimed$", "TRUE" if reclaimed else "", 0 if reclaimed else 22),
        Answer(r"-X PUT .*/report$"),
    ]
    rules += [Answer(f"/secret/{name}$", value) for name, value in (secrets or {}).items()]
    rules.append(Answer(r"/secret/", exit=22))
    return {"curl": rules}


def reports(node: NodeRun) -> list[str]:
    return [argv[argv.index("-d") + 1] for argv in node.argv_of("curl") if "-d" in argv]


def test_a_two_node_gang_forms_and_all_reduces_from_the_contract_env_alone(
    tmp_path: Path,
) -> None:
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    launch = spec(torchrun_command(script), MASTER_PORT=str(free_port()))
    program = render_node_program(launch, offer(accelerator="H100", count=8), "req-1", BINDING)
    nodes = run_gang(
        [program, program], [answers(0), answers(1)], workdir=tmp_path / "gang", timeout=240
    )
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        [container] = node.containers
        assert container.env["NODE_RANK"] == str(node.index)
        assert container.env["PET_NODE_RANK"] == str(node.index)
        assert container.env["MASTER_ADDR"] == "127.0.0.1"
        assert container.env["NNODES"] == "2"
        assert container.env["NPROC_PER_NODE"] == "8"
        assert container.env["WORLD_SIZE"] == "16"
        assert container.env["MULTICLOUD_JOB_ID"] == "job-0123456789ab"
        assert container.env["MULTICLOUD_ACCELERATOR"] == "H100"
        flags = " ".join(container.flags)
        for flag in ("--network host", "--ipc host", "--gpus all", "--ulimit memlock=-1:-1"):
            assert flag in flags
        assert reports(node) == ["0"]
        assert node.halted


@pytest.mark.parametrize(
    ("case", "command", "node_answers", "report", "started"),
    [
        ("command fails", "exit 3", answers(0), "3", True),
        ("reclaimed while the command is killed", "exit 143", answers(0, reclaimed=True),
         PREEMPTED, True),
        ("reclaimed wins over success", "true", answers(0, reclaimed=True), PREEMPTED, True),
        ("secret unreadable", "true", answers(0), str(int(NodeExit.SECRET_UNREADABLE)), False),
        ("secret spans lines", "true", answers(0, secrets={"HF_TOKEN": "a\nb"}),
         str(int(NodeExit.SECRET_MULTILINE)), False),
        ("rank unknown", "true", answers(0, rank_known=False), str(int(NodeExit.NO_PEERS)),
         False),
    ],
)
def test_how_a_node_ends_is_reported_once_with_one_set_of_codes(
    tmp_path: Path,
    case: str,
    command: str,
    node_answers: dict[str, list[Answer]],
    report: str,
    started: bool,
) -> None:
    secrets = ("HF_TOKEN",) if "secret" in case else ()
    program = render_node_program(
        spec(command, nodes=1, secrets=secrets), offer(), "req-2", BINDING
    )
    [node] = run_gang([program], [node_answers], workdir=tmp_path, timeout=60)
    assert reports(node) == [report], node.stderr
    assert bool(node.containers) is started
    assert node.halted
    if "secret" in case:
        assert "HF_TOKEN" in node.stderr and "a\nb" not in node.stderr


def test_a_secret_reaches_the_container_by_its_one_env_name(tmp_path: Path) -> None:
    program = render_node_program(
        spec("true", nodes=1, secrets=("prod/hf-token",)), offer(), "req-3", BINDING
    )
    node_answers = answers(0, secrets={"prod/hf-token": "s3cr3t"})
    [node] = run_gang([program], [node_answers], workdir=tmp_path, timeout=60)
    assert node.containers[0].env["HF_TOKEN"] == "s3cr3t"
    assert "s3cr3t" not in program


@pytest.mark.parametrize(
    ("shape", "present", "absent"),
    [
        (NodeShape("nvidia", 8), ["--gpus all"], ["--privileged", "/dev/infiniband"]),
        (NodeShape("nvidia", 8, rdma=True), ["--gpus all", "--device=/dev/infiniband",
                                              "--cap-add=IPC_LOCK"], []),
        (NodeShape("amd", 8), ["--device=/dev/kfd", "--device=/dev/dri"], ["--gpus"]),
        (NodeShape("tpu", 4), ["--privileged"], ["--gpus"]),
        (NodeShape("neuron", 16), ["$(mc_neuron_devices)"], ["--gpus", "'$(mc_neuron_devices)'"]),
        (NodeShape("cpu", 1), ["--network host", "--ipc host"], ["--gpus", "--privileged"]),
    ],
)
def test_the_container_gets_the_devices_of_its_family(
    shape: NodeShape, present: list[str], absent: list[str]
) -> None:
    program = render_node_program(spec("true"), offer(), "req", BINDING, shape=shape)
    [run_line] = [line for line in program.splitlines() if line.startswith("docker run")]
    for flag in present:
        assert flag in run_line
    for flag in absent:
        assert flag not in run_line


@pytest.mark.parametrize(
    ("reported", "reclaimed", "state", "code"),
    [
        ("0", False, WorkloadState.SUCCEEDED, 0),
        ("3", False, WorkloadState.FAILED, 3),
        ("143", True, WorkloadState.PREEMPTED, None),
        (PREEMPTED, False, WorkloadState.PREEMPTED, None),
        ("137", False, WorkloadState.FAILED, 137),
        ("77", False, WorkloadState.FAILED, 77),
        ("75", False, WorkloadState.TERMINATED, 75),
        ("garbage", False, WorkloadState.FAILED, None),
    ],
)
def test_node_end_lets_preemption_win(
    reported: str, reclaimed: bool, state: WorkloadState, code: int | None
) -> None:
    status = node_end(reported, reclaimed=reclaimed)
    assert status is not None
    assert (status.state, status.exit_code) == (state, code)


def test_node_end_is_none_until_a_node_reports() -> None:
    assert node_end(None) is None


def test_a_containers_own_exit_code_has_no_node_program_meaning() -> None:
    status = node_end("75", program=False)
    assert status is not None
    assert (status.state, status.exit_code) == (WorkloadState.FAILED, 75)
    assert node_end("143", reclaimed=True, program=False).state is WorkloadState.PREEMPTED  # type: ignore[union-attr]


def test_the_program_survives_sigterm_to_report(tmp_path: Path) -> None:
    # The node's shutdown sends SIGTERM to the program while its container still runs: it
    # must still ask whether it is being reclaimed and report.
    # No image: the command runs on the host, a child of the program; it signals its parent.
    command = "kill -TERM $(cut -d' ' -f4 /proc/$$/stat); exit 143"
    launch = LaunchSpec("job-0123456789ab", "j", 1, 1, MarketKind.SPOT, command=command)
    program = render_node_program(launch, offer(), "req-t", BINDING)
    [node] = run_gang([program], [answers(0, reclaimed=True)], workdir=tmp_path, timeout=60)
    assert reports(node) == [PREEMPTED], node.stderr
    assert node.halted


S = WorkloadStatus


@pytest.mark.parametrize(
    ("members", "state"),
    [
        ([S(WorkloadState.SUCCEEDED), S(WorkloadState.SUCCEEDED)], WorkloadState.SUCCEEDED),
        ([S(WorkloadState.SUCCEEDED), S(WorkloadState.RUNNING)], WorkloadState.RUNNING),
        ([S(WorkloadState.FAILED, exit_code=1), S(WorkloadState.PREEMPTED)],
         WorkloadState.PREEMPTED),
        ([S(WorkloadState.RUNNING), S(WorkloadState.FAILED, exit_code=1)], WorkloadState.FAILED),
        ([S(WorkloadState.PROVISIONING), S(WorkloadState.RUNNING)], WorkloadState.PROVISIONING),
        ([S(WorkloadState.RUNNING), S(WorkloadState.TERMINATED)], WorkloadState.TERMINATED),
        ([], WorkloadState.UNKNOWN),
    ],
)
def test_gang_end(members: list[WorkloadStatus], state: WorkloadState) -> None:
    assert gang_end(members).state is state


def test_pods_get_the_same_environment_names_as_vm_nodes() -> None:
    launch = spec("true", secrets=("HF_TOKEN",))
    shape = NodeShape("nvidia", 8, rdma=True)
    pod = pod_contract(
        launch,
        offer(),
        "req-4",
        shape,
        master_addr="mc-abc-0.mc-abc",
        secret_object={"HF_TOKEN": "hf-token"},
    )
    env = {e["name"]: e for e in pod["env"]}
    program = render_node_program(launch, offer(), "req-4", BINDING, shape=shape)
    for name in ("NNODES", "NPROC_PER_NODE", "WORLD_SIZE", "MASTER_PORT", "MULTICLOUD_JOB_ID",
                 "PET_NNODES", "PET_MASTER_PORT"):
        assert f"put {name} " in program and name in env
    for name in ("NODE_RANK", "PET_NODE_RANK", "MASTER_ADDR", "PET_MASTER_ADDR"):
        assert f"put {name} " in program and name in env
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["MASTER_ADDR"]["value"] == "mc-abc-0.mc-abc"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert pod["resources"]["limits"] == {"nvidia.com/gpu": "8", "rdma/ib": "1"}
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert pod["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}


def test_a_ray_pod_gets_no_rank_and_secrets_come_from_a_valid_key() -> None:
    launch = spec("true", secrets=("prod/hf-token",))
    pod = pod_contract(
        launch, offer(), "req-5", NodeShape("nvidia", 8), master_addr="x",
        secret_object={"prod/hf-token": "hf-token"}, ranked=False,
    )
    env = {e["name"]: e for e in pod["env"]}
    assert not {"NODE_RANK", "PET_NODE_RANK", "MASTER_ADDR", "PET_MASTER_ADDR"} & set(env)
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
