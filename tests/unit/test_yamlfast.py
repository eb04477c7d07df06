"""The fast YAML construction gives exactly PyYAML's documents and errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from multicloud import yamlfast
from multicloud.yamlfast import BaseLoader, FastLoader, load_all

CASES = {
    "plain tree": "jobs:\n- name: a\n  count: 8\n  hours: 1.5\n  on: true\n  x: null\n- {n: b}\n",
    "repeated scalars": "- H100\n- H100\n- 0x1f\n- 1_000\n- .inf\n- ~\n- 'quoted 12'\n",
    "timestamps": "at: 2026-12-01T09:00:00Z\nday: 2026-12-01\n",
    "aliases share objects": "base: &b {count: 8}\nuse: *b\nlist: [*b, *b]\n",
    "merge key": "base: &b {count: 8}\njob:\n  <<: *b\n  name: x\n",
    "other tags": "set: !!set {a, b}\nbin: !!binary aGVsbG8=\nomap: !!omap [{a: 1}]\n",
    "explicit str": "n: !!str 12\nm: !!int '7'\n",
    "several documents": "a: 1\n---\nb: [1, 2]\n---\n",
    "recursive": "a: &x [1, *x]\n",
    "empty": "",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_same_documents_as_pyyaml(text: str) -> None:
    want = list(yaml.load_all(text, Loader=BaseLoader))
    got = list(yaml.load_all(text, Loader=FastLoader))
    assert repr(got) == repr(want)


def test_aliases_are_the_same_object() -> None:
    (doc,) = yaml.load_all(CASES["aliases share objects"], Loader=FastLoader)
    assert doc["use"] is doc["base"] and doc["list"][1] is doc["base"]


ERRORS = {
    "unhashable key": "? [a, b]\n: 1\n",
    "bad syntax": "a: [1, 2\nb: 3\n",
    "unknown tag": "at: !thing 1\n",
}


@pytest.mark.parametrize("text", ERRORS.values(), ids=ERRORS.keys())
def test_same_errors_as_pyyaml(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as want:
        list(yaml.load_all(text, Loader=BaseLoader))
    with pytest.raises(yaml.YAMLError) as got:
        list(yaml.load_all(text, Loader=FastLoader))
    assert str(got.value) == str(want.value)


# ---- load_all: documents straight from libyaml's events ------------------------------------

MORE = {
    "document markers": "%YAML 1.1\n---\na: 1\n...\n---\n- x\n",
    "empty documents": "---\n---\na: b\n",
    "non-specific tag": "a: ! 12\nb: ! [1]\n",
    "bool and int keys": "on: 1\n2: two\n~: null key\n",
    "nested flow": "a: [{b: [1, {c: d}]}, [], {}]\n",
    "a date that does not exist": "a: 2026-02-30\n",
    "anchor on a scalar": "a: &x 12\nb: *x\n",
    "merge key in a list": "- &b {x: 1}\n- {<<: *b, y: 2}\n",
    "duplicate keys": "a: 1\na: 2\n",
    "quoted scalars stay strings": "a: '12'\nb: \"true\"\nc: 'null'\n",
}


def _outcome(load: Callable[[str], list[Any]], text: str) -> str:
    try:
        return repr(load(text))
    except (yaml.YAMLError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


@pytest.mark.parametrize(
    "text", [*CASES.values(), *MORE.values(), *ERRORS.values()], ids=[*CASES, *MORE, *ERRORS]
)
def test_load_all_gives_pyyamls_documents_and_errors(text: str) -> None:
    want = _outcome(lambda t: list(yaml.load_all(t, Loader=BaseLoader)), text)
    assert _outcome(load_all, text) == want


def test_load_all_keeps_aliases_the_same_object() -> None:
    (doc,) = load_all(CASES["aliases share objects"])
    assert doc["use"] is doc["base"] and doc["list"][1] is doc["base"]


@pytest.mark.parametrize("name", ["plain tree", "repeated scalars", "timestamps", "empty"])
def test_plain_documents_need_no_nodes(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Only documents with anchors or tags go through the node-building loaders.
    want = list(yaml.load_all(CASES[name], Loader=BaseLoader))
    monkeypatch.setattr(yamlfast, "FastLoader", None)
    assert repr(load_all(CASES[name])) == repr(want)
