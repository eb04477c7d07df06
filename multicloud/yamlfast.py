"""A faster construction of plain YAML documents on top of libyaml (docs/architecture.md).

libyaml parses and composes in C; PyYAML then resolves every scalar's tag with regular
expressions and builds the objects through a generic, generator-based constructor. Job
files are large, plain trees (mappings, lists, scalars that repeat a lot), so this
loader remembers each scalar's tag and value and builds the tree in one direct walk.
Anything unusual (merge keys, other tags, unhashable keys, recursive aliases) is handed
to PyYAML's own constructor, so results and error messages stay exactly PyYAML's.
"""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's parser where PyYAML was built with it: ten times the pure-Python one, with the
# same marks (line, column) on its errors and nodes.
BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALARS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


class _Unusual(Exception):
    """The document needs PyYAML's generic constructor."""


class FastLoader(BaseLoader):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's where available) with a direct tree construction.

    Args:
        stream: The text to read.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._tags: dict[tuple[str, Any], str] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """Resolve a node's tag, remembering plain scalars' (they repeat a lot)."""
        if kind is yaml.ScalarNode:
            key = (value, implicit)
            tag = self._tags.get(key)
            if tag is None:
                tag = self._tags[key] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)

    def construct_document(self, node: Any) -> Any:
        """Build a document directly; fall back to PyYAML's constructor if it is unusual."""
        try:
            return self._build(node, {}, set())
        except (_Unusual, RecursionError):
            return super().construct_document(node)

    def _build(self, node: Any, done: dict[int, Any], open_: set[int]) -> Any:
        tag = node.tag
        if tag == _STR:
            value: Any = node.value
            return value
        if tag in _SCALARS:
            key = (tag, node.value)
            try:
                return self._values[key]
            except KeyError:
                value = self._values[key] = self.construct_object(node)
                # construct_object memoises by node; the cache above is by value
                self.constructed_objects.clear()
                return value
        me = id(node)
        if me in done:  # an alias of a node already built: the same object, as PyYAML
            return done[me]
        if me in open_:
            raise _Unusual  # a recursive structure
        open_.add(me)
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            out: Any = [self._build(item, done, open_) for item in node.value]
        elif tag == _MAP and isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    raise _Unusual
                key = self._build(k, done, open_)
                if isinstance(key, (list, dict)):
                    raise _Unusual  # PyYAML reports the unhashable key
                out[key] = self._build(v, done, open_)
        else:
            raise _Unusual
        open_.discard(me)
        done[me] = out
        return out
