"""Connected components of a graph given as edge arrays, in numpy (docs/architecture.md).

The optimiser splits its jobs into independent components (jobs, pools and budgets as
nodes); the cost stage's repair groups split jobs by the pools they share.
"""

from __future__ import annotations

import numpy as np

from multicloud.planner.problem import IntArray


def component_labels(size: int, heads: IntArray, tails: IntArray) -> IntArray:
    """One label per node of an undirected graph, the same within and only within each component.

    A forest in an array: every node names a parent with a smaller index, a root names
    itself. Each round, the larger root of every edge whose ends are in different trees
    is hooked under the smaller one, then every node is pointed straight at its root, until
    no edge joins two trees. (scipy's ``connected_components`` did the same, but importing
    ``scipy.sparse.csgraph`` took 0.12 s of every contended ``multicloud plan``; labels
    spread one edge per round took rounds in proportion to a component's length.)

    Args:
        size: Number of nodes.
        heads: One end of each edge.
        tails: The other end.

    Returns:
        A label per node: equal for two nodes if and only if an edge path joins them.
    """
    labels = np.arange(size)
    while len(heads):
        a, b = labels[heads], labels[tails]
        apart = a != b
        if not apart.any():
            break
        np.minimum.at(labels, np.maximum(a, b)[apart], np.minimum(a, b)[apart])
        while True:
            up = labels[labels]
            if np.array_equal(up, labels):
                break
            labels = up
    return labels
