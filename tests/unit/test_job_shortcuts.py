"""The job model's shortcuts for large files: remembered accelerator lists, one default placement.

Neither may change what a job is, nor an error: the same jobs, the same messages, whether a
spelling is seen first, again, or after the memory is full.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

import multicloud.models.job as job
from multicloud.models import Job, Placement


def resources(accelerator: Any) -> dict[str, Any]:
    return {"name": "a", "resources": {"accelerator": accelerator}}


ACCELERATORS = {
    # name: (as written, canonical; or the error's text)
    "one name": ("H100", ("H100",)),
    "an alias, any case": ("h100-80gb", ("H100",)),
    "a list with a repeat": (["A10G", "l4", "A10G"], ("A10G", "L4")),
    "unknown": ("H1000", "unknown accelerator 'H1000'; did you mean 'H100'?"),
    "empty": ([], "name at least one accelerator"),
}


@pytest.mark.parametrize(("written", "want"), ACCELERATORS.values(), ids=ACCELERATORS.keys())
@pytest.mark.parametrize("memory", ["empty", "full"])
def test_accelerators_the_same_first_and_again(
    monkeypatch: pytest.MonkeyPatch, written: Any, want: Any, memory: str
) -> None:
    monkeypatch.setattr(job, "_CANONICAL", {})
    if memory == "full":
        monkeypatch.setattr(job, "_CANONICAL_MAX", 0)
    for _ in range(2):  # first, then (if remembered) from memory
        if isinstance(want, tuple):
            assert Job.model_validate(resources(written)).resources.accelerator == want
        else:
            with pytest.raises(ValidationError, match=want.replace("?", r"\?")):
                Job.model_validate(resources(written))
    assert len(job._CANONICAL) <= job._CANONICAL_MAX
    if memory == "full" or not isinstance(want, tuple):
        assert job._CANONICAL == {}


PLACEMENTS = {
    # name: (placement as written or None, what the job's placement is)
    "none written": (None, Placement()),
    "empty": ({}, Placement()),
    "regions": ({"regions": ["us-*"]}, Placement(regions=("us-*",))),
}


@pytest.mark.parametrize(("written", "want"), PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_default_placement(written: dict[str, Any] | None, want: Placement) -> None:
    doc = resources("H100")
    if written is not None:
        doc["placement"] = written
    got = Job.model_validate(doc)
    assert got.placement == want
    # a default is still a default: not written back, not counted as set
    assert ("placement" in got.model_dump(exclude_defaults=True)) == (want != Placement())
    assert ("placement" in got.model_fields_set) == (written is not None)
    with pytest.raises(ValidationError, match="frozen"):
        got.placement.regions = ("eu-*",)  # type: ignore[misc]
