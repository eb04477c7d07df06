"""The text of ``multicloud plan --json``, written straight from the plan.

A 20,000-job plan has about 40,000 rows (placements, queued jobs, audit lines) and 17 MB of
JSON. Building ``Plan.to_dict()`` and encoding it row by row took 0.25-0.35 s, as long as
reading the job file: a dict per row, then every byte encoded again, although most of a
row repeats other rows (the offer's fields, the reasons, the ROFR outcome, the audit's
reasons and times). Here each distinct repeated part is encoded once, the values that
vary (job names, numbers, audit terms) in one encoder call per kind, and the rows are
put together from the pieces.

The text is byte for byte :func:`plan_json` of ``Plan.to_dict()`` (the tests compare
them on plans with every kind of row): the rows' layout follows ``to_dict``, and every
value is still encoded by pydantic's core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pydantic_core import to_json

from multicloud.offer import Offer
from multicloud.planner import Assignment, AuditEntry, Plan, Unplaced
from multicloud.planner.types import _money  # to_dict's rounding: one for both encodings

__all__ = ["plan_chunks", "plan_json", "plan_text"]

# Rows per chunk of text: about 0.5 MB, written as it is (a pipe takes it in one call).
_CHUNK_ROWS = 1024


def plan_json(doc: dict[str, Any]) -> bytes:
    """The plan document as JSON (UTF-8) with one placement (queued job, audit line) per line.

    pydantic's core encodes each row in compiled code, three times as fast as the
    standard library's C encoder (which pretty-prints only through its Python encoder,
    slower than planning a 20,000-job file). A row per line stays readable and diff-able.

    Args:
        doc: The plan document (``Plan.to_dict()``).

    Returns:
        The JSON text, UTF-8 encoded.
    """
    rows = {
        key: [to_json(row) for row in value]
        for key, value in doc.items()
        if isinstance(value, list) and value
    }
    return b"".join(_document(doc, rows))


def plan_text(plan: Plan) -> bytes:
    """``plan_json(plan.to_dict())``, built without the document (see the module's notes).

    Args:
        plan: The plan.

    Returns:
        The JSON text, UTF-8 encoded.
    """
    return b"".join(plan_chunks(plan))


def plan_chunks(plan: Plan) -> list[bytes]:
    """:func:`plan_text` in pieces, to write one after the other.

    The text of a 20,000-job plan is 17 MB: joined whole, then given a newline by the
    printer, it was copied twice more after its rows were built (20 ms).

    Args:
        plan: The plan.

    Returns:
        The pieces of the text, in order (each up to about 0.5 MB).
    """
    # The document without its rows: the totals and stats as ``to_dict`` writes them.
    frame = replace(plan, placements=(), unplaced=(), audit=()).to_dict()
    # The total is over the rows left out: as ``to_dict`` writes it.
    frame["total_cost"] = _money(plan.total_cost)
    rows = {
        "placements": _placements(plan.placements),
        "unplaced": _unplaced(plan.unplaced),
        "audit": _audit(plan.audit),
    }
    return _document(frame, {key: value for key, value in rows.items() if value})


def _document(doc: dict[str, Any], rows: dict[str, list[bytes]]) -> list[bytes]:
    """The document's text in pieces: ``rows[key]`` (encoded rows) for a list's value."""
    parts: list[bytes] = []
    for n, (key, value) in enumerate(doc.items()):
        parts.append((b"{\n  " if n == 0 else b",\n  ") + to_json(key) + b": ")
        if key in rows:
            lines = rows[key]
            parts.append(b"[\n    ")
            for start in range(0, len(lines), _CHUNK_ROWS):
                if start:
                    parts.append(b",\n    ")
                parts.append(b",\n    ".join(lines[start : start + _CHUNK_ROWS]))
            parts.append(b"\n  ]")
        else:
            parts.append(to_json(value))
    parts.append(b"\n}" if parts else b"{\n\n}")
    return parts


class _Texts(dict[Any, bytes]):
    """JSON texts of values, each encoded once: ``texts[value]``.

    For keys whose equal values print the same (strings, tuples of strings); a hit is a
    plain dict lookup in C.

    Args:
        encode: The text of a value not seen yet.
    """

    def __init__(self, encode: Callable[[Any], bytes] = to_json) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, key: Any) -> bytes:
        text = self[key] = self.encode(key)
        return text


class _ById:
    """JSON texts of objects, each encoded once: ``texts(obj)``.

    Keyed by identity, not value: equal values may print differently (``0.0 == -0.0``, the
    same time in two zones), and identity needs no hashing of mappings or dataclasses.
    The plan shares one object per offer, ROFR outcome, terms and time across its rows,
    and keeps every object alive while its text is built (an id is never reused meanwhile).

    Args:
        encode: The text of an object not seen yet.
    """

    def __init__(self, encode: Callable[[Any], Any]) -> None:
        self.done: dict[int, Any] = {}
        self.encode = encode

    def __call__(self, obj: Any) -> Any:
        text = self.done.get(id(obj))
        if text is None:
            text = self.done[id(obj)] = self.encode(obj)
        return text


class _Money(dict[float | None, bytes]):
    """The text of money as ``Plan.to_dict`` rounds it: ``money[value]``, ``money[None]``.

    Rounding a float to 4 digits goes through its decimal digits: 0.4 us, 60,000 times in
    a 20,000-job plan, and prices repeat. Equal non-zero floats print the same; a zero is
    never remembered (0.0 and -0.0 are one key but print differently), nor is anything but
    a float (``2 == 2.0`` is one key, but an int prints as ``2``: an adapter's int price
    made a later ``2.0`` cost print as ``2``).
    """

    def __missing__(self, key: float | None) -> bytes:
        text = to_json(_money(key))
        if key and type(key) is float:
            self[key] = text
        return text


def _strings(values: Sequence[str]) -> list[bytes]:
    """Each string's JSON text, from one encoder call where that can be split safely.

    The list's text is split on ``","``, which stands between two items, and inside an
    item only as an escaped quote before ``,"`` (``x",`` encodes as ``"x\\","``): a list
    holding any quote is encoded one string at a time instead (job names never hold one).
    """
    if not values:
        return []
    if any('"' in v for v in values):
        return [to_json(v) for v in values]
    return [b'"' + part + b'"' for part in to_json(list(values))[2:-2].split(b'","')]


def _numbers(values: Sequence[float | int | None]) -> list[bytes]:
    """Each number's (or null's) JSON text, from one encoder call (numbers have no commas)."""
    if not values:
        return []
    return to_json(list(values))[1:-1].split(b",")


def _offer(o: Offer) -> tuple[bytes, bytes]:
    """An offer's fields of a placement row: those before ``nodes``, and its reservation."""
    head = {
        "provider": o.provider,
        "region": o.region,
        "zone": o.zone,
        "instance_type": o.instance_type,
        "accelerator": o.accelerator,
    }
    return to_json(head)[1:-1], to_json(o.reservation)


