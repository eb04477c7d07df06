"""The scheduler service on Ray over the six real adapters, each pointed at its fake.

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
from six_fakes import CLOUDS, Clouds, serve_six
from typer.testing import CliRunner

from multicloud.cli import app
from multicloud.models import Fleet, Job
from multicloud.service.client import Client
from multicloud.service.config import ACTOR_NAME, ServiceConfig
from multicloud.service.control import start
from multicloud.testing.builders import job

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

RUN = {"image": "ghcr.io/acme/train:1", "command": "python train.py"}

# name → (job only that provider can take or that is cheapest there, its provider, region)
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
    # Only OCI sells MI300X: a two-node gang.
    "mi300x-gang": (
        job("mi300x-gang", accelerator="MI300X", count=8, nodes=2, run=RUN),
        "oci",
        "us-ashburn-1",
    ),
    # The lab's cluster is the cheapest H100 gang (six_fakes.LAB_PRICE_CARD); Kueue admits it.
    "lab-h100": (
        job("lab-h100", accelerator="H100", count=8, nodes=2, run=RUN),
        "kubernetes",
        "us-east-1",
    ),
}


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
    with serve_six(coreweave_nodes=1) as clouds:
        config = ServiceConfig.build(
            Fleet.model_validate(clouds.fleet_doc()),
            fleet_source="six-providers",
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
            # Stop the actor before the fakes stop and before the driver leaves.
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
        clouds.fake(last.provider).finish(str(last.handle), 0)
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
    assert clouds.azure.count("PUT", "virtualMachines.createOrUpdate") == 1
    # The finished Job itself may already be swept: count what the API server accepted.
    assert list(clouds.coreweave.launches.values()) == [1]
    assert sorted(clouds.oci.launches.values()) == [1, 1]  # one instance per node
    assert list(clouds.kubernetes.launches.values()) == [1]
    info = client.ping()
    assert (info["launches"], info["launch_errors"], info["cycle_errors"]) == (6, {}, 0)
