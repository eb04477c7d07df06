"""Plan a few GPU jobs on Azure: real offers when credentials exist, the simulated Azure if not.

Run: ``.venv/bin/python examples/azure_plan.py [--fake]``

- With ``AZURE_SUBSCRIPTION_ID``, ``AZURE_SUBNET_ID`` and ``AZURE_IDENTITY_ID`` set (the
  subscription, the subnet of the VMs and the resource id of the user-assigned identity their
  nodes report with: a fleet entry without them is refused, as ``multicloud start`` refuses
  it) and a credential the DefaultAzureCredential chain can find (environment service
  principal, workload identity, managed identity, ``az login``), it plans against the real
  adapter's offers: catalog prices narrowed by what the subscription may use in each region
  (resource SKU restrictions). Nothing is launched.
- Without them (or when the credential is refused), it says so and plans on ``sim`` with the
  shipped catalog's Azure rows: the same job file, the same planner.
- ``--fake`` runs the real adapter against the fake Azure Resource Manager of
  ``multicloud_azure.testing`` on 127.0.0.1, with one size restricted for the subscription,
  to show the narrowing without an Azure account.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from multicloud.errors import ProviderError, SpecError
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet
from multicloud.provider import Provider
from multicloud.providers import from_fleet
from multicloud.specs import parse_fleet, parse_jobs

REGIONS = ["eastus", "eastus2", "westus3"]

JOBS = """
jobs:
  - name: finetune-a100
    kind: training
    priority: 50
    resources: {accelerator: A100-80GB, count: 8, nodes: 2}
    duration_hours: 12
    run:
      image: ghcr.io/example/trainer:2026.11
      command: python -m finetune
  - name: pretrain-h100
    kind: training
    priority: 40
    resources: {accelerator: H100, count: 8, nodes: 4}
    duration_hours: 24
  - name: eval-t4
    kind: training
    priority: 10
    resources: {accelerator: T4, count: 1}
    duration_hours: 2
"""


def _fleet(adapter: str, options: dict[str, object] | None = None) -> Fleet:
    regions = ", ".join(REGIONS)
    if adapter == "sim":
        entry = f"adapter: sim, catalog: builtin, regions: [{regions}]"
        return parse_fleet(f"providers:\n  azure: {{{entry}}}\n", "<sim-azure>")
    fleet = parse_fleet(
        f"providers:\n  azure: {{adapter: azure, regions: [{regions}]}}\n", "<azure>"
    )
    fleet.providers["azure"].options.update(options or {})
    return fleet


def _plan(fleet: Fleet, provider: Provider, where: str) -> None:
    jobs = parse_jobs(JOBS, "<example>")
    plan = plan_fleet(jobs, fleet, providers={"azure": provider})
    print(f"Planned {len(jobs)} jobs on {where}:")
    for a in plan.placements:
        place = f"{a.offer.zone or a.offer.region}"
        print(
            f"  {a.job:<15} {place:<10} {a.offer.instance_type:<28} {a.nodes:>2} node(s) "
            f"{a.market.value:<9} ${a.cost:>10,.2f}  (prices {a.offer.catalog_version})"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<15} QUEUED: {u.reason}")
    print(f"  total ${plan.total_cost:,.2f}")


@contextlib.contextmanager
def _fake_azure() -> Iterator[dict[str, object]]:
    from multicloud_azure.testing import serve

    with serve() as fake:
        # The subscription may not use ND H100 v5 in eastus: the planner must look elsewhere.
        fake.restrict("eastus", "Standard_ND96isr_H100_v5")
        yield fake.options


def main(argv: list[str]) -> int:
    """Plan the example jobs; see the module docstring."""
    if "--fake" in argv:
        with _fake_azure() as options:
            fleet = _fleet("azure", options)
            _plan(fleet, from_fleet(fleet, "azure"), "the real Azure adapter (fake ARM)")
        return 0
    # DefaultAzureCredential logs every credential it tried; the one-line reason below is enough.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    env = {
        "subscription_id": "AZURE_SUBSCRIPTION_ID",
        "subnet_id": "AZURE_SUBNET_ID",
        "identity_id": "AZURE_IDENTITY_ID",
    }
    options = {option: os.environ.get(var) for option, var in env.items()}
    missing = [env[option] for option, value in options.items() if not value]
    if not missing:
        fleet = _fleet("azure", dict(options))
        try:
            provider = from_fleet(fleet, "azure")
            provider.check()
        except (SpecError, ProviderError) as exc:
            print(f"Azure did not work ({type(exc).__name__}: {exc}).")
        else:
            _plan(fleet, provider, f"Azure subscription {options['subscription_id']}")
            return 0
    else:
        print(f"No Azure fleet entry: {', '.join(missing)} not set.")
    print("Falling back to the simulated Azure priced from the shipped catalog.\n")
    fleet = _fleet("sim")
    _plan(fleet, from_fleet(fleet, "azure"), "the simulated Azure (sim)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
