"""Malformed jobs through ``Client.submit``: a typed error naming the field, nothing queued.

The same generated bad documents as the command line's test
(``multicloud.testing.badinput``), sent the real way: through the client, over Ray, to a
scheduler actor that validates them against its fleet. Every one must come back as a
``SpecError`` (not Ray's wrapper) whose problems name ``jobs[i]`` and the field, with no
traceback in its text, and the store must hold no job afterwards. One scheduler serves the
whole module, so each example costs one actor call.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multicloud.errors import SpecError
from multicloud.models import Fleet
from multicloud.service.client import Client
from multicloud.service.config import ServiceConfig
from multicloud.service.control import start
from multicloud.testing.badinput import FLEET, JOB, mutations

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def client(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A scheduler over the bad-input tests' fleet, on a store of its own."""
    tmp: Path = tmp_path_factory.mktemp("bad-input")
    namespace = f"mc-{uuid.uuid4().hex[:8]}"
    config = ServiceConfig.build(
        Fleet.model_validate({**FLEET, "time_scale": 0.05}),
        store_url=f"sqlite:///{tmp / 'store.db'}",
        sim_state=str(tmp / "sim.jsonl"),
        local_logs=str(tmp / "logs"),
    )
    start(config, address=cluster.address, namespace=namespace)
    actor = ray.get_actor("scheduler", namespace=namespace)
    try:
        yield Client(actor)
    finally:
        ray.kill(actor, no_restart=True)


def _refused(client: Client, docs: list[Any]) -> SpecError:
    """Submit ``docs``; return the error, having checked it is typed and nothing was queued."""
    with pytest.raises(SpecError) as caught:
        client.submit_many(docs)
    err = caught.value
    # The scheduler's own error, not Ray's wrapper with its remote traceback.
    assert type(err) is SpecError
    assert err.source == "submission"
    assert "Traceback" not in str(err) and "Traceback" not in err.render()
    assert client.states() == {}, "a refused submission queued a job"
    return err


@PROPERTY
@given(mutations("job"))
def test_a_malformed_job_is_refused_naming_the_field(
    client: Client, case: tuple[dict[str, Any], str]
) -> None:
    doc, field = case
    err = _refused(client, [doc])
    paths = [path for path, _ in err.problems]
    assert any(path.startswith("jobs[0]") and field in path for path in paths), err.render()


@PROPERTY
@given(mutations("job"), st.integers(min_value=0, max_value=3))
def test_one_bad_job_in_a_batch_refuses_the_whole_batch(
    client: Client, case: tuple[dict[str, Any], str], where: int
) -> None:
    doc, field = case
    batch: list[Any] = [{**copy.deepcopy(JOB), "name": f"ok-{i}"} for i in range(3)]
    batch.insert(where, doc)
    # A mutated document may keep the valid job's name; that is a second problem, not
    # the one this test is about.
    err = _refused(client, batch)
    assert any(
        path.startswith(f"jobs[{where}]") and field in path for path, _ in err.problems
    ), err.render()


NOT_JOBS: list[tuple[str, list[Any], str]] = [
    ("a string", ["train.yaml"], "jobs[0]"),
    ("a number", [7], "jobs[0]"),
    ("a list", [[JOB]], "jobs[0]"),
    ("two jobs of one name", [JOB, JOB], "jobs[1].name"),
    (
        "a provider the fleet lacks",
        [{**JOB, "placement": {"providers": ["azur"]}}],
        "placement.providers[0]",
    ),
]


@pytest.mark.parametrize(("docs", "field"), [c[1:] for c in NOT_JOBS], ids=[c[0] for c in NOT_JOBS])
def test_what_is_not_a_job_is_refused_naming_where(
    client: Client, docs: list[Any], field: str
) -> None:
    err = _refused(client, docs)
    assert any(field in path for path, _ in err.problems), err.render()


def test_the_valid_job_is_accepted(client: Client) -> None:
    """The refusals above are about the mutations, not a scheduler that refuses all."""
    job_id = client.submit(JOB)
    assert list(client.states()) == [job_id]
    client.cancel(job_id)
