"""The fast YAML construction gives exactly PyYAML's documents and errors."""

from __future__ import annotations

import pytest
import yaml

from multicloud.yamlfast import BaseLoader, FastLoader

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
