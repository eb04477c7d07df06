"""The six real adapters together, each behind its real SDK client and its in-package fake.

"Done when" lines of the adapter issues, end to end and without Ray:

- issue 4: a job file planned on a fleet of ``sim`` clouds is re-planned, unchanged, against
  the real AWS, GCP, Azure, CoreWeave and OCI adapters (``multicloud plan``, through the
  CLI); the generic Kubernetes cluster joins the real fleet only, since a cluster publishes
  no prices for a ``sim`` twin to read;
- issue 5: the fleet plans and runs through the scheduler: every provider gets a job only
  it can take or that is cheapest there, each runs to SUCCEEDED or FAILED through the fake's
  own workload controls, a capacity error on one cloud blocks that zone and the job is
  re-placed on another cloud, and a spot preemption is requeued and finished;
- issue 14: the fleet is six providers, OCI and a generic Kubernetes cluster running Kueue
  beside the four clouds, and each launch is seen exactly once by its fake.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from multicloud_coreweave.testing import TOKEN as KUBE_TOKEN
from multicloud_coreweave.testing import FakeKube
from multicloud_kubernetes.testing import FakeKube as FakeGPUCluster
from six_fakes import CLOUDS, REGIONS, Clouds, serve_six
from typer.testing import CliRunner

from multicloud import providers as registry
from multicloud.adapterkit import identity
from multicloud.cli import app
from multicloud.models import Fleet
from multicloud.provider import MarketKind, ResourceRequest
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import AttemptRecord, JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until

S = JobState
# The providers with a ``sim`` twin priced from the shipped catalog.
SIMULATED = tuple(name for name in CLOUDS if name != "kubernetes")

# How each provider spells the ownership labels on its workloads.
STYLES: dict[str, identity.LabelStyle] = {
    "aws": identity.AWS_TAGS,
    "gcp": identity.GCP_LABELS,
    "azure": identity.AZURE_TAGS,
    "coreweave": identity.KUBERNETES_LABELS,
    "oci": identity.OCI_TAGS,
    "kubernetes": identity.KUBERNETES_LABELS,
}

# One job only each cloud can take: a TPU slice only GCP sells, Trainium only AWS sells,
# MI300X only OCI sells (a two-node gang on one cluster network), and two H100 gangs pinned
# to Azure and CoreWeave. The file is never changed between the simulated and the real fleet.
JOBS_YAML = """\
jobs:
  - name: tpu-slice
    resources: {accelerator: TPU-v5e, count: 8}
    run: {image: ghcr.io/acme/jax:1, command: python train.py}
  - name: trainium
    resources: {accelerator: Trainium, count: 16}
    run: {image: ghcr.io/acme/neuron:1, command: python train.py}
  - name: nd-h100
    resources: {accelerator: H100, count: 8}
    placement: {providers: [azure]}
    run: {image: ghcr.io/acme/train:1, command: python train.py}
  - name: cw-h100
    resources: {accelerator: H100, count: 8}
    placement: {providers: [coreweave]}
    run: {image: ghcr.io/acme/train:1, command: python train.py}
  - name: mi300x-gang
    resources: {accelerator: MI300X, count: 8, nodes: 2}
    run: {image: rocm/pytorch:latest, command: torchrun train.py}
