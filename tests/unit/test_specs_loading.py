"""Job and fleet files: YAML through libyaml, JSON through json, positions on every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multicloud.errors import SpecError
from multicloud.specs import load_jobs, parse_fleet, parse_jobs

JOBS = [
    {"name": "a", "resources": {"accelerator": "H100", "count": 8}, "duration_hours": 2},
    {"name": "b", "kind": "inference", "resources": {"accelerator": ["L4", "A10G"]}},
]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_yaml_and_json_files_read_the_same(tmp_path: Path, suffix: str) -> None:
    import yaml

    path = tmp_path / f"jobs{suffix}"
    doc = {"jobs": JOBS}
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    jobs = load_jobs(path)
    assert [j.name for j in jobs] == ["a", "b"]
    assert jobs[0].resources.count == 8
    assert jobs[1].resources.accelerator == ("L4", "A10G")


@pytest.mark.parametrize(
    ("text", "as_json", "where", "message"),
    [
        # a field problem: path, message, did-you-mean, then where it is
        (
            "jobs:\n  - name: a\n    resources:\n      acelerator: H100\n",
            False,
            "jobs[0].resources.acelerator",
            "did you mean 'accelerator'? (line 4, column 7)",
        ),
        (
            "jobs:\n  - name: a\n    resources: {accelerator: H10O}\n",
            False,
            "jobs[0].resources.accelerator",
            "did you mean 'H100'? (line 3, column 17)",
        ),
        (
            '{"jobs": [{"name": "a",\n  "resources": {"accelerator": "H100"},\n'
            '  "duration_hours": -1}]}',
            True,
            "jobs[0].duration_hours",
            "(got -1) (line 3, column 3)",
        ),
        # syntax: line and column of the parser's complaint
        ("jobs:\n  - name: a\n   resources: x\n", False, "line 3, column 4", "not valid YAML"),
        ('{"jobs": [{"name": "a",, }]}', True, "line 1, column 24", "not valid JSON"),
    ],
)
def test_problems_name_field_line_and_column(
    text: str, as_json: bool, where: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_jobs(text, "jobs.src", as_json=as_json)
    paths = [p for p, _ in info.value.problems]
    assert where in paths
    msg = dict(info.value.problems)[where]
    assert message in msg
    assert "jobs.src" in str(info.value)


def test_yaml_text_that_looks_like_json_still_parses_as_yaml() -> None:
    # a flow mapping that is YAML but not JSON (unquoted keys)
    jobs = parse_jobs("{name: a, resources: {accelerator: H100}}")
    assert jobs[0].name == "a"


def test_fleet_problems_have_positions() -> None:
    with pytest.raises(SpecError) as info:
        parse_fleet("providers:\n  aws:\n    adapter: sim\n    capacty: {}\n")
    ((path, msg),) = info.value.problems
    assert path == "providers.aws.capacty"
    assert "did you mean 'capacity'?" in msg and "(line 4, column 5)" in msg
