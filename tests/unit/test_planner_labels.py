"""Component labels of the optimiser's job-pool-team graph (milp._labels)."""

from __future__ import annotations

import numpy as np
import pytest

from multicloud.planner.milp import _labels


@pytest.mark.parametrize(
    ("size", "edges", "parts"),
    [
        (3, [], [{0}, {1}, {2}]),  # no edge: every node alone
        (4, [(0, 3), (1, 3)], [{0, 1, 3}, {2}]),  # two jobs on one pool
        # a chain whose least node is at its far end: labels must travel its length
        (6, [(5, 4), (4, 3), (3, 2), (2, 1), (1, 0)], [{0, 1, 2, 3, 4, 5}]),
        (6, [(0, 4), (1, 5), (2, 4), (2, 5)], [{0, 1, 2, 4, 5}, {3}]),  # joined by job 2
        (3, [(1, 1)], [{0}, {1}, {2}]),  # a loop joins nothing
    ],
)
def test_labels_are_equal_exactly_within_each_component(
    size: int, edges: list[tuple[int, int]], parts: list[set[int]]
) -> None:
    heads = np.array([h for h, _ in edges], dtype=np.int64)
    tails = np.array([t for _, t in edges], dtype=np.int64)
    labels = _labels(size, heads, tails).tolist()
    got: dict[int, set[int]] = {}
    for node, label in enumerate(labels):
        got.setdefault(label, set()).add(node)
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, parts))
