"""Feasible options per job shape, kept across plans (docs/architecture.md, "The planner").

Working out which offers can take a job shape is most of a small plan's time, and a
scheduler plans the same shapes against much the same offers round after round. The work
splits in two:

* :class:`Prepared`, what does not depend on capacity: every filter but "capacity below N
  nodes" (size, placement, residency, blocked scopes, latency, market, price cap) over the
  offers of the shape's accelerators, and the options that pass, in rank order. It is a
  function of the shape, of those offers (every field but capacity, in table order) and of
  the context: the ROFR holders, the blocked scopes, the latency function and the
  commitment discounts at ``now``. Reservation offers are offers of the table, so a
  reservation's window at ``now`` is in it too. Offers are numbered by their place among
  the shape's candidates, so the other accelerators' offers (which a round may or may not
  have asked for) do not matter.
* :meth:`Prepared.short` and ``OptionIndex._finish``, which apply the snapshot's
  capacities and number the options in its table.

A :class:`ShapeCache` keeps prepared shapes under ``(shape, context id, group ids)``. The
ids come from :meth:`ShapeCache.intern`, which compares the full values (every offer row)
by equality and never reuses an id, so an entry can only be found by a table it was
computed from: a new price, offer, order, blocked scope, holder or discount is a new id.
Everything is bounded (least recently used goes first). The planner stays a pure
function: the cache only memoises a pure computation, and a plan with a cache equals the
plan without one. One scheduler owns one cache and runs one plan at a time with it; the
lock makes a misuse safe, not fast.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multicloud.planner.types import LatencyFn
from multicloud.provider import Offer

if TYPE_CHECKING:
    from multicloud.planner.options import Opt, Options

# Stage of the capacity filter in the order the filters run (options.OptionIndex); a
# provider's reason is the one of its offer that passed the most filters.
CAPACITY_STAGE = 7


def context(
    holders: frozenset[str],
    blocked: frozenset[str],
    latency: LatencyFn | None,
    preferred: Mapping[str, float],
) -> Hashable:
    """Return what every shape's options depend on besides its offers.

    Args:
        holders: ROFR holders.
        blocked: Blocked scopes.
        latency: Region latency function (compared by equality: the same bound method of
            the same catalog is the same function).
        preferred: Providers behind a commitment → ranking discount.

    Returns:
        A hashable value.
    """
    return ("context", holders, blocked, latency, tuple(sorted(preferred.items())))


def group(accelerator: str, offers: Sequence[Offer]) -> Hashable:
    """Return one accelerator's offers, every field but capacity, in table order.

    Args:
        accelerator: The accelerator.
        offers: Its offers, in table order.

    Returns:
        A hashable value.
    """
    rows = tuple(
        (
            o.provider,
            o.region,
            o.zone,
            o.instance_type,
            o.accelerator,
            o.count,
            o.price,
            o.spot_price,
            o.reservation,
            o.jurisdiction,
            o.catalog_version,
        )
        for o in offers
    )
    return ("group", accelerator, rows)


# An offer that passed every capacity-free filter up to the capacity one: its number (place
# among the shape's candidates, or in the table), its provider, and 0 if it yields options,
# else the stage of the filter after capacity that removed it. A plain tuple: there is one
# per candidate offer of every shape computed.
Survivor = tuple[int, str, int]


@dataclass
class Prepared:
    """A job shape's options on one table, before capacity is applied.

    Attributes:
        nodes: Nodes of one gang (the capacity threshold).
        rejects: How many offers each capacity-free filter before capacity removed.
        stage_of: Provider → highest such filter stage that removed one of its offers.
        reasons: Filter stage → its reason for this shape.
        survivors: Offers that reached the capacity filter, in candidate order.
        opts: Their options, cheapest (by rank) first.
        local: Offers are numbered by their place among the candidates (else in the
            table: a plan's own, uncached work).
        finished: Finished options by capacity-short candidates and the candidates' places
            in the table (a few kept).
    """

    nodes: int
    rejects: Counter[str]
    stage_of: dict[str, int]
    reasons: dict[int, str]
    survivors: list[Survivor]
    opts: list[Opt]
    local: bool = True
    finished: OrderedDict[tuple[tuple[int, ...], tuple[int, ...]], Options] = field(
        default_factory=OrderedDict
    )

    def short(self, offers: Sequence[Offer], cands: Sequence[int]) -> tuple[int, ...]:
        """Return the survivors whose capacity is below one gang's nodes.

        Args:
            offers: The current table (its capacities are read).
            cands: The shape's candidates' places in it.

        Returns:
            Their numbers (as the survivors are numbered), in order.
        """
        nodes = self.nodes
        local = self.local
        out: list[int] = []
        for n, _, _ in self.survivors:
            cap = offers[cands[n] if local else n].capacity
            if cap is not None and cap < nodes:
                out.append(n)
        return tuple(out)


class ShapeCache:
    """Prepared job shapes, bounded, least recently used first out.

    Args:
        max_shapes: Prepared shapes kept.
        max_values: Interned contexts and offer groups kept.
    """

    def __init__(self, max_shapes: int = 4096, max_values: int = 1024) -> None:
        if max_shapes < 1 or max_values < 1:
            raise ValueError("a shape cache needs room for a shape and a value")
        self.max_shapes = max_shapes
        self.max_values = max_values
        self._shapes: OrderedDict[Hashable, Prepared] = OrderedDict()
        self._ids: OrderedDict[Hashable, int] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def intern(self, value: Hashable) -> int:
        """Return the id of a value: equal values, same id; an id is never reused.

        A forgotten value comes back under a new id, so the shapes kept under its old one
        are never found again (and age out).

        Args:
            value: A context or an offer group (:func:`context`, :func:`group`).

        Returns:
            Its id.
        """
        with self._lock:
            got = self._ids.get(value)
            if got is not None:
                self._ids.move_to_end(value)
                return got
            got = self._ids[value] = self._next
            self._next += 1
            while len(self._ids) > self.max_values:
                self._ids.popitem(last=False)
            return got

    def get(self, key: Hashable) -> Prepared | None:
        """Return a prepared shape, if kept.

        Args:
            key: Shape key, context id and group ids.

        Returns:
            The prepared shape, or None.
        """
        with self._lock:
            hit = self._shapes.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._shapes.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: Hashable, prepared: Prepared) -> Prepared:
        """Keep a prepared shape, dropping the least recently used.

        Args:
            key: Shape key, context id and group ids.
            prepared: What was computed for it.

        Returns:
            ``prepared``.
        """
        with self._lock:
            self._shapes[key] = prepared
            while len(self._shapes) > self.max_shapes:
                self._shapes.popitem(last=False)
            return prepared

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._shapes.clear()
            self._ids.clear()

    def __len__(self) -> int:
        """Shapes kept."""
        with self._lock:
            return len(self._shapes)
