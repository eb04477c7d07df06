"""The scheduling cycle (no Ray) over the real CoreWeave adapter and the fake API server.

The Scheduler plans against the node pools the adapter reads from the fake cluster, launches
Indexed Jobs through the kubernetes client, follows them with batched status calls, re-places
a job whose pods were reclaimed and fails one whose command failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_coreweave.testing import FakeKube, serve
from test_kubernetes_scheduler import Cycle  # the same cycle, another fleet

from multicloud.store import JobState
from multicloud.testing.builders import job


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Cycle, FakeKube]]:
    with serve() as kube:
        kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        kube.add_nodes(2, gpu_class=None, instance_type="gd-8xh200ib-i128", region="US-EAST-04")
        options = {**kube.options, "unschedulable_grace_s": 0.0}
        c = Cycle(tmp_path, {"cw": {"adapter": "coreweave", "options": options}})
        try:
            yield c, kube
        finally:
            c.close()


def _train(**fields: Any) -> Any:
    fields.setdefault("accelerator", "H100")
    return job("train", count=8, run={"image": "ghcr.io/acme/train:1",
                                      "command": "torchrun train.py"}, **fields)


def _live(kube: FakeKube) -> list[str]:
    return [
        j["metadata"]["name"]
        for j in kube.objects("jobs")
        if not any(c["type"] in ("Complete", "Failed") for c in j["status"]["conditions"])
    ]


def test_a_gang_runs_to_success_on_every_node(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(nodes=2), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live(kube)
    assert kube.launches[name] == 1 and kube.objects("rayjobs") == []
    assert len(kube.pods_of(name)) == 2
    kube.finish(name, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [(a.provider, a.region, a.outcome) for a in record.attempts] == [
        ("cw", "US-EAST-04", "succeeded")
    ]


def test_a_job_accepting_h100_or_h200_placed_on_h200_launches_h200(
    cycle: tuple[Cycle, FakeKube],
) -> None:
    c, kube = cycle
    for node in [n for n in kube.node_names() if n.startswith("h100")]:  # taken
        kube.add_pod(f"rival-{node}", node=node, gpus=8)
    ((job_id, _),) = c.scheduler.submit([(_train(accelerator=["H100", "H200"]), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live(kube)
    pod = kube.pods_of(name)[0]
    assert pod["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] == "gd-8xh200ib-i128"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MULTICLOUD_ACCELERATOR"] == "H200"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["rdma/ib"] == "1"


def test_reclaimed_pods_whose_command_exits_143_are_re_placed(
    cycle: tuple[Cycle, FakeKube],
) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(nodes=2), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (first,) = _live(kube)
    kube.preempt(first)  # DisruptionTarget, and the commands die with 143
    c.run_until(lambda: bool(_live(kube)) and _live(kube) != [first])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (second,) = _live(kube)
    labels = (kube.object("jobs", second) or {})["metadata"]["labels"]
    assert labels["multicloud.io/attempt"] == "2"
    kube.finish(second, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]


def test_a_command_that_exits_3_fails_the_job(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(nodes=2), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live(kube)
    kube.finish(name, 3)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [a.outcome for a in record.attempts] == ["failed"]
    assert "exit code 3" in c.store.events(job_id)[-1].reason


def test_succeeded_workloads_are_deleted_by_the_sweep(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live(kube)
    kube.finish(name, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    c.run_until(lambda: kube.objects("jobs") == [])
    assert kube.pods_of(name) == [] and kube.objects("services") == []
    assert kube.deletions == [("jobs", name, "Foreground")]
    assert c.scheduler.counters.orphans_terminated >= 1


def test_the_sweep_spares_a_live_workload(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    deadline = time.monotonic() + 0.5  # several sweeps (sweep_interval_s = 0.1)
    c.run_until(lambda: time.monotonic() > deadline)
    assert len(_live(kube)) == 1 and kube.deletions == []
