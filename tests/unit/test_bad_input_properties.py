"""Malformed job and fleet files, generated: every one gets exit 2 naming the file and field.

Each example starts from a valid document and applies one mutation that makes it invalid
for sure (an unknown field, a value of a type nothing coerces, a count out of range, a
missing required field, an unknown accelerator or provider, broken YAML). The command line
must answer every one with exit status 2 and ``error: FILE: FIELD: …`` — never a traceback,
never a plan.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from multicloud.cli import app

runner = CliRunner()

JOB: dict[str, Any] = {
    "name": "train-a",
    "kind": "training",
    "priority": 5,
    "resources": {"accelerator": ["H100", "H200"], "count": 8, "nodes": 2},
    "market": "any",
    "duration_hours": 3.0,
    "placement": {"regions": ["us-*"], "residency": ["US"]},
    "run": {"image": "img:1", "command": "python train.py", "env": {"A": "1"},
            "secrets": ["HF_TOKEN"]},
}

FLEET: dict[str, Any] = {
    "providers": {
        "aws": {
            "adapter": "sim",
            "offers": [
                {"region": "us-east-1", "instance_type": "p5.48xlarge", "accelerator": "H100",
                 "count": 8, "price": 98.32, "spot_price": 39.3, "capacity": 4},
            ],
        },
        "azure": {
            "adapter": "sim",
            "offers": [
                {"region": "eastus", "instance_type": "ND96", "accelerator": "H100",
                 "count": 8, "price": 95.0},
            ],
        },
    },
    "contracts": {"rofr": {"holders": ["azure"], "tolerance": 0.1}},
    "budgets": {"research": {"max_cost_usd": 1000}},
}

# Paths whose value is a number with a lower bound, a string, a mapping, a list.
NUMBERS = {
    "job": [("priority",), ("resources", "count"), ("resources", "nodes"), ("duration_hours",)],
    "fleet": [
        ("providers", "aws", "offers", 0, "count"),
        ("providers", "aws", "offers", 0, "price"),
        ("providers", "aws", "offers", 0, "capacity"),
        ("contracts", "rofr", "tolerance"),
        ("budgets", "research", "max_cost_usd"),
    ],
}
MAPPINGS = {
    "job": [(), ("resources",), ("placement",), ("run",)],
    "fleet": [(), ("providers", "aws"), ("providers", "aws", "offers", 0), ("contracts",),
              ("contracts", "rofr")],
}
REQUIRED = {
    "job": [("name",), ("resources",), ("resources", "accelerator")],
    "fleet": [("providers",), ("providers", "aws", "offers", 0, "region"),
              ("providers", "aws", "offers", 0, "price"), ("contracts", "rofr", "holders")],
}
KNOWN_NAMES = {"job": ["accelerator", ("placement", "providers")],
               "fleet": [("contracts", "rofr", "holders")]}

field_names = st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True)
# Values no field of the same kind would accept: a mapping where a number or a string
# belongs, a string where a number belongs, a number where a mapping belongs.
not_a_number = st.one_of(st.just({"x": 1}), st.just([1, 2]), st.text(min_size=1).filter(
    lambda s: not _numeric(s)))


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _path_text(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutations(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], str]:
    """A certainly-invalid document and the field path its error must name."""
    doc = copy.deepcopy(JOB if kind == "job" else FLEET)
    how = draw(st.sampled_from(["unknown", "number", "negative", "required", "name"]))
    if how == "unknown":
        where = draw(st.sampled_from(MAPPINGS[kind]))
        target = _at(doc, where)
        name = draw(field_names.filter(lambda n: n not in target))
        target[name] = draw(st.one_of(st.integers(), st.text(max_size=5)))
        if kind == "fleet" and where == ():
            return doc, name
        return doc, _path_text((*where, name))
    if how in ("number", "negative"):
        where = draw(st.sampled_from(NUMBERS[kind]))
        parent = _at(doc, where[:-1])
        parent[where[-1]] = (
            draw(not_a_number) if how == "number" else -draw(st.integers(min_value=1))
        )
        if how == "negative" and where[-1] == "priority":
            parent[where[-1]] = {"x": 1}  # any integer is a valid priority
        return doc, _path_text(where)
    if how == "required":
        where = draw(st.sampled_from(REQUIRED[kind]))
        del _at(doc, where[:-1])[where[-1]]
        return doc, _path_text(where)
    # An unknown accelerator or provider name.
    if kind == "job":
        doc["resources"]["accelerator"] = [draw(st.sampled_from(["H1OO", "A100X", "tpu-v9"]))]
        return doc, "resources.accelerator"
    doc["contracts"]["rofr"]["holders"] = [draw(st.sampled_from(["azur", "oracle", "gcpp"]))]
    return doc, "contracts.rofr.holders"


def _run(tmp: Path, kind: str, doc: Any, *, raw: str | None = None) -> tuple[int, str, str]:
    job_file, fleet_file = tmp / "job.yaml", tmp / "fleet.yaml"
    job_file.write_text(yaml.safe_dump(JOB))
    fleet_file.write_text(yaml.safe_dump(FLEET))
    target = job_file if kind == "job" else fleet_file
    target.write_text(raw if raw is not None else yaml.safe_dump(doc))
    result = runner.invoke(app, ["plan", str(job_file), "--fleet", str(fleet_file)])
    return result.exit_code, result.output, str(target)


PROPERTY = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_the_valid_documents_plan(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, "job", JOB)
    assert code == 0, out


@PROPERTY
@given(st.sampled_from(["job", "fleet"]).flatmap(lambda k: st.tuples(st.just(k), mutations(k))))
def test_a_malformed_document_gets_exit_2_naming_file_and_field(
    tmp_path: Path, case: tuple[str, tuple[dict[str, Any], str]]
) -> None:
    kind, (doc, field) = case
    code, out, path = _run(tmp_path, kind, doc)
    assert code == 2, f"{json.dumps(doc)}\n{out}"
    assert "Traceback" not in out
    assert f"error: {path}: " in out, out
    assert field in out, f"expected {field!r} named in:\n{out}"


@PROPERTY
@given(st.sampled_from(["job", "fleet"]), st.integers(min_value=1, max_value=200), st.data())
def test_broken_yaml_gets_exit_2_with_line_and_column(
    tmp_path: Path, kind: str, cut: int, data: st.DataObject
) -> None:
    text = yaml.safe_dump(JOB if kind == "job" else FLEET, default_flow_style=True)
    junk = data.draw(st.sampled_from(["{", "[", ": :", "\t- x", "'"]))
    raw = text[: cut % len(text)] + junk
    try:
        yaml.safe_load(raw)
        broken = False
    except yaml.YAMLError:
        broken = True
    code, out, path = _run(tmp_path, kind, None, raw=raw)
    assert "Traceback" not in out
    if broken:
        assert code == 2 and f"error: {path}: " in out, out
        assert "line " in out and "column " in out, out
    else:
        # Cut where it still parses: a (different) document, refused or planned, never a crash.
        assert code in (0, 2), out
