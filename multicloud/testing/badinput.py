"""Malformed job and fleet documents, generated (hypothesis), for the bad-input tests.

Each example starts from a valid document (:data:`JOB`, :data:`FLEET`) and applies one
mutation that makes it invalid for sure: an unknown field, a value of a type nothing
coerces, a count out of range, a missing required field, an unknown accelerator or
provider. The CLI's tests and the client's (``Client.submit``) draw from the same
strategy, so both front doors are held to one list of bad inputs. Needs the ``dev`` extra
(hypothesis).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

__all__ = ["FLEET", "JOB", "mutations"]

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
NUMBERS: dict[str, list[tuple[Any, ...]]] = {
    "job": [("priority",), ("resources", "count"), ("resources", "nodes"), ("duration_hours",)],
    "fleet": [
        ("providers", "aws", "offers", 0, "count"),
        ("providers", "aws", "offers", 0, "price"),
        ("providers", "aws", "offers", 0, "capacity"),
        ("contracts", "rofr", "tolerance"),
        ("budgets", "research", "max_cost_usd"),
    ],
}
MAPPINGS: dict[str, list[tuple[Any, ...]]] = {
    "job": [(), ("resources",), ("placement",), ("run",)],
    "fleet": [(), ("providers", "aws"), ("providers", "aws", "offers", 0), ("contracts",),
              ("contracts", "rofr")],
}
REQUIRED: dict[str, list[tuple[Any, ...]]] = {
    "job": [("name",), ("resources",), ("resources", "accelerator")],
    "fleet": [("providers",), ("providers", "aws", "offers", 0, "region"),
              ("providers", "aws", "offers", 0, "price"), ("contracts", "rofr", "holders")],
}

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


