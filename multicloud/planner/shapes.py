"""Feasible options per job shape, kept across plans (docs/architecture.md, "The planner").

Working out which offers can take a job shape is most of a small plan's time, and a
scheduler plans the same shapes against much the same offers cycle after cycle. The work
splits in two:

* :class:`Prepared`, what does not depend on capacity: every filter but "capacity below N
  nodes" (accelerator, size, placement, residency, blocked scopes, latency, market, price
  cap) and the options that pass them in rank order. It is a function of the job's shape
  and of the *table*: every offer field but capacity (reservation offers included, so the
  reservations' windows at ``now`` are in it), the ROFR holders, the blocked scopes, the
  latency function and the commitment discounts at ``now``.
* :meth:`Prepared.finish`, which applies capacity: the offers whose nodes left are fewer
  than a gang's are taken out; the rest is a filter of the prepared list.

A :class:`ShapeCache` keeps prepared shapes under the table's exact fingerprint (a tuple
of those values, compared by equality, never by hash alone), so an entry can only be used
for the table it was computed from: a new price, offer, blocked scope, holder or discount
is a new table. Both levels are bounded (least recently used goes first). The planner
stays a pure function: the cache only memoises a pure computation, and a plan with a
cache equals the plan without one. One scheduler owns one cache and runs one plan at a
time with it; the lock makes a misuse safe, not fast.
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

Table = tuple[Hashable, ...]


def fingerprint(
    offers: Sequence[Offer],
    holders: frozenset[str],
    blocked: frozenset[str],
    latency: LatencyFn | None,
    preferred: Mapping[str, float],
) -> Table:
    """Return everything but capacity that a shape's options depend on.

    Args:
        offers: The planner's offer table (reservation offers included), in order.
        holders: ROFR holders.
        blocked: Blocked scopes.
        latency: Region latency function (compared by equality: the same bound method of
            the same catalog is the same function).
        preferred: Providers behind a commitment → ranking discount.

    Returns:
        A hashable tuple; two tables with equal fingerprints give equal options.
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
    return (rows, holders, blocked, latency, tuple(sorted(preferred.items())))


@dataclass
class Survivor:
    """An offer that passed every capacity-free filter up to the capacity one.

    Attributes:
        oi: Index of the offer in the table.
        provider: Its provider.
        stage: 0 if it yields options, else the stage of the filter after capacity that
            removed it.
        why: That filter's reason.
    """

    oi: int
    provider: str
    stage: int = 0
    why: str = ""


@dataclass
class Prepared:
    """A job shape's options on one table, before capacity is applied.

    Attributes:
        nodes: Nodes of one gang (the capacity threshold).
        rejects: How many offers each capacity-free filter before capacity removed.
        stage_of: Provider → highest such filter stage that removed one of its offers.
        reasons: Filter stage → its reason for this shape.
        survivors: Offers that reached the capacity filter, in table order.
        opts: Their options, cheapest (by rank) first.
        finished: Finished options by the tuple of capacity-short offers (a few kept).
    """

    nodes: int
    rejects: Counter[str]
    stage_of: dict[str, int]
    reasons: dict[int, str]
    survivors: list[Survivor]
    opts: list[Opt]
    finished: OrderedDict[tuple[int, ...], Options] = field(default_factory=OrderedDict)

    def short(self, offers: Sequence[Offer]) -> tuple[int, ...]:
        """Return the survivors whose capacity is below one gang's nodes.

        Args:
            offers: The current table (its capacities are read).

        Returns:
            Their offer indices, in table order.
        """
        nodes = self.nodes
        out: list[int] = []
        for s in self.survivors:
            cap = offers[s.oi].capacity
            if cap is not None and cap < nodes:
                out.append(s.oi)
        return tuple(out)


Shapes = OrderedDict[Hashable, Prepared]


class ShapeCache:
    """Prepared options per job shape per table, bounded, least recently used first out.

    Args:
        max_tables: Tables kept (a scheduler needs one or two: the current offers).
        max_shapes: Shapes kept per table.
    """

    def __init__(self, max_tables: int = 4, max_shapes: int = 4096) -> None:
        if max_tables < 1 or max_shapes < 1:
            raise ValueError("a shape cache needs room for a table and a shape")
        self.max_tables = max_tables
        self.max_shapes = max_shapes
        self._tables: OrderedDict[Table, Shapes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def table(self, table: Table) -> Shapes:
        """Return the shapes kept for a table (a new, empty one if it is not kept).

        The fingerprint is hashed here, once per plan: hashing it is the cost of reading
        every offer.

        Args:
            table: The table's fingerprint.

        Returns:
            Its shapes, to :meth:`get` from and :meth:`put` into during the plan.
        """
        with self._lock:
            shapes = self._tables.get(table)
            if shapes is None:
                shapes = self._tables[table] = OrderedDict()
                while len(self._tables) > self.max_tables:
                    self._tables.popitem(last=False)
            else:
                self._tables.move_to_end(table)
            return shapes

    def get(self, shapes: Shapes, shape: Hashable) -> Prepared | None:
        """Return a prepared shape of a table, if kept.

        Args:
            shapes: The table's shapes (:meth:`table`).
            shape: The job-shape key.

        Returns:
            The prepared shape, or None.
        """
        with self._lock:
            hit = shapes.get(shape)
            if hit is None:
                self.misses += 1
                return None
            shapes.move_to_end(shape)
            self.hits += 1
            return hit

    def put(self, shapes: Shapes, shape: Hashable, prepared: Prepared) -> None:
        """Keep a prepared shape of a table, dropping the least recently used.

        Args:
            shapes: The table's shapes (:meth:`table`).
            shape: The job-shape key.
            prepared: What was computed on this table for this shape.
        """
        with self._lock:
            shapes[shape] = prepared
            while len(shapes) > self.max_shapes:
                shapes.popitem(last=False)

    def clear(self) -> None:
        """Forget every table."""
        with self._lock:
            self._tables.clear()

    def __len__(self) -> int:
        """Shapes kept over all tables."""
        with self._lock:
            return sum(len(s) for s in self._tables.values())
