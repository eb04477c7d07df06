"""Job files validated in one call: the same jobs, and every problem named as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from multicloud.errors import SpecError
from multicloud.models import Job
from multicloud.specs import parse_jobs, validate_jobs


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"accelerator": "H100"}, **fields}


VALID = {
    "a jobs list": {"jobs": [job("a"), job("b", kind="inference", serving={"replicas": 2})]},
    "one job": job("solo", resources={"accelerator": ["l4", "A10G"], "count": 2}),
    "defaults and aliases": {"jobs": [job("x", deadline="2026-12-01T09:00:00")]},
}


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
@pytest.mark.parametrize("doc", VALID.values(), ids=VALID.keys())
def test_valid_files_give_the_jobs_one_by_one_validation_gives(
    doc: dict[str, Any], as_json: bool
) -> None:
    text = json.dumps(doc) if as_json else yaml.safe_dump(doc)
    items = doc.get("jobs", [doc])
    assert parse_jobs(text, as_json=as_json) == [Job.model_validate(i) for i in items]


# Files with several problems: each is named at its own document, with its position.
BAD = {
    "a non-mapping among valid jobs": (
        {"jobs": [job("a"), 12, job("c")]},
        [("jobs[1]", "a job must be a mapping of fields")],
    ),
    "two bad jobs": (
        {"jobs": [job("a", priorty=1), job("b"), job("c", duration_hours=-1)]},
        [
            ("jobs[0].priorty", "unknown field 'priorty'; did you mean 'priority'?"),
            ("jobs[2].duration_hours", "Input should be greater than 0 (got -1)"),
        ],
    ),
    "a repeated name after a bad job": (
        {"jobs": [job("a"), job("b", nodes=2), job("a")]},
        [
            ("jobs[1].nodes", "unknown field 'nodes'"),
            ("jobs[2].name", "duplicate job name 'a'"),
        ],
    ),
}


@pytest.mark.parametrize(("doc", "problems"), BAD.values(), ids=BAD.keys())
def test_every_problem_is_named_at_its_document(
    doc: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    with pytest.raises(SpecError) as info:
        parse_jobs(yaml.safe_dump(doc, sort_keys=False), "jobs.yaml")
    got = info.value.problems
    assert [path for path, _ in got] == [path for path, _ in problems]
    for (_, message), (_, want) in zip(got, problems, strict=True):
        assert message.startswith(want) and "(line " in message, message
    with pytest.raises(SpecError) as sent:
        validate_jobs(doc["jobs"])
    # a submission has no text: the same problems, without positions
    assert [p for p, _ in sent.value.problems] == [p for p, _ in problems]


def test_a_repeated_name_in_a_document_stream_names_its_document() -> None:
    text = yaml.safe_dump_all([job("a"), job("b"), job("a")])
    with pytest.raises(SpecError) as info:
        parse_jobs(text)
    ((path, message),) = info.value.problems
    assert path == "document[2].name" and "duplicate job name 'a'" in message
