"""Plan a small workload against a CoreWeave (CKS) cluster's real node pools, or the simulation.

Run: ``.venv/bin/python examples/coreweave_plan.py [--kubeconfig PATH] [--context NAME]
[--namespace NS] [--fake]``

With a kubeconfig that reaches a cluster (``--kubeconfig``, ``$KUBECONFIG`` or
``~/.kube/config``; or in-cluster when run in a pod), it asks the real ``coreweave`` adapter for
the cluster's GPU node pools, priced from the CoreWeave list prices, and plans against them.
Without one (or when the cluster does not answer) it says so and plans against the simulated
``coreweave`` cloud of the shipped catalog instead, so it runs with no credentials at all.
``--fake`` points the real adapter at the in-package fake API server (no cluster needed).

Nothing is launched: planning only reads nodes and pods. The machinery is
``examples/kubernetes_plan.py``'s: CoreWeave is a preset of the generic Kubernetes adapter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from kubernetes_plan import JOBS, arguments, choose, report

from multicloud.models import Fleet
from multicloud.specs import parse_fleet


def _sim_fleet() -> Fleet:
    doc = {
        "providers": {
            "coreweave": {
                "adapter": "sim",
                "catalog": "builtin",
                "regions": ["US-EAST-04"],
                "capacity": {"cw-hgx-h100-8x": 4, "cw-a100-80gb-8x": 2, "cw-l40s-8x": 2},
            }
        }
    }
    return parse_fleet(json.dumps(doc), "<sim>")


@contextlib.contextmanager
def _fake_cluster() -> Iterator[dict[str, Any]]:
    from multicloud_coreweave.testing import serve

    with serve() as kube:
        # InfiniBand H100 nodes labelled as CKS labels them: the instance id only.
        kube.add_nodes(3, gpu_class=None, instance_type="gd-8xh100ib-i128", region="US-EAST-04")
        kube.add_nodes(2, gpu_class="A100_NVLINK_80GB", region="US-EAST-04")
        kube.add_nodes(1, gpu_class="L40S", region="US-EAST-04")
        yield kube.options


def main() -> None:
    """Plan the example jobs and print where each one goes."""
    args = arguments(__doc__.splitlines()[0], kueue=False)
    try:
        from multicloud_coreweave import CoreWeaveProvider
    except ImportError:
        report(JOBS, (_sim_fleet(), "multicloud-coreweave is not installed: planning on the "
                                    "simulation"))
        return
    with contextlib.ExitStack() as stack:
        report(JOBS, choose(args, stack, adapter="coreweave", options={}, fake=_fake_cluster,
                            sim=_sim_fleet, make=CoreWeaveProvider))


if __name__ == "__main__":
    main()
