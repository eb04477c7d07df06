"""Plan three jobs against Google Cloud: the real adapter's offers when credentials exist.

Run: ``.venv/bin/python examples/gcp_plan.py [--project my-project] [--region us-central1]``

With Google credentials (Application Default Credentials: ``gcloud auth application-default
login``, ``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata server on GCE/GKE) and
``multicloud-gcp`` installed, the plan uses the live GCP adapter: catalog prices narrowed by the
machine types and TPU slices Google really lists in your regions. Nothing is launched; only
read-only listing calls are made.

Without credentials (or without the adapter) it says so and plans the same jobs on the ``sim``
provider priced from the same shipped catalog, so it always runs — offline too.
"""

from __future__ import annotations

import argparse
import json

from multicloud.errors import MulticloudError
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet, Job
from multicloud.specs import parse_fleet

JOBS = [
    {
        "name": "llm-pretrain",
        "kind": "training",
        "resources": {"accelerator": ["H100"], "count": 8, "nodes": 2},
        "market": "any",
        "duration_hours": 12,
    },
    {
        "name": "jax-finetune",
        "kind": "training",
        "resources": {"accelerator": ["TPU-v5e"], "count": 8},
        "market": "on-demand",
        "duration_hours": 6,
    },
    {
        "name": "l4-batch-eval",
        "kind": "training",
        "resources": {"accelerator": ["L4"], "count": 1, "nodes": 4},
        "market": "spot",
        "duration_hours": 2,
    },
]


def gcp_fleet(regions: list[str], project: str | None) -> tuple[Fleet, str]:
    """Return the fleet to plan on and a line saying which one it is.

    Args:
        regions: Regions to consider.
        project: Project id, when not the one Application Default Credentials name.

    Returns:
        ``(fleet, description)``: the live GCP adapter if credentials work, else ``sim``.
    """
    sim = parse_fleet(
        "providers:\n  gcp:\n    adapter: sim\n    catalog: builtin\n"
        f"    regions: {json.dumps(regions)}\n"
    )
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from multicloud_gcp import GCPProvider
    except ImportError as exc:
        return sim, f"multicloud-gcp is not installed ({exc}); planning on the sim provider"
    try:
        _, found_project = google.auth.default()
    except DefaultCredentialsError:
        return sim, (
            "no Google credentials found (run `gcloud auth application-default login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS); planning on the sim provider with catalog prices"
        )
    options = {"project": project} if project else {}
    try:
        GCPProvider(regions=regions, **options).check()
    except MulticloudError as exc:
        return sim, f"Google credentials found but unusable ({exc}); planning on sim instead"
    live = parse_fleet(
        "providers:\n  gcp:\n    adapter: gcp\n"
        f"    regions: {json.dumps(regions)}\n    options: {json.dumps(options)}\n"
    )
    return live, f"live GCP adapter, project {project or found_project}"


def main() -> None:
    """Plan the jobs and print where each goes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=None, help="GCP project (default: from ADC)")
    parser.add_argument(
        "--region", action="append", default=None, help="region (repeatable; default 2)"
    )
    args = parser.parse_args()
    regions = args.region or ["us-central1", "europe-west4"]

    fleet, description = gcp_fleet(regions, args.project)
    print(f"Fleet: {description}")
    jobs = [Job.model_validate(j) for j in JOBS]
    plan = plan_fleet(jobs, fleet)
    for p in plan.placements:
        where = p.offer.zone or p.offer.region
        print(
            f"  {p.job:<15} {where:<18} {p.offer.instance_type:<18} {p.nodes:>2} node(s) "
            f"{p.market.value:<9} ${p.cost:>10,.2f}  (catalog {p.offer.catalog_version})"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<15} QUEUED: {u.reason}")
    print(f"Total: ${plan.total_cost:,.2f}")


if __name__ == "__main__":
    main()
