"""Malformed job and fleet files, generated: every one gets exit 2 naming the file and field.

Each example starts from a valid document and applies one mutation that makes it invalid
for sure (``multicloud.testing.badinput``: an unknown field, a value of a type nothing
coerces, a count out of range, a missing required field, an unknown accelerator or
provider), or breaks its YAML. The command line
must answer every one with exit status 2 and ``error: FILE: FIELD: …`` — never a traceback,
never a plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from multicloud.cli import app
from multicloud.testing.badinput import FLEET, JOB, mutations

runner = CliRunner()


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