"""

# job name → (provider, region, instance type on the sim fleet, on the real fleet)
EXPECTED_PLAN: dict[str, tuple[str, str, str, str]] = {
    "tpu-slice": ("gcp", "us-central1", "tpu-v5litepod-8", "tpu-v5litepod-8"),
    "trainium": ("aws", "us-east-1", "trn1.32xlarge", "trn1.32xlarge"),
    "nd-h100": ("azure", "eastus", "Standard_ND96isr_H100_v5", "Standard_ND96isr_H100_v5"),
    # CoreWeave's real offers are the cluster's node pools, named by their GPU class.
    "cw-h100": ("coreweave", "US-EAST-04", "cw-hgx-h100-8x", "H100_NVLINK_80GB"),
    "mi300x-gang": ("oci", "us-ashburn-1", "BM.GPU.MI300X.8", "BM.GPU.MI300X.8"),
}

# Zone of the only a3-highgpu-8g pool left in the fake GCP (see `clouds`).
GCP_H100_ZONE = "us-central1-a"


@pytest.fixture(scope="module")
def clouds() -> Iterator[Clouds]:
    # Two CoreWeave 8×H100 nodes: room for two CoreWeave jobs at once.
    with serve_six(coreweave_nodes=2) as fakes:
        # GCP's cheapest H100 machine listed in one zone only, so that a stock-out there
        # leaves GCP without a comparable offer and the job must move to another cloud.
        for zone, types in fakes.gcp.machine_types.items():
            if zone.startswith("us-central1-") and zone != GCP_H100_ZONE:
                types.discard("a3-highgpu-8g")
        yield fakes


# ---------------------------------------------------------------------- same job file


def _plan_json(jobs_file: Path, fleet_file: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["plan", str(jobs_file), "--fleet", str(fleet_file), "--json"])
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads(result.output)
    return plan


def test_same_job_file_plans_on_sim_then_on_the_real_adapters(
    clouds: Clouds, tmp_path: Path
) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(JOBS_YAML)
    sim_fleet = tmp_path / "sim-fleet.yaml"
    sim_fleet.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    name: {"adapter": "sim", "catalog": "builtin", "regions": REGIONS[name]}
                    for name in SIMULATED
                }
            }
        )
    )
    real_fleet = tmp_path / "fleet.yaml"
    real_fleet.write_text(yaml.safe_dump(clouds.fleet_doc()))

    plans = {"sim": _plan_json(jobs_file, sim_fleet), "real": _plan_json(jobs_file, real_fleet)}
    assert jobs_file.read_text() == JOBS_YAML  # planned twice, never changed
    for which, column in (("sim", 2), ("real", 3)):
        plan = plans[which]
        assert plan["unplaced"] == [], f"{which}: {plan['unplaced']}"
        got = {
            p["job"]: (p["provider"], p["region"], p["instance_type"]) for p in plan["placements"]
        }
        want = {name: (row[0], row[1], row[column]) for name, row in EXPECTED_PLAN.items()}
        assert got == want, which

    # Every real placement is an offer the adapter built from its fake's live answers...
    fleet = Fleet.model_validate(clouds.fleet_doc())
    live = {
        name: {
            (o.provider, o.region, o.zone, o.instance_type)
            for o in registry.from_fleet(fleet, name).offers(ResourceRequest())
        }
        for name in CLOUDS
    }
    for p in plans["real"]["placements"]:
        key = (p["provider"], p["region"], p["zone"], p["instance_type"])
        assert key in live[p["provider"]], key
    # ...and each one is something the fake cloud itself lists.
    by_job = {p["job"]: p for p in plans["real"]["placements"]}
    tpu = by_job["tpu-slice"]
    assert "v5litepod-8" in clouds.gcp.tpu_types[tpu["zone"]]
    trn = clouds.aws.client("ec2", "us-east-1").describe_instance_type_offerings(
        Filters=[{"Name": "instance-type", "Values": ["trn1.32xlarge"]}]
    )
    assert trn["InstanceTypeOfferings"], "moto lists no trn1.32xlarge in us-east-1"
    nd = by_job["nd-h100"]
    skus = _get(
        f"{clouds.azure.base_url}/subscriptions/{clouds.azure.subscription_id}/providers/"
        f"Microsoft.Compute/skus?$filter=location eq '{nd['region']}'",
        token="fake",
    )["value"]
    assert [s["restrictions"] for s in skus if s["name"] == nd["instance_type"]] == [[]]
    nodes = _get(f"{clouds.coreweave.url}/api/v1/nodes", token=KUBE_TOKEN)["items"]
    classes = {n["metadata"]["labels"]["gpu.nvidia.com/class"] for n in nodes}
    assert by_job["cw-h100"]["instance_type"] in classes
    mi300x = by_job["mi300x-gang"]
    assert mi300x["nodes"] == 2 and mi300x["instance_type"] in clouds.oci.shapes[mi300x["zone"]]


def _get(url: str, *, token: str) -> Any:
    """GET a fake's own REST API (127.0.0.1 only), as its cloud's console would read it."""
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(
        url.replace(" ", "%20"), headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


# ---------------------------------------------------------------------- the scheduler


class Cycle:
    """A scheduler over a fresh SQLite store and the six adapters of one fleet document.

    Each test gets its own store, hence its own install id: the orphan sweep of one test
    never touches another test's workloads in the shared fakes.
    """

    def __init__(self, tmp_path: Path, clouds: Clouds) -> None:
        self.clouds = clouds
        self.fleet = Fleet.model_validate(clouds.fleet_doc())
        self.effects = InlineEffects(
            {name: registry.from_fleet(self.fleet, name) for name in self.fleet.providers}
        )
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        # A blocked scope must stay blocked throughout the test.
        settings = quick_settings(sweep_interval_s=0.5, blocked_ttl_s=300.0)
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=settings)

    def submit(self, *jobs: Any) -> dict[str, str]:
        """Submit jobs; return name → job id."""
        ids = self.scheduler.submit([(j, None) for j in jobs])
        return {j.name: job_id for j, (job_id, _) in zip(jobs, ids, strict=True)}

    def run_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.005)

    def state(self, job_id: str) -> JobState:
        return self.store.get(job_id).state

    def last(self, job_id: str) -> AttemptRecord:
        return self.store.get(job_id).attempts[-1]

    def running(self, job_id: str, attempt: int = 1) -> Callable[[], bool]:
        def check() -> bool:
            record = self.store.get(job_id)
            # A job that ended while we wait for it to run will never run: say why now.
            assert not record.state.is_terminal, self.store.events(job_id)[-1].reason
            return record.state is S.RUNNING and record.attempts[-1].attempt == attempt

        return check

    def close(self) -> None:
        self.effects.close()
        self.store.close()


@pytest.fixture
def cycle(clouds: Clouds, tmp_path: Path) -> Iterator[Cycle]:
    c = Cycle(tmp_path, clouds)
    try:
        yield c
    finally:
        c.close()


def finish(clouds: Clouds, attempt: AttemptRecord, exit_code: int) -> None:
    """End a workload the way its cloud reports it, through that fake's own control."""
    assert attempt.handle is not None
    clouds.fake(attempt.provider).finish(attempt.handle.id, exit_code)


