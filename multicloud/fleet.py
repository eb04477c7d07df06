"""From a fleet file to a planner snapshot: the effectful edge around the pure planner.

This is where adapters are loaded and asked for offers; the planner itself never sees a
provider object, only the offers they returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from multicloud import providers as registry
from multicloud.accelerators import suggest
from multicloud.catalog import load_catalog
from multicloud.errors import SpecError
from multicloud.models import Fleet, Job
from multicloud.planner import Plan, Policy, Snapshot, plan
from multicloud.provider import Offer, Provider, ResourceRequest


def load_providers(fleet: Fleet, **runtime: object) -> dict[str, Provider]:
    """Instantiate every provider of the fleet.

    Args:
        fleet: The fleet.
        **runtime: Extra keyword arguments for every adapter (e.g. a clock).

    Returns:
        Fleet provider name → provider.

    Raises:
        ProviderNotFoundError: If an adapter is not installed or unknown.
        SpecError: If a provider entry's settings do not fit its adapter.
    """
    return {name: registry.from_fleet(fleet, name, **runtime) for name in fleet.providers}


def collect_offers(
    providers: Mapping[str, Provider], jobs: Sequence[Job] | None = None
) -> list[Offer]:
    """Ask every provider for its offers, narrowed to the accelerators the jobs want.

    Args:
        providers: Fleet provider name → provider.
        jobs: When given, only offers for these jobs' accelerators are requested.

    Returns:
        All offers, provider by provider.
    """
    accelerators: tuple[str, ...] = ()
    if jobs:
        accelerators = tuple(sorted({a for j in jobs for a in j.resources.accelerator}))
    request = ResourceRequest(accelerators=accelerators)
    out: list[Offer] = []
    for provider in providers.values():
        out.extend(provider.offers(request))
    return out


def snapshot(
    jobs: Sequence[Job],
    fleet: Fleet,
    offers: Sequence[Offer],
    *,
    now: datetime | None = None,
    job_ids: Sequence[str] | None = None,
    **state: object,
) -> Snapshot:
    """Assemble the planner's snapshot.

    Args:
        jobs: Jobs in submission order.
        fleet: The fleet (contracts and budgets).
        offers: Offers with capacity left.
        now: Current time (deadlines, reservation windows, commitment schedules).
        job_ids: Job ids, if not the names.
        **state: Further :class:`Snapshot` fields (blocked, unresponsive, ...).

    Returns:
        The snapshot.
    """
    catalog = load_catalog()
    return Snapshot(
        jobs=list(jobs),
        offers=list(offers),
        contracts=fleet.contracts,
        budgets=fleet.budgets,
        job_ids=job_ids,
        now=now,
        latency=catalog.latency_ms,
        catalog_version=catalog.version,
        **state,  # type: ignore[arg-type]
    )


def check_reservations(
    fleet: Fleet, providers: Mapping[str, Provider], source: str = "fleet"
) -> None:
    """Check that every reservation names an instance type its provider offers there.

    A misspelt reservation would otherwise be dropped silently and its prepaid capacity
    never used.

    Args:
        fleet: The fleet.
        providers: Its loaded providers.
        source: Fleet file name for messages.

    Raises:
        SpecError: Naming the reservation field, with a "did you mean".
    """
    problems: list[tuple[str, str]] = []
    for i, res in enumerate(fleet.contracts.reservations):
        if res.accelerator is not None and res.count is not None:
            continue  # fully described: nothing to look up
        offered = providers[res.provider].offers(ResourceRequest(regions=(res.region,)))
        types = sorted({o.instance_type for o in offered})
        if res.instance_type in types:
            continue
        hint = suggest(res.instance_type, types)
        tail = f"; did you mean '{hint}'?" if hint else ""
        where = f"{res.provider}/{res.region}"
        problems.append(
            (
                f"contracts.reservations[{i}].instance_type",
                f"{where} offers no '{res.instance_type}'{tail} "
                "(or give accelerator and count to describe the block)",
            )
        )
    if problems:
        raise SpecError(source, problems)


def plan_fleet(
    jobs: Sequence[Job],
    fleet: Fleet,
    *,
    now: datetime | None = None,
    policy: Policy | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> Plan:
    """Plan jobs against a fleet offline: load adapters, collect offers, run the planner.

    Args:
        jobs: Jobs in submission order.
        fleet: The fleet.
        now: Current time.
        policy: Planner search settings.
        providers: The fleet's providers, when the caller has built them already.

    Returns:
        The plan.

    Raises:
        SpecError: If a reservation names an instance type its provider does not offer.
    """
    provs = load_providers(fleet) if providers is None else providers
    check_reservations(fleet, provs)
    offers = collect_offers(provs, jobs)
    return plan(snapshot(jobs, fleet, offers, now=now), policy)
