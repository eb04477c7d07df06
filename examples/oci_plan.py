"""Plan a few GPU jobs on Oracle Cloud: real offers when configured, the simulated OCI if not.

Run: ``.venv/bin/python examples/oci_plan.py [--fake]``

- With ``OCI_COMPARTMENT_ID``, ``OCI_SUBNET_ID`` and ``OCI_IMAGE_ID`` set (the subnet and the
  image of ``OCI_REGION``, default ``us-ashburn-1``) and an API key in ``~/.oci/config``, it
  plans against the real adapter's offers: Oracle's prices narrowed per availability domain
  to the shapes the tenancy may launch there, with the capacity report and any capacity
  reservation at $0. Nothing is launched.
- Without them (or when the credentials are refused), it says so and plans on ``sim`` with
  the shipped catalog's OCI rows: the same job file, the same planner.
- ``--fake`` runs the real adapter against the fake OCI REST API of ``multicloud_oci.testing``
  on 127.0.0.1, where availability domain 1 does not offer H100 and AD 3 holds a reservation
  of two H100 nodes, to show the narrowing without an Oracle account.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from multicloud.errors import ProviderError
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet
from multicloud.provider import Provider
from multicloud.providers import from_fleet
from multicloud.specs import parse_fleet, parse_jobs

REGION = os.environ.get("OCI_REGION", "us-ashburn-1")

JOBS = """
jobs:
  - name: pretrain-h100
    kind: training
    priority: 50
    resources: {accelerator: H100, count: 8, nodes: 2}
    duration_hours: 24
    run:
      image: ghcr.io/example/trainer:2026.12
      command: torchrun train.py
  - name: finetune-mi300x
    kind: training
    priority: 40
    resources: {accelerator: MI300X, count: 8}
    duration_hours: 12
  - name: eval-a10
    kind: training
    priority: 10
    resources: {accelerator: A10, count: 1}
    duration_hours: 2
"""


def _fleet(adapter: str, options: dict[str, object] | None = None) -> Fleet:
    if adapter == "sim":
        entry = f"adapter: sim, catalog: builtin, regions: [{REGION}]"
        return parse_fleet(f"providers:\n  oci: {{{entry}}}\n", "<sim-oci>")
    fleet = parse_fleet(f"providers:\n  oci: {{adapter: oci, regions: [{REGION}]}}\n", "<oci>")
    fleet.providers["oci"].options.update(options or {})
    return fleet


def _plan(fleet: Fleet, provider: Provider, where: str) -> None:
    jobs = parse_jobs(JOBS, "<example>")
    plan = plan_fleet(jobs, fleet, providers={"oci": provider})
    print(f"Planned {len(jobs)} jobs on {where}:")
    for a in plan.placements:
        place = a.offer.zone or a.offer.region
        held = f" in {a.offer.reservation}" if a.offer.reservation else ""
        print(
            f"  {a.job:<16} {place:<24} {a.offer.instance_type:<18} {a.nodes:>2} node(s) "
            f"{a.market.value:<9} ${a.cost:>10,.2f}{held}  (prices {a.offer.catalog_version})"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<16} QUEUED: {u.reason}")
    print(f"  total ${plan.total_cost:,.2f}")


@contextlib.contextmanager
def _fake_oci() -> Iterator[dict[str, object]]:
    from multicloud_oci.testing import serve

    with serve((REGION,)) as fake:
        ad1, _, ad3 = fake.ads[REGION]
        fake.shapes[ad1].pop("BM.GPU.H100.8")
        fake.add_reservation(REGION, ad3, "BM.GPU.H100.8", 2)
        yield fake.options


def main(argv: list[str]) -> int:
    """Plan the example jobs; see the module docstring."""
    if "--fake" in argv:
        with _fake_oci() as fake_options:
            fleet = _fleet("oci", fake_options)
            _plan(fleet, from_fleet(fleet, "oci"), "the real OCI adapter (fake OCI API)")
        return 0
    needed = ("OCI_COMPARTMENT_ID", "OCI_SUBNET_ID", "OCI_IMAGE_ID")
    if all(os.environ.get(name) for name in needed):
        options: dict[str, object] = {
            "compartment_id": os.environ["OCI_COMPARTMENT_ID"],
            "subnets": {REGION: os.environ["OCI_SUBNET_ID"]},
            "images": {REGION: os.environ["OCI_IMAGE_ID"]},
        }
        fleet = _fleet("oci", options)
        try:
            provider = from_fleet(fleet, "oci")
            provider.check()
        except (ProviderError, OSError, ValueError) as exc:
            # A missing or malformed ~/.oci/config is the SDK's own error, not a ProviderError.
            print(f"OCI credentials did not work ({type(exc).__name__}: {exc}).")
        else:
            _plan(fleet, provider, f"OCI compartment {options['compartment_id']}")
            return 0
    else:
        print(f"No OCI configuration: set {', '.join(needed)} (and ~/.oci/config).")
    print("Falling back to the simulated OCI priced from the shipped catalog.\n")
    fleet = _fleet("sim")
    _plan(fleet, from_fleet(fleet, "oci"), "the simulated OCI (sim)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
