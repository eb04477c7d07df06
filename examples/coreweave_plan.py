"""Plan a small workload against a CoreWeave (CKS) cluster's real node pools, or the simulation.

Run: ``.venv/bin/python examples/coreweave_plan.py [--kubeconfig PATH] [--context NAME]
[--namespace NS] [--fake]``

With a kubeconfig that reaches a cluster (``--kubeconfig``, ``$KUBECONFIG`` or
``~/.kube/config``; or in-cluster when run in a pod), it asks the real ``coreweave`` adapter for
the cluster's GPU node pools, priced from the CoreWeave list prices, and plans against them.
Without one (or when the cluster does not answer) it says so and plans against the simulated
``coreweave`` cloud of the shipped catalog instead, so it runs with no credentials at all.
``--fake`` points the real adapter at the in-package fake API server (no cluster needed).

Nothing is launched: planning only reads nodes and pods.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multicloud.errors import MulticloudError
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet
from multicloud.specs import parse_fleet, parse_jobs

JOBS = """
jobs:
  - name: finetune-h100
    kind: training
    priority: 50
    resources: {accelerator: H100, count: 8, nodes: 2}
    duration_hours: 6
    run:
      image: ghcr.io/example/trainer:2026.11
      command: python -m train --config configs/sft.yaml
      secrets: [HF_TOKEN]
  - name: eval-a100
    kind: training
    priority: 40
    resources: {accelerator: [A100-80GB, H100], count: 8, nodes: 1}
    duration_hours: 2
  - name: embed-l40s
    kind: training
    priority: 10
    resources: {accelerator: L40S, count: 8, nodes: 1}
    duration_hours: 1
"""


def _real_fleet(options: dict[str, Any]) -> Fleet:
    doc = {"providers": {"coreweave": {"adapter": "coreweave", "options": options}}}
    return parse_fleet(json.dumps(doc), "<coreweave>")


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


def _kubeconfig(given: str | None) -> str | None:
    if given:
        return given
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return env or (str(default) if default.exists() else None)


@contextlib.contextmanager
def _fake_cluster() -> Iterator[dict[str, Any]]:
    from multicloud_coreweave.testing import serve

    with serve() as kube:
        # InfiniBand H100 nodes labelled as CKS labels them: the instance id only.
        kube.add_nodes(3, gpu_class=None, instance_type="gd-8xh100ib-i128", region="US-EAST-04")
        kube.add_nodes(2, gpu_class="A100_NVLINK_80GB", region="US-EAST-04")
        kube.add_nodes(1, gpu_class="L40S", region="US-EAST-04")
        yield kube.options


def _choose(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[Fleet, str]:
    """Return the fleet to plan on and a line saying which one it is."""
    try:
        from multicloud_coreweave import CoreWeaveProvider
    except ImportError:
        return _sim_fleet(), "multicloud-coreweave is not installed: planning on the simulation"
    options: dict[str, Any] = {"namespace": args.namespace, "request_timeout_s": 5.0}
    if args.fake:
        options.update(stack.enter_context(_fake_cluster()))
        where = "the in-package fake CoreWeave cluster"
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        options["in_cluster"] = True
        where = "this pod's cluster (in-cluster ServiceAccount)"
    else:
        path = _kubeconfig(args.kubeconfig)
        if path is None or not Path(path).exists():
            return _sim_fleet(), (
                "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config): "
                "planning on the simulated CoreWeave cloud instead"
            )
        options["kubeconfig"] = path
        if args.context:
            options["context"] = args.context
        where = f"the cluster of {path}" + (f" (context {args.context})" if args.context else "")
    provider = CoreWeaveProvider(**options)
    try:
        provider.check()
    except MulticloudError as exc:
        return _sim_fleet(), f"{where} is not usable ({exc}): planning on the simulation"
    finally:
        provider.close()
    return _real_fleet(options), f"planning on {where}"


def main() -> None:
    """Plan the example jobs and print where each one goes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig path")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--namespace", default="default", help="namespace of the workloads")
    parser.add_argument("--fake", action="store_true", help="use the in-package fake cluster")
    args = parser.parse_args()

    jobs = parse_jobs(JOBS, "<example>")
    with contextlib.ExitStack() as stack:
        fleet, why = _choose(args, stack)
        print(why)
        plan = plan_fleet(jobs, fleet)
    print()
    for a in plan.placements:
        where = f"{a.offer.provider}/{a.offer.zone or a.offer.region}"
        print(
            f"  {a.job:<16} {where:<24} {a.offer.instance_type:<20} {a.nodes:>2} node(s) "
            f"${a.offer.price or 0:>7,.2f}/node-h  total ${a.cost:>9,.2f}"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<16} QUEUED: {u.reason}")
    print(f"\n  total ${plan.total_cost:,.2f}")


if __name__ == "__main__":
    main()