def ownership(clouds: Clouds, attempt: AttemptRecord) -> identity.Ownership:
    """Read back, from the cloud side, the ownership labels of a workload (of its node 0)."""
    assert attempt.handle is not None
    handle = attempt.handle.id
    labels: dict[str, str]
    if attempt.provider == "aws":
        ec2 = clouds.aws.client("ec2", attempt.region)
        answer = ec2.describe_instances(InstanceIds=handle.split(",")[:1])
        (instance,) = [i for r in answer["Reservations"] for i in r["Instances"]]
        labels = {t["Key"]: t["Value"] for t in instance["Tags"]}
    elif attempt.provider == "gcp":
        # A TPU slice: its node (created by the queued resource) carries the labels.
        (node,) = [n for (_, node_id), n in clouds.gcp.tpu_nodes.items() if node_id == handle]
        labels = node["labels"]
    elif attempt.provider == "azure":
        labels = clouds.azure.vm(f"{handle}-0")["tags"]
    elif attempt.provider == "oci":
        labels = clouds.oci.members(handle)[0]["freeformTags"]
    else:
        kube: FakeKube | FakeGPUCluster = getattr(clouds, attempt.provider)
        obj = kube.object("jobs", handle)
        assert obj is not None, f"no Kubernetes Job {handle}"
        labels = obj["metadata"]["labels"]
    found = identity.Ownership.parse(labels, STYLES[attempt.provider])
    assert found is not None, f"{attempt.provider} {handle} carries no ownership: {labels}"
    return found


