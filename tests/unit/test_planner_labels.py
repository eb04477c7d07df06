"""Component labels of a graph given as edge arrays (graph.component_labels)."""

from __future__ import annotations

import numpy as np
import pytest

from multicloud.planner.graph import component_labels as _labels


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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_long_chain_numbered_out_of_order_is_one_component(seed: int) -> None:
    # Labels spread one edge per round took rounds in proportion to such a chain's
    # length (100,000 nodes: 57,280 rounds); hooking roots takes a handful.
    order = np.random.default_rng(seed).permutation(20_000)
    labels = _labels(20_000, order[:-1], order[1:])
    assert len(set(labels.tolist())) == 1


@pytest.mark.parametrize("seed", range(20))
def test_labels_match_a_search_of_the_graph(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 60))
    heads = rng.integers(0, size, int(rng.integers(0, 80)))
    tails = rng.integers(0, size, len(heads))
    near: dict[int, set[int]] = {v: set() for v in range(size)}
    for h, t in zip(heads.tolist(), tails.tolist(), strict=True):
        near[h].add(t)
        near[t].add(h)
    labels = _labels(size, heads, tails)
    for start in range(size):  # every node reachable from start, and only those, share its label
        seen, todo = {start}, [start]
        while todo:
            for w in near[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        assert {v for v in range(size) if labels[v] == labels[start]} == seen
