"""The scheduling cycle (no Ray) over the real OCI adapter and the fake OCI REST server.

A spot V100 job lands on a preemptible VM shape; OCI reclaims the node while its command is
killed (exit 143): the attempt reads PREEMPTED and the job is re-placed, then succeeds. A job
whose command exits 3 reads FAILED and is not re-placed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from multicloud_oci.testing import FakeOCI, serve

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until

Cycle = tuple[Scheduler, Store, FakeOCI]


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[Cycle]:
    """A scheduler over a fresh SQLite store and one OCI fleet entry on the fake."""
    with serve() as fake:
        entry = {"adapter": "oci", "regions": ["us-ashburn-1"], "options": fake.options}
        fleet = Fleet.model_validate({"providers": {"oci": entry}})
        effects = InlineEffects({"oci": registry.from_fleet(fleet, "oci")})
        store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            yield Scheduler(store, fleet, effects, settings=quick_settings()), store, fake
        finally:
            effects.close()
            store.close()


def _until(scheduler: Scheduler, done: Callable[[], bool]) -> None:
    run_until(scheduler, done, timeout=15.0, pause=0.005)


def _live(fake: FakeOCI) -> list[str]:
    """Base names of the launches with a live instance."""
    return sorted({i["displayName"].rsplit("-", 1)[0] for i in fake.instances.values()
                   if i["lifecycleState"] not in ("TERMINATING", "TERMINATED")})


def test_a_reclaimed_spot_node_is_re_placed_and_finishes(cycle: Cycle) -> None:
    scheduler, store, fake = cycle
    spot = job("spot", accelerator="V100", count=1, market="spot",
               run={"image": "ghcr.io/acme/train:1", "command": "python train.py"})
    ((job_id, _),) = scheduler.submit([(spot, None)])
    _until(scheduler, lambda: store.get(job_id).state is JobState.RUNNING)
    (first,) = _live(fake)
    [inst] = fake.members(first)
    assert inst["shape"] == "VM.GPU3.1" and inst["preemptibleInstanceConfig"] is not None
    fake.preempt(first)
    fake.finish(first, 143)  # the container was killed; the node reports "preempted"
    _until(scheduler, lambda: bool(_live(fake)) and _live(fake) != [first])
    (second,) = _live(fake)
    assert fake.members(second)[0]["freeformTags"]["multicloud-attempt"] == "2"
    fake.finish(second, 0)
    _until(scheduler, lambda: store.get(job_id).state.is_terminal)
    record = store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert sum(fake.launches.values()) == 2  # each launch seen exactly once


def test_a_command_that_exits_3_fails_the_job(cycle: Cycle) -> None:
    scheduler, store, fake = cycle
    train = job("train", accelerator="H100", count=8, nodes=2,
                run={"image": "ghcr.io/acme/train:1", "command": "torchrun train.py"})
    ((job_id, _),) = scheduler.submit([(train, None)])
    _until(scheduler, lambda: store.get(job_id).state is JobState.RUNNING)
    (name,) = _live(fake)
    fake.finish(name, 3)
    _until(scheduler, lambda: store.get(job_id).state.is_terminal)
    record = store.get(job_id)
    assert record.state is JobState.FAILED
    assert [(a.outcome, a.nodes, a.instance_type) for a in record.attempts] == [
        ("failed", 2, "BM.GPU.H100.8")
    ]