def launch_keys(attempt: AttemptRecord) -> list[str]:
    """What one launch adds to its fake's ``launches`` counter.

    AWS counts client tokens (the request id); Azure and OCI count their VMs or instances,
    one per node, named after the handle; the Kubernetes fakes count their Jobs; GCP counts
    its create operations.
    """
    assert attempt.handle is not None
    handle, nodes = attempt.handle.id, attempt.nodes
    if attempt.provider == "aws":
        return [attempt.request_id]
    if attempt.provider == "gcp":
        tpu = attempt.place.offer.instance_type.startswith("tpu-")
        return ["tpu.queuedResources.create"] if tpu else ["instances.insert"] * nodes
    if attempt.provider in ("azure", "oci"):
        return [f"{handle}-{rank}" for rank in range(nodes)]
    return [handle]


def _run(image: str = "ghcr.io/acme/train:1") -> dict[str, str]:
    return {"image": image, "command": "python train.py"}


# name → (job, exit code the fake reports, final state, [(provider, region, outcome)] per attempt)
MIX: dict[str, tuple[Any, int, JobState, list[tuple[str, str, str]]]] = {
    "tpu-slice": (
        job("tpu-slice", accelerator="TPU-v5e", count=8, run=_run("ghcr.io/acme/jax:1")),
        0,
        S.SUCCEEDED,
        [("gcp", "us-central1", "succeeded")],
    ),
    "trainium": (
        job("trainium", accelerator="Trainium", count=16, run=_run("ghcr.io/acme/neuron:1")),
        0,
        S.SUCCEEDED,
        [("aws", "us-east-1", "succeeded")],
    ),
    "nd-h100": (
        job("nd-h100", accelerator="H100", count=8, providers=["azure"], run=_run()),
        3,  # the workload exits non-zero: FAILED, not retried
        S.FAILED,
        [("azure", "eastus", "failed")],
    ),
    "cw-h100": (
        job("cw-h100", accelerator="H100", count=8, providers=["coreweave"], run=_run()),
        0,
        S.SUCCEEDED,
        [("coreweave", "US-EAST-04", "succeeded")],
    ),
    # Only OCI sells MI300X: a two-node gang of bare-metal nodes on one cluster network.
    "mi300x-gang": (
        job("mi300x-gang", accelerator="MI300X", count=8, nodes=2, run=_run("rocm/pytorch:1")),
        0,
        S.SUCCEEDED,
        [("oci", "us-ashburn-1", "succeeded")],
    ),
    # Free to go anywhere: the lab's cluster is the cheapest H100 gang, and Kueue admits it.
    "lab-h100": (
        job("lab-h100", accelerator="H100", count=8, nodes=2, run=_run()),
        0,
        S.SUCCEEDED,
        [("kubernetes", "us-east-1", "succeeded")],
    ),
    # GCP is the cheapest H100 of these two (a3-highgpu-8g at $43/h against CoreWeave's
    # $49/h); its only zone answers ZONE_RESOURCE_POOL_EXHAUSTED, so the job moves on.
    "stockout": (
        job("stockout", accelerator="H100", count=8, providers=["gcp", "coreweave"], run=_run()),
        0,
        S.SUCCEEDED,
        [("gcp", "us-central1", "capacity"), ("coreweave", "US-EAST-04", "succeeded")],
    ),
}