def _list(items: Sequence[Any]) -> bytes:
    return to_json(list(items))


def _placements(rows: Sequence[Assignment]) -> list[bytes]:
    if not rows:
        return []
    jobs = _strings([a.job for a in rows])
    counts = _numbers([x for a in rows for x in (a.nodes, a.replicas)])
    money = _Money()
    offers = _ById(_offer)
    rofrs = _ById(lambda r: b"null" if r is None else to_json(r.to_dict()))
    markets = _ById(lambda m: to_json(m.value))
    reasons = _Texts(_list)
    out: list[bytes] = []
    for i, a in enumerate(rows):
        offer = offers(a.offer)
        k = 2 * i
        out.append(
            b'{"job":%b,%b,"nodes":%b,"replicas":%b,"market":%b,"reservation":%b,'
            b'"price_per_hour":%b,"cost":%b,"rofr":%b,"reasons":%b}'
            % (
                jobs[i],
                offer[0],
                counts[k],
                counts[k + 1],
                markets(a.market),
                offer[1],
                money[a.price_per_hour],
                money[a.cost],
                rofrs(a.rofr),
                reasons[a.reasons],
            )
        )
    return out


def _unplaced(rows: Sequence[Unplaced]) -> list[bytes]:
    if not rows:
        return []
    jobs = _strings([u.job for u in rows])
    reasons = _Texts()
    details = _Texts(_list)
    return [
        b'{"job":%b,"reason":%b,"details":%b}' % (jobs[i], reasons[u.reason], details[u.details])
        for i, u in enumerate(rows)
    ]


def _audit(rows: Sequence[AuditEntry]) -> list[bytes]:
    if not rows:
        return []
    jobs = _strings([e.job for e in rows])
    money = _Money()
    text = _Texts()
    terms = _ById(lambda t: to_json(dict(t)))
    times = _ById(lambda at: to_json(at.isoformat() if at else None))
    out: list[bytes] = []
    for i, e in enumerate(rows):
        out.append(
            b'{"job":%b,"holder":%b,"terms":%b,"outside_price_per_hour":%b,'
            b'"holder_price_per_hour":%b,"answer":%b,"reason":%b,"billed_price_per_hour":%b,'
            b'"at":%b,"catalog_version":%b}'
            % (
                jobs[i],
                text[e.holder],
                terms(e.terms),
                money[e.outside_price_per_hour],
                money[e.holder_price_per_hour],
                text[e.answer],
                text[e.reason],
                money[e.billed_price_per_hour],
                times(e.at),
                text[e.catalog_version],
            )
        )
    return out
