"""What a GCP node runs: the node program exactly as the SDK sent it, executed here.

The GCP adapter launches a gang against the fake Compute / TPU APIs; the ``startup-script``
each VM (or the TPU node spec) received is run with ``run_gang``, with stand-ins answering as
Google's metadata server, internal DNS and REST APIs would for node 0 and node 1. A real
two-process torchrun gloo all-reduce forms the gang from the contract's environment alone,
and what each node reports is replayed into the fake, so that ``status()`` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_gcp import GCPProvider
from multicloud_gcp.testing import FakeGCP, serve_offline

from multicloud.adapterkit import PREEMPTED, NodeExit
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    WorkloadState,
)
from multicloud.provider import request_id as request_id_of
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    Answer,
    NodeRun,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)

COMPUTE = "https://compute.googleapis.com"
TPU = "https://tpu.googleapis.com"


@pytest.fixture
def fake() -> Iterator[FakeGCP]:
    with serve_offline() as running:
        yield running


def find(provider: GCPProvider, instance_type: str, *, spot: bool = False) -> Offer:
    return next(
        o
        for o in provider.offers(ResourceRequest())
        if o.instance_type == instance_type and (o.spot_price is not None or not spot)
    )


def spec(
    command: str,
    *,
    nodes: int = 2,
    market: MarketKind = MarketKind.ON_DEMAND,
    secrets: tuple[str, ...] = (),
    **env: str,
) -> LaunchSpec:
    return gang_spec(command, job="job-gcp-gang", job_name="gang", nodes=nodes, market=market,
                     install_id="inst-nodes", secrets=secrets, env=env)


def launch(provider: GCPProvider, offer: Offer, s: LaunchSpec) -> Handle:
    return provider.launch(offer, s, request_id=request_id_of(s.job_id, s.attempt, offer.region))


def vm_programs(fake: FakeGCP, handle: Handle) -> list[tuple[dict[str, Any], str]]:
    """Each VM of the gang and the ``startup-script`` the SDK sent for it, by rank."""
    gang = sorted(
        (i for i in fake.instances.values() if i["labels"]["multicloud-handle"] == handle.id),
        key=lambda i: i["name"],
    )
    return [
        (i, next(m["value"] for m in i["metadata"]["items"] if m["key"] == "startup-script"))
        for i in gang
    ]


def metadata(*, preempted: bool = False, extra: list[Answer] | None = None) -> list[Answer]:
    return [
        *(extra or []),
        Answer(r"/instance/preempted$", "TRUE" if preempted else "FALSE"),
        Answer(r"/instance/maintenance-event$", "NONE"),
        Answer(r"/project/project-id$", "fake-project"),
        Answer(r"/instance/zone$", "projects/123456/zones/us-central1-a"),
        Answer(r"/service-accounts/default/token$", '{"access_token":"ya29.t","expires_in":3599}'),
        Answer(r"/secrets/HF_TOKEN/versions/latest:access$", '{"payload": {"data": "czNjcjN0"}}'),
        Answer(r"secretmanager", exit=22),
    ]


def vm_answers(instance: dict[str, Any], **kw: Any) -> dict[str, list[Answer]]:
    name = instance["name"]
    fingerprint = json.dumps({"labelFingerprint": instance["labelFingerprint"]}, indent=2)
    curl = [
        Answer(r"/instance/name$", name),
        Answer(rf"/instances/{name}\?fields=labelFingerprint$", fingerprint),
        Answer(rf"/instances/{name}/setLabels$", "{}"),
    ]
    base = name.rsplit("-", 1)[0]
    return {
        "curl": metadata(extra=curl, **kw),
        "getent": [Answer(rf"^hosts {base}-0$", f"127.0.0.1       {base}-0\n")],
    }


def reports(node: NodeRun) -> list[tuple[str, str, Any]]:
    """The REST calls a node made with a body: ``(method, url, body)``."""
    out = []
    for argv in node.argv_of("curl"):
        if "-d" in argv:
            method = argv[argv.index("-X") + 1] if "-X" in argv else "POST"
            out.append((method, argv[-1], json.loads(argv[argv.index("-d") + 1])))
    return out


def replay(fake: FakeGCP, node: NodeRun) -> None:
    """Send what the node reported to the fake, as Google would receive it."""
    for method, url, body in reports(node):
        status, answer = fake.handle(method, url.removeprefix(COMPUTE).removeprefix(TPU), body)
        assert status == 200, answer


def test_a_two_node_gpu_gang_runs_with_the_contract_and_reports_back(
    fake: FakeGCP, tmp_path: Path
) -> None:
    provider = GCPProvider(regions=["us-central1"], **fake.options)
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    s = spec(torchrun_command(script), MASTER_PORT=str(free_port()))
    handle = launch(provider, find(provider, "a3-highgpu-8g"), s)
    vms = vm_programs(fake, handle)
    assert [i["name"] for i, _ in vms] == [f"{handle.id}-0", f"{handle.id}-1"]
    # One program for the gang; each node learns its rank from its own name.
    assert vms[0][1] == vms[1][1]
    nodes = run_gang(
        [program for _, program in vms],
        [vm_answers(instance) for instance, _ in vms],
        workdir=tmp_path / "gang",
        timeout=240,
    )
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        [container] = node.containers
        env = container.env
        assert (env["NODE_RANK"], env["MASTER_ADDR"]) == (str(node.index), "127.0.0.1")
        assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("2", "8", "16")
        flags = " ".join(container.flags)
        # Host networking (peers reach rank 0; NCCL advertises the host's address), host
        # IPC (not Docker's 64 MiB /dev/shm), every GPU, unlimited memlock.
        for flag in ("--network host", "--ipc host", "--gpus all", "--ulimit memlock=-1:-1"):
            assert flag in flags
        assert "/dev/infiniband" not in flags  # A3 High has no RDMA NICs
        assert node.halted
        [(method, url, body)] = reports(node)
        assert (method, url.rsplit("/", 1)[-1]) == ("POST", "setLabels")
        assert body["labels"]["multicloud-exit"] == "0"
        replay(fake, node)
    # The labels the nodes wrote (ownership kept, exit added) are what status reads.
    assert provider.status([handle])[handle.id].state is WorkloadState.SUCCEEDED
    assert provider.owned("inst-nodes")[0].job_id == "job-gcp-gang"


@pytest.mark.parametrize(
    ("rdma_subnetworks", "devices"),
    [((), False), (tuple(f"regions/r/subnetworks/rdma-{i}" for i in range(8)), True)],
    ids=["no-rdma-network", "rdma-network"],
)
def test_a3_ultra_gets_mrdma_nics_and_infiniband_devices_with_an_rdma_network(
    fake: FakeGCP, tmp_path: Path, rdma_subnetworks: Any, devices: bool
) -> None:
    subnets = tuple(rdma_subnetworks)
    provider = GCPProvider(regions=["us-central1"], rdma_subnetworks=subnets, **fake.options)
    offer = find(provider, "a3-ultragpu-8g")
    handle = launch(provider, offer, spec("true", nodes=1))
    [(instance, program)] = vm_programs(fake, handle)
    nics = instance["networkInterfaces"]
    assert nics[0]["nicType"] == "GVNIC"
    assert [(n["subnetwork"], n["nicType"]) for n in nics[1:]] == [(s, "MRDMA") for s in subnets]
    [node] = run_gang([program], [vm_answers(instance)], workdir=tmp_path, timeout=60)
    flags = " ".join(node.containers[0].flags)
    assert ("--device=/dev/infiniband" in flags) is devices
    assert ("--cap-add=IPC_LOCK" in flags) is devices
    assert "--ipc host" in flags and "--ulimit memlock=-1:-1" in flags


def test_a_reclaimed_node_reports_preempted_whatever_its_command_returned(
    fake: FakeGCP, tmp_path: Path
) -> None:
    provider = GCPProvider(regions=["us-central1"], **fake.options)
    handle = launch(
        provider,
        find(provider, "a3-highgpu-8g", spot=True),
        spec("exit 143", nodes=1, market=MarketKind.SPOT),
    )
    [(instance, program)] = vm_programs(fake, handle)
    answers = vm_answers(instance, preempted=True)
    [node] = run_gang([program], [answers], workdir=tmp_path, timeout=60)
    [(_, _, body)] = reports(node)
    assert body["labels"]["multicloud-exit"] == PREEMPTED
    replay(fake, node)
    assert provider.status([handle])[handle.id].state is WorkloadState.PREEMPTED


def test_a_secret_is_read_from_secret_manager_by_name_on_the_node(
    fake: FakeGCP, tmp_path: Path
) -> None:
    provider = GCPProvider(regions=["us-central1"], **fake.options)
    s = spec("true", nodes=1, secrets=("HF_TOKEN", "projects/other/secrets/wandb-key"))
    handle = launch(provider, find(provider, "g2-standard-4"), s)
    [(instance, program)] = vm_programs(fake, handle)
    assert "s3cr3t" not in program
    [node] = run_gang([program], [vm_answers(instance)], workdir=tmp_path, timeout=60)
    # HF_TOKEN is in the node's project; wandb-key's full path names another: unreadable.
    asked = [argv[-1] for argv in node.argv_of("curl") if "secretmanager" in argv[-1]]
    assert asked == [
        "https://secretmanager.googleapis.com/v1/projects/fake-project/secrets/HF_TOKEN/"
        "versions/latest:access",
        "https://secretmanager.googleapis.com/v1/projects/other/secrets/wandb-key/"
        "versions/latest:access",
    ]
    assert node.containers == []
    [(_, _, body)] = reports(node)
    assert body["labels"]["multicloud-exit"] == str(int(NodeExit.SECRET_UNREADABLE))


def test_a_two_host_tpu_slice_runs_one_program_per_worker(fake: FakeGCP, tmp_path: Path) -> None:
    provider = GCPProvider(regions=["us-central1"], **fake.options)
    offer = find(provider, "tpu-v5p-16")  # 8 chips: two TPU VM hosts of four
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    s = spec(torchrun_command(script), nodes=1, MASTER_PORT=str(free_port()))
    handle = launch(provider, offer, s)
    [(create)] = fake.calls_to("tpu.queuedResources.create")
    node_spec = create.body["tpu"]["nodeSpec"][0]["node"]
    assert node_spec["runtimeVersion"] == "v2-alpha-tpuv5"
    program = node_spec["metadata"]["startup-script"]
    endpoints = "unknown:unknown:127.0.0.1,unknown:unknown:127.0.0.2"

    def worker(rank: int) -> dict[str, list[Answer]]:
        return {
            "curl": metadata(
                extra=[
                    Answer(r"/attributes/agent-worker-number$", str(rank)),
                    Answer(r"/attributes/worker-network-endpoints$", endpoints),
                    Answer(rf"/nodes/{handle.id}\?updateMask=labels$", "{}"),
                ]
            )
        }

    nodes = run_gang(
        [program, program], [worker(0), worker(1)], workdir=tmp_path / "tpu", timeout=240
    )
    for node in nodes:
        assert node.returncode == 0, node.stderr
        assert "all-reduce ok" in node.stdout
        env = node.containers[0].env
        assert env["TPU_WORKER_ID"] == env["NODE_RANK"] == str(node.index)
        assert (env["MASTER_ADDR"], env["NNODES"], env["NPROC_PER_NODE"]) == ("127.0.0.1", "2", "4")
        assert "--privileged" in node.containers[0].flags
        assert not node.halted  # a TPU VM cannot stop itself; the scheduler deletes it
    # Worker 0 speaks for the slice.
    assert [len(reports(n)) for n in nodes] == [1, 0]
    for _ in range(4):
        provider.status([handle])  # the queued resource becomes ACTIVE, its node READY
    replay(fake, nodes[0])
    assert provider.status([handle])[handle.id].state is WorkloadState.SUCCEEDED
