"""A gang really runs on Kubernetes: the two pods of an Indexed Job, as the SDK sent them.

Run on a generic GPU cluster (with Kueue admitting the gang) and on CoreWeave's preset.

There is no boot script on Kubernetes: the pod spec is the node program. A two-node gang is
launched through the adapter against the fake API server; each pod's environment is
resolved as the kubelet resolves it (downward API for the completion index, the Secret for
``HF_TOKEN``) and must equal what the VM node program gives a container (rank, rank 0,
``NNODES``, ``WORLD_SIZE``, ...). Then both pods' commands run here with exactly that
environment — rank 0's DNS name, which the fake's cluster DNS resolves to pod 0, mapped to
127.0.0.1 by the test's stand-in only — and a real torchrun gloo all-reduce completes.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_coreweave import CoreWeaveProvider
from multicloud_coreweave.testing import serve as serve_coreweave
from multicloud_kubernetes import KubernetesProvider
from multicloud_kubernetes.testing import FakeCluster, FakeKube, serve

from multicloud.adapterkit import Binding, NodeShape, render_node_program
from multicloud.provider import Handle, LaunchSpec, Offer, ResourceRequest
from multicloud.testing.nodes import (
    ALLREDUCE_PY,
    Answer,
    free_port,
    gang_spec,
    run_gang,
    torchrun_command,
)

# A made-up VM binding: the node program as any VM cloud renders it, for comparison.
VM = Binding(
    cloud="vm",
    prelude='md() { curl -sf "http://metadata.test/$1"; }',
    rank="md rank",
    master="md master",
    secret='curl -sf "http://metadata.test/secret/$1"',
    reclaimed="md reclaimed >/dev/null",
    report='curl -sf -X PUT -d "$1" http://metadata.test/report',
)
# What Kubernetes itself adds to an Indexed Job's pods (not part of the node contract).
K8S_ONLY = {"JOB_COMPLETION_INDEX"}
# Rank 0 is an address on a VM, a DNS name on Kubernetes: same variable, other kind of value.
ADDRESS = {"MASTER_ADDR", "PET_MASTER_ADDR"}


@pytest.fixture(params=["kubernetes", "coreweave"])
def kube(request: pytest.FixtureRequest) -> Iterator[FakeCluster]:
    if request.param == "coreweave":
        with serve_coreweave() as k:
            k.add_nodes(2, gpu_class=None, instance_type="gd-8xh100ib-i128",
                        region="US-EAST-04")
            k.add_secret("hf-token", {"HF_TOKEN": "s3cr3t"})
            yield k
        return
    with serve(kueue="v1beta2") as k:
        k.add_nodes(2, rdma=True)
        k.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16", "rdma/ib": "2"})
        k.kueue.add_local_queue("team", "gpus")
        k.add_secret("hf-token", {"HF_TOKEN": "s3cr3t"})
        yield k


def _provider(kube: FakeCluster) -> KubernetesProvider:
    if isinstance(kube, FakeKube):
        return KubernetesProvider(**kube.options, price_card={"H100": 40.0}, local_queue="team")
    return CoreWeaveProvider(**kube.options)


def _gang(kube: FakeCluster, command: str) -> tuple[KubernetesProvider, Offer, LaunchSpec,
                                                     Handle]:
    provider = _provider(kube)
    (offer,) = provider.offers(ResourceRequest())
    spec = gang_spec(command, job_name="allreduce", image="ghcr.io/acme/trainer:1",
                     env={"MASTER_PORT": str(free_port())}, secrets=("HF_TOKEN",))
    return provider, offer, spec, provider.launch(offer, spec, request_id="req-gang")


def test_the_pods_get_the_node_contracts_environment(kube: FakeCluster, tmp_path: Path) -> None:
    _, offer, spec, handle = _gang(kube, "true")
    pods = kube.pods_of(handle.id)
    assert len(pods) == 2
    if isinstance(kube, FakeKube):  # submitted through the LocalQueue, admitted by Kueue
        workload = kube.kueue.workload(handle.id) or {}
        assert {c["type"] for c in workload["status"]["conditions"] if c["status"] == "True"} == {
            "QuotaReserved", "Admitted"}
    # Each pod is the Job's template, exactly as the SDK sent it.
    sent = (kube.object("jobs", handle.id) or {})["spec"]["template"]["spec"]["containers"][0]
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert [e for e in container["env"] if e["name"] not in K8S_ONLY] == sent["env"]
        assert container["resources"] == sent["resources"] == {
            "limits": {"nvidia.com/gpu": "8", "rdma/ib": "1"},
            "requests": {"nvidia.com/gpu": "8", "rdma/ib": "1"},
        }
        assert container["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}
        assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
        assert pod["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]

    # The VM node program for the same gang, run with stand-ins: what its containers get.
    program = render_node_program(spec, offer, "req-gang", VM,
                                  shape=NodeShape.of(offer, rdma=True))

    def answers(rank: int) -> dict[str, list[Answer]]:
        return {"curl": [Answer(r"/rank$", str(rank)), Answer(r"/master$", "10.0.0.1"),
                         Answer(r"/reclaimed$", exit=22), Answer(r"-X PUT"),
                         Answer(r"/secret/HF_TOKEN$", "s3cr3t")]}

    vms = run_gang([program, program], [answers(0), answers(1)], workdir=tmp_path, timeout=60)
    for rank, (pod, vm) in enumerate(zip(pods, vms, strict=True)):
        env = kube.environment(pod)
        (container,) = vm.containers
        assert set(env) - K8S_ONLY == set(container.env)
        for name, value in container.env.items():
            if name not in ADDRESS:
                assert env[name] == value, name
        assert env["NODE_RANK"] == env["PET_NODE_RANK"] == env["JOB_COMPLETION_INDEX"] == str(rank)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{handle.id}-0.{handle.id}"
        assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("2", "8", "16")


def _pod_program(kube: FakeCluster, pod: dict[str, Any], rank0: str) -> str:
    """Run a pod's container command on this machine with the kubelet's environment."""
    env = kube.environment(pod)
    # Cluster DNS says the name is pod 0; pod 0 runs on this machine: 127.0.0.1.
    assert kube.resolve(env["MASTER_ADDR"]) == rank0
    env = {k: ("127.0.0.1" if k in ADDRESS else v) for k, v in env.items()}
    base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"}
    words = [f"{k}={v}" for k, v in {**base, **env}.items()]
    return "exec env -i " + shlex.join([*words, *pod["spec"]["containers"][0]["command"]])


def test_a_two_pod_gang_all_reduces_from_that_environment(
    kube: FakeCluster, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE_PY)
    _, _, _, handle = _gang(kube, torchrun_command(script))
    pods = kube.pods_of(handle.id)
    rank0 = pods[0]["metadata"]["name"]
    programs = [_pod_program(kube, pod, rank0) for pod in pods]
    nodes = run_gang(programs, [{}, {}], workdir=tmp_path / "gang", timeout=240)
    for rank, node in enumerate(nodes):
        assert node.returncode == 0, node.stderr
        assert f"all-reduce ok: rank {rank} of 2, sum 3" in node.stdout