def test_six_provider_mix_runs_through_the_scheduler(cycle: Cycle, clouds: Clouds) -> None:
    before = {name: Counter(clouds.fake(name).launches) for name in CLOUDS}
    clouds.gcp.fail(
        "instances.insert",
        in_operation=True,
        status=503,
        reason="ZONE_RESOURCE_POOL_EXHAUSTED",
        message="The zone does not have enough resources available to fulfil the request",
    )
    ids = cycle.submit(*(spec for spec, _, _, _ in MIX.values()))
    last_attempt = {name: len(want) for name, (_, _, _, want) in MIX.items()}
    cycle.run_until(
        lambda: all(cycle.running(ids[n], last_attempt[n])() for n in MIX), timeout=60.0
    )

    # Every job runs where only that provider could take it (or where it is cheapest),
    # marked as this install's, this attempt's and this request's on the provider's side.
    install = cycle.scheduler.install_id
    for name in MIX:
        attempt = cycle.last(ids[name])
        style = STYLES[attempt.provider]
        marks = ownership(clouds, attempt)
        assert (marks.job, marks.attempt, marks.install, marks.request, marks.fleet) == (
            style.value(ids[name]),
            attempt.attempt,
            style.value(install),
            style.value(attempt.request_id),
            style.value(attempt.provider),
        ), name
    lab = cycle.last(ids["lab-h100"]).handle
    assert lab is not None and len(clouds.kubernetes.pods_of(lab.id)) == 2  # the whole gang

    # The stock-out blocked exactly that zone, and no second insert went there: GCP was
    # tried once, then the job went to CoreWeave.
    scope = f"gcp/us-central1/{GCP_H100_ZONE}"
    assert scope in cycle.scheduler.stats()["blocked"]
    inserts = clouds.gcp.calls_to("instances.insert")
    assert [c.path.split("/zones/")[1].split("/")[0] for c in inserts] == [GCP_H100_ZONE]
    first = cycle.store.get(ids["stockout"]).attempts[0]
    assert (first.zone, first.outcome, first.handle) == (GCP_H100_ZONE, "capacity", None)

    for name, (_, code, _, _) in MIX.items():
        finish(clouds, cycle.last(ids[name]), code)
    cycle.run_until(lambda: all(cycle.state(i).is_terminal for i in ids.values()))

    for name, (_, _, final, want) in MIX.items():
        record = cycle.store.get(ids[name])
        assert record.state is final, name
        assert [(a.provider, a.region, a.outcome) for a in record.attempts] == want, name
    assert "exit code 3" in cycle.store.events(ids["nd-h100"])[-1].reason
    stats = cycle.scheduler.stats()
    assert stats["launch_errors"] == {"capacity": 1}
    assert stats["cycle_errors"] == 0

    # Every provider got launches, and each fake saw each of them exactly once: what its
    # counter gained is one entry per launched workload (or node), never a repeat.
    launched = [a for i in ids.values() for a in cycle.store.get(i).attempts if a.handle]
    for name in CLOUDS:
        keys = Counter(k for a in launched if a.provider == name for k in launch_keys(a))
        gained = clouds.fake(name).launches - before[name]
        assert keys and gained == keys, (name, gained, keys)


def test_spot_preemption_is_requeued_and_finished(cycle: Cycle, clouds: Clouds) -> None:
    spot = job(
        "spot-h100",
        accelerator="H100",
        count=8,
        providers=["aws"],
        market="spot",
        run={**_run(), "checkpoint": "s3://acme-ckpt/spot/"},
    )
    ids = cycle.submit(spot)
    job_id = ids["spot-h100"]
    cycle.run_until(cycle.running(job_id, 1))
    first = cycle.last(job_id)
    assert (first.provider, first.market) == ("aws", MarketKind.SPOT)
    # Regression: the scheduler used to hand adapters an offer without its spot price, and
    # AWS (like Azure) refused every spot launch as invalid, failing the job outright.
    assert cycle.scheduler.stats()["launch_errors"] == {}
    (instance,) = clouds.aws.calls("RunInstances")[-1:]
    assert instance["InstanceMarketOptions.MarketType"] == "spot"
    # EC2 reclaims the spot capacity: the scheduler sees PREEMPTED and launches attempt 2.
    assert first.handle is not None
    clouds.aws.preempt(first.handle.id)
    cycle.run_until(cycle.running(job_id, 2))
    second = cycle.last(job_id)
    assert second.handle != first.handle
    assert ownership(clouds, second).attempt == 2
    finish(clouds, second, 0)
    cycle.run_until(lambda: cycle.state(job_id).is_terminal)

    record = cycle.store.get(job_id)
    assert record.state is S.SUCCEEDED
    assert [(a.provider, a.market, a.outcome) for a in record.attempts] == [
        ("aws", MarketKind.SPOT, "preempted"),
        ("aws", MarketKind.SPOT, "succeeded"),
    ]
    states = [e.to_state.value for e in cycle.store.events(job_id)]
    assert states.count("running") == 2 and "preempted" in states
    assert cycle.scheduler.stats()["preemptions"] == 1
