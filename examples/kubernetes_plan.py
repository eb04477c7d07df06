"""Plan a small workload against any Kubernetes GPU cluster's node pools, or the simulation.

Run: ``.venv/bin/python examples/kubernetes_plan.py [--kubeconfig PATH] [--context NAME]
[--namespace NS] [--local-queue QUEUE] [--fake]``

With a kubeconfig that reaches a cluster (``--kubeconfig``, ``$KUBECONFIG`` or
``~/.kube/config``; or in-cluster when run in a pod), it asks the real ``kubernetes`` adapter
for the cluster's GPU node pools (typed by GPU feature discovery, AMD's labeller, GKE's
accelerator label or the instance type), priced by this example's price card — the lab's own
H100 nodes at their amortised cost — and plans against them; with ``--local-queue`` every
launch would go through that Kueue LocalQueue. Without a cluster it says so and plans
against a simulated one with the same prices, so it runs with no credentials at all.
``--fake`` points the real adapter at the in-package fake API server, running Kueue.

Nothing is launched: planning only reads nodes and pods.

``examples/coreweave_plan.py`` is the same jobs over the CoreWeave preset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
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
      command: torchrun train.py --config configs/sft.yaml
      secrets: [HF_TOKEN]
  - name: eval-a100
    kind: training
    priority: 40
    resources: {accelerator: [A100-80GB, H100], count: 8, nodes: 1}
    duration_hours: 2
  - name: embed
    kind: training
    priority: 10
    resources: {accelerator: [MI300X, L40S], count: 8, nodes: 1}
    duration_hours: 1
"""

# Owned H100 nodes: $250k each over four years, plus $1.50 an hour to run; the A100s are
# paid off (an explicit $0); the MI300X nodes are rented.
PRICE_CARD: dict[str, Any] = {
    "H100": {"cost_usd": 250_000, "years": 4, "running_usd_per_hour": 1.5},
    "A100-80GB": 0,
    "MI300X": 26.0,
}
# The same cluster simulated: (instance type, accelerator, nodes, USD per node-hour).
SIM = [("h100x8", "H100", 4, round(250_000 / (4 * 8760) + 1.5, 4)),
       ("a100-80gbx8", "A100-80GB", 2, 0.0), ("mi300xx8", "MI300X", 1, 26.0)]

Choice = tuple[Fleet, str]


def fleet_of(adapter: str, name: str, options: dict[str, Any]) -> Fleet:
    """A one-entry fleet of ``adapter`` with ``options``."""
    doc = {"providers": {name: {"adapter": adapter, "options": options}}}
    return parse_fleet(json.dumps(doc), f"<{name}>")


def kubeconfig_path(given: str | None) -> str | None:
    """The kubeconfig to use: given, ``$KUBECONFIG``'s first, or ``~/.kube/config``."""
    if given:
        return given
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return env or (str(default) if default.exists() else None)


def choose(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    *,
    adapter: str,
    options: dict[str, Any],
    fake: Callable[[], contextlib.AbstractContextManager[dict[str, Any]]],
    sim: Callable[[], Fleet],
    make: Callable[..., Any],
) -> Choice:
    """Return the fleet to plan on (a real cluster, the fake, or the simulation) and why.

    Args:
        args: ``--kubeconfig``, ``--context``, ``--namespace``, ``--fake``.
        stack: Holds the fake cluster open while planning.
        adapter: The adapter's registered name.
        options: Fleet options besides where the cluster is.
        fake: The in-package fake cluster (its fleet options).
        sim: The simulated fallback fleet.
        make: The adapter class (to probe the cluster).

    Returns:
        The fleet and a line saying which one it is.
    """
    options = {**options, "namespace": args.namespace, "request_timeout_s": 5.0}
    if args.fake:
        options.update(stack.enter_context(fake()))
        where = f"the in-package fake {adapter} cluster"
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        options["in_cluster"] = True
        where = "this pod's cluster (in-cluster ServiceAccount)"
    else:
        path = kubeconfig_path(args.kubeconfig)
        if path is None or not Path(path).exists():
            return sim(), (
                "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config): "
                f"planning on a simulated {adapter} cluster instead"
            )
        options["kubeconfig"] = path
        if args.context:
            options["context"] = args.context
        where = f"the cluster of {path}" + (f" (context {args.context})" if args.context else "")
    provider = make(**options)
    try:
        provider.check()
    except MulticloudError as exc:
        return sim(), f"{where} is not usable ({exc}): planning on the simulation"
    finally:
        provider.close()
    return fleet_of(adapter, adapter, options), f"planning on {where}"


def report(jobs: str, choice: Choice) -> None:
    """Plan ``jobs`` on the chosen fleet and print where each one goes."""
    fleet, why = choice
    print(why)
    plan = plan_fleet(parse_jobs(jobs, "<example>"), fleet)
    print()
    for a in plan.placements:
        where = f"{a.offer.provider}/{a.offer.zone or a.offer.region}"
        print(
            f"  {a.job:<16} {where:<24} {a.offer.instance_type:<24} {a.nodes:>2} node(s) "
            f"${a.offer.price or 0:>7,.2f}/node-h  total ${a.cost:>9,.2f}"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<16} QUEUED: {u.reason}")
    print(f"\n  total ${plan.total_cost:,.2f}")


def arguments(description: str, *, kueue: bool) -> argparse.Namespace:
    """Parse the examples' common arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--kubeconfig", help="kubeconfig path")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--namespace", default="default", help="namespace of the workloads")
    if kueue:
        parser.add_argument("--local-queue", help="Kueue LocalQueue to submit through")
    parser.add_argument("--fake", action="store_true", help="use the in-package fake cluster")
    return parser.parse_args()


def _sim() -> Fleet:
    offers = [{"region": "on-prem", "instance_type": t, "accelerator": a, "count": 8,
               "price": p, "capacity": n} for t, a, n, p in SIM]
    doc = {"providers": {"kubernetes": {"adapter": "sim", "offers": offers}}}
    return parse_fleet(json.dumps(doc), "<sim>")


@contextlib.contextmanager
def _fake_cluster() -> Iterator[dict[str, Any]]:
    from multicloud_kubernetes.testing import serve

    with serve(kueue="v1beta2") as kube:
        kube.add_nodes(4, region="on-prem")  # NVIDIA-H100-80GB-HBM3, GPU feature discovery
        kube.add_nodes(2, product="NVIDIA-A100-SXM4-80GB", region="on-prem")
        kube.add_nodes(1, product="AMD_Instinct_MI300X_OAM", vendor="amd", region="on-prem")
        kube.kueue.add_cluster_queue("lab", {"nvidia.com/gpu": "48", "amd.com/gpu": "8"})
        kube.kueue.add_local_queue("research", "lab")
        yield {**kube.options, "local_queue": "research"}


def main() -> None:
    """Plan the example jobs and print where each one goes."""
    args = arguments(__doc__.splitlines()[0], kueue=True)
    try:
        from multicloud_kubernetes import KubernetesProvider
    except ImportError:
        report(JOBS, (_sim(), "multicloud-kubernetes is not installed: planning on the "
                              "simulation"))
        return
    options: dict[str, Any] = {"price_card": PRICE_CARD}
    if args.local_queue:
        options["local_queue"] = args.local_queue
    with contextlib.ExitStack() as stack:
        report(JOBS, choose(args, stack, adapter="kubernetes", options=options,
                            fake=_fake_cluster, sim=_sim, make=KubernetesProvider))


if __name__ == "__main__":
    main()
