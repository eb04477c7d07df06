"""A faster construction of plain YAML documents on top of libyaml (docs/architecture.md).

libyaml parses in C; PyYAML then composes a node (with two marks) per value, resolves
every scalar's tag with regular expressions and builds the objects through a generic,
generator-based constructor. Job files are large, plain trees (mappings, lists, scalars
that repeat a lot), so :func:`load_all` builds them straight from libyaml's events,
remembering each scalar's tag and value: no nodes at all. A document with anchors, aliases
or tags goes through :class:`FastLoader` (nodes, then one direct walk), and anything
unusual there (merge keys, other tags, unhashable keys, recursive aliases) through
PyYAML's own constructor, so results and error messages stay exactly PyYAML's.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

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


_NONE = object()  # not yet built (None is a value)
_PLAIN = (True, False)  # a plain scalar's implicit flags: its tag is resolved from its text


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


def load_all(text: str) -> list[Any]:
    """Every document of ``text``, exactly as ``yaml.load_all`` with the safe loader.

    Args:
        text: The YAML stream.

    Returns:
        The documents, in order (an empty document is ``None``, as in PyYAML).

    Raises:
        yaml.YAMLError: As PyYAML raises it (libyaml's own message and marks).
    """
    loader = BaseLoader(text)
    try:
        return _from_events(loader)
    except _Unusual:
        pass
    finally:
        loader.dispose()
    return list(yaml.load_all(text, Loader=FastLoader))


def _from_events(loader: Any) -> list[Any]:
    """Build the documents from the parser's events; :class:`_Unusual` if one needs nodes."""
    get = loader.get_event
    # A plain scalar's value depends on its text alone (the same resolved tag, the same
    # constructed value): each spelling is resolved and built once.
    plain: dict[str, Any] = {}
    other: dict[tuple[str, Any], Any] = {}
    docs: list[Any] = []
    # The container being filled, whether it is a mapping, and a mapping's pending key;
    # the enclosing ones wait on the stack. A document is a one-item list.
    top: Any = []
    in_map = False
    key: Any = None
    has_key = False
    stack: list[tuple[Any, bool, Any, bool]] = []
    while True:
        event = get()
        kind = event.__class__
        value: Any
        if kind is ScalarEvent:
            tag = event.tag
            if event.anchor is not None or (tag is not None and tag != "!"):
                raise _Unusual
            text = event.value
            implicit = event.implicit
            if implicit == _PLAIN:
                value = plain.get(text, _NONE)
                if value is _NONE:
                    value = plain[text] = _scalar(loader, text, implicit)
            else:
                value = other.get((text, implicit), _NONE)
                if value is _NONE:
                    value = other[(text, implicit)] = _scalar(loader, text, implicit)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.anchor is not None or event.tag not in (None, "!"):
                raise _Unusual
            stack.append((top, in_map, key, has_key))
            in_map = kind is MappingStartEvent
            top = {} if in_map else []
            has_key = False
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            value = top
            top, in_map, key, has_key = stack.pop()
        elif kind is DocumentStartEvent:
            top = []
            continue
        elif kind is DocumentEndEvent:
            docs.append(top[0])
            continue
        elif kind is StreamEndEvent:
            return docs
        elif kind is AliasEvent:
            raise _Unusual
        else:  # the stream's start
            continue
        if not in_map:
            top.append(value)
        elif has_key:
            top[key] = value
            has_key = False
        elif isinstance(value, (list, dict)):
            raise _Unusual  # PyYAML reports the unhashable key
        else:
            key = value
            has_key = True


def _scalar(loader: Any, text: str, implicit: tuple[bool, bool]) -> Any:
    """A scalar's value, as PyYAML's resolver and constructor make it."""
    tag = loader.resolve(yaml.ScalarNode, text, implicit)
    if tag == _STR:
        return text
    if tag not in _SCALARS:
        raise _Unusual  # a merge key, or a tag only PyYAML's composer handles
    try:
        return loader.yaml_constructors[tag](loader, yaml.ScalarNode(tag, text))
    except Exception:
        # e.g. a date that does not exist: PyYAML raises it, once the whole document has
        # been parsed (a later syntax error comes first)
        raise _Unusual from None
