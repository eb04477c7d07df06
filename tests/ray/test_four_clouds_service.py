"""The scheduler service on Ray over the four real adapters, each pointed at its fake.

The fakes run in this test process on 127.0.0.1; the scheduler actor and the launcher
actors that carry its launches run in other processes and reach the fakes through the
fleet's adapter options. The workloads are then driven to their end through the fakes' own
controls, and ``multicloud status --json`` shows each job on its cloud.

Nothing else reaches those processes: AWS credentials too travel as an option (the path of
a shared credentials file the fake wrote, and its profile), never through the environment.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multicloud_aws.testing import FakeAWS
from multicloud_aws.testing import serve as serve_aws
from multicloud_azure.testing import FakeArm
from multicloud_azure.testing import serve as serve_azure
from multicloud_coreweave.testing import FakeKube
from multicloud_coreweave.testing import serve as serve_coreweave
from multicloud_gcp.testing import FakeGCP
from multicloud_gcp.testing import serve as serve_gcp
from typer.testing import CliRunner

from multicloud.cli import app
from multicloud.models import Fleet, Job
from multicloud.service.client import Client, start
from multicloud.service.config import ACTOR_NAME, ServiceConfig
from multicloud.testing.builders import job

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

CLOUDS = ("aws", "gcp", "azure", "coreweave")
REGIONS: dict[str, list[str]] = {
    "aws": ["us-east-1"],
    "gcp": ["us-central1"],
    "azure": ["eastus"],
    "coreweave": ["US-EAST-04"],
}
RUN = {"image": "ghcr.io/acme/train:1", "command": "python train.py"}

# name → (job only that cloud can take, its provider, its region)
JOBS: dict[str, tuple[Job, str, str]] = {
    "tpu-slice": (job("tpu-slice", accelerator="TPU-v5e", count=8, run=RUN), "gcp", "us-central1"),
    "trainium": (job("trainium", accelerator="Trainium", count=16, run=RUN), "aws", "us-east-1"),
    "nd-h100": (
        job("nd-h100", accelerator="H100", count=8, providers=["azure"], run=RUN),
        "azure",
        "eastus",
    ),
    "cw-h100": (
        job("cw-h100", accelerator="H100", count=8, providers=["coreweave"], run=RUN),
        "coreweave",
        "US-EAST-04",
    ),
}


@dataclass
class Clouds:
    """The four fakes, serving on 127.0.0.1 in this process."""

    aws: FakeAWS
    gcp: FakeGCP
    azure: FakeArm
    coreweave: FakeKube

    def fleet_doc(self) -> dict[str, Any]:
        options: dict[str, dict[str, Any]] = {
            "aws": self.aws.options,
            "gcp": self.gcp.options,
            "azure": self.azure.options,
            "coreweave": {**self.coreweave.options, "unschedulable_grace_s": 0.0},
        }
        return {
            "providers": {
                name: {"adapter": name, "regions": REGIONS[name], "options": options[name]}
                for name in CLOUDS
            }
        }

    def finish(self, provider: str, region: str, handle: str) -> None:
        """End a workload with exit code 0, as its cloud would report it."""
        if provider == "aws":
            self.aws.finish(region, handle.split(","), exit_code=0)
        elif provider == "gcp":
            self.gcp.finish(handle, 0)
        elif provider == "azure":
            for vm in [n for n in self.azure.vm_names() if n.startswith(f"{handle}-")]:
                self.azure.finish(vm, 0)
        else:
            self.coreweave.succeed(handle)


@dataclass
class Running:
    clouds: Clouds
    client: Client
    namespace: str
    address: str
    config: ServiceConfig


@pytest.fixture
def service(cluster: Any, tmp_path: Path) -> Iterator[Running]:
    namespace = f"mc-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        clouds = Clouds(
            aws=stack.enter_context(serve_aws()),
            gcp=stack.enter_context(serve_gcp()),
            azure=stack.enter_context(serve_azure()),
            coreweave=stack.enter_context(serve_coreweave()),
        )
        clouds.coreweave.add_nodes(1, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        config = ServiceConfig.build(
            Fleet.model_validate(clouds.fleet_doc()),
            fleet_source="four-clouds",
            store_url=f"sqlite:///{tmp_path / 'store.db'}",
            sim_state=str(tmp_path / "sim.jsonl"),
            local_logs=str(tmp_path / "logs"),
            settings={
                "status_interval_s": 0.1,
                "replan_interval_s": 0.2,
                "sweep_interval_s": 1.0,
                "retry_backoff_s": 0.05,
                "blocked_ttl_s": 1.0,
            },
            # Launches and terminations in launcher actors: the cross-process path.
            launcher="actors",
        )
        try:
            start(config, address=cluster.address, namespace=namespace, ready_timeout=60)
            actor = ray.get_actor(ACTOR_NAME, namespace=namespace)
            yield Running(clouds, Client(actor), namespace, cluster.address, config)
        finally:
            # Stop the actor before the fakes and before the driver leaves (ExitStack).
            with contextlib.suppress(ValueError):
                actor = ray.get_actor(ACTOR_NAME, namespace=namespace)
                with contextlib.suppress(Exception):
                    ray.get(actor.shutdown.remote(), timeout=10)
                ray.kill(actor, no_restart=True)


def _until(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_one_job_per_cloud_runs_to_success_through_the_service(service: Running) -> None:
    client, clouds = service.client, service.clouds
    ids = dict(zip(JOBS, client.submit_many([spec for spec, _, _ in JOBS.values()]), strict=True))

    def all_in(states: set[str]) -> Callable[[], bool]:
        def check() -> bool:
            now = client.states(list(ids.values()))
            bad = {i: s for i, s in now.items() if s in ("failed", "cancelled")}
            assert not bad, [client.explain(i).events[-1].reason for i in bad]
            return set(now.values()) <= states

        return check

    _until("every job to run", all_in({"running"}), timeout=60)
    for job_id in ids.values():
        (view,) = client.status(job_id)
        last = view.attempts[-1]
        clouds.finish(last.provider, last.region, str(last.handle))
    _until("every job to succeed", all_in({"succeeded"}), timeout=30)

    # What `multicloud status --json` prints, through the CLI itself.
    result = CliRunner().invoke(
        app,
        ["status", "--json", "--address", service.address, "--namespace", service.namespace],
    )
    assert result.exit_code == 0, result.output
    jobs = {j["name"]: j for j in json.loads(result.output)["jobs"]}
    assert set(jobs) == set(JOBS)
    for name, (_, provider, region) in JOBS.items():
        view = jobs[name]
        assert (view["state"], view["provider"], view["region"]) == ("succeeded", provider, region)
        assert [(a["provider"], a["outcome"]) for a in view["attempts"]] == [
            (provider, "succeeded")
        ]
        assert view["attempts"][0]["handle"]
    assert {j["provider"] for j in jobs.values()} == set(CLOUDS)

    # Each launch, sent from a launcher actor in another process, reached its fake.
    assert len(clouds.aws.calls("RunInstances")) == 1
    assert len(clouds.gcp.calls_to("tpu.queuedResources.create")) == 1
    assert clouds.azure.count("PUT", "vm_put") == 1
    assert len(clouds.coreweave.objects("jobs")) == 1
    info = client.ping()
    assert (info["launches"], info["launch_errors"], info["cycle_errors"]) == (4, {}, 0)
