"""Pydantic models of the job spec and the fleet file, as users write them in YAML.

Every model forbids unknown fields: a typo must be an error that names the field, never a
silently ignored setting (DESIGN.md §7).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from multicloud.accelerators import canonical

JURISDICTIONS: tuple[str, ...] = (
    "US", "CA", "BR", "CL", "EU", "UK", "CH", "NO", "IL", "AE", "SA", "QA", "IN", "JP", "KR",
    "SG", "ID", "AU", "TW", "HK", "ZA", "MX",
)

def _as_utc(value: datetime) -> datetime:
    # A time written without a zone is read as UTC: comparing it with aware times (now,
    # other contract dates) would otherwise fail deep inside planning.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_.]{0,61}[a-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _region_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    # An empty or blank glob can never match a region: a constraint nothing satisfies is a
    # typo, not a wish, and must be named rather than leave the job unplaceable.
    for glob in value:
        if not glob.strip():
            raise ValueError("a region glob cannot be empty (e.g. 'us-*' or 'europe-west4')")
        if glob != glob.strip() or any(c.isspace() for c in glob):
            raise ValueError(f"region glob {glob!r} contains white space")
    return value


RegionGlobs = Annotated[tuple[str, ...], AfterValidator(_region_globs)]


class Kind(str, Enum):
    """What a job is: a training gang or an inference service."""

    TRAINING = "training"
    INFERENCE = "inference"


class Market(str, Enum):
    """Which pricing markets a job accepts."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    ANY = "any"


class Resources(_Strict):
    """What one node of the job needs, and how many nodes form its gang.

    Attributes:
        accelerator: Acceptable accelerators (one name or a list), canonicalised.
        count: Accelerators per node.
        nodes: Nodes in the gang (training) or per replica (inference).
        cpus: CPUs per node, used by the ``local`` provider.
    """

    accelerator: tuple[str, ...] = Field(description="One accelerator name or a list of them")
    count: Annotated[int, Field(ge=1, le=1024)] = 1
    nodes: Annotated[int, Field(ge=1, le=4096)] = 1
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None

    @field_validator("accelerator", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("accelerator")
    @classmethod
    def _canonical(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one accelerator")
        return tuple(dict.fromkeys(canonical(v) for v in value))


class Placement(_Strict):
    """Hard placement constraints.

    Attributes:
        providers: Fleet provider names the job may use (empty = any).
        regions: Region globs the job may use (empty = any), e.g. ``us-*``.
        residency: Jurisdictions the job's data may live in (empty = any).
    """

    providers: tuple[str, ...] = ()
    regions: RegionGlobs = ()
    residency: tuple[str, ...] = ()

    @field_validator("residency")
    @classmethod
    def _known_jurisdiction(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from multicloud.accelerators import suggest

        out = []
        for item in value:
            up = item.upper()
            if up not in JURISDICTIONS:
                hint = suggest(item, JURISDICTIONS)
                tail = f"; did you mean '{hint}'?" if hint else ""
                raise ValueError(f"unknown jurisdiction '{item}'{tail}")
            out.append(up)
        return tuple(out)


class Serving(_Strict):
    """Where an inference service's replicas go.

    Attributes:
        replicas: Number of replicas.
        regions_near: Regions where the users are.
        max_latency_ms: Largest round trip allowed from a replica to a region in ``regions_near``.
        spread: Minimum number of distinct providers hosting replicas.
    """

    replicas: Annotated[int, Field(ge=1, le=10_000)] = 1
    regions_near: RegionGlobs = ()
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    spread: Annotated[int, Field(ge=1, le=16)] = 1

    @model_validator(mode="after")
    def _spread_fits(self) -> Serving:
        if self.spread > self.replicas:
            raise ValueError(
                f"spread ({self.spread}) cannot exceed replicas ({self.replicas})"
            )
        if self.max_latency_ms is not None and not self.regions_near:
            raise ValueError("max_latency_ms needs regions_near")
        return self


class Run(_Strict):
    """What the job runs.

    Attributes:
        image: Container image.
        command: Command line (a string runs through ``sh -c``).
        env: Plain environment variables (never secrets).
        secrets: Names of secrets resolved on the host; values never travel with the job.
        checkpoint: Where the job writes checkpoints; declared → resume on re-placement.
        ray: The command is a Ray program (it connects to a Ray cluster and runs once,
            against the head). Where a cloud can start a Ray cluster for the gang (KubeRay),
            it does and submits the command to it; otherwise, and by default, every node of
            the gang runs the command itself (torchrun, MPI, JAX).
    """

    image: str | None = None
    command: str | tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    checkpoint: str | None = None
    ray: bool = False

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]*", name):
                raise ValueError(
                    "secrets are names (e.g. HF_TOKEN), not values; "
                    "got something that is not a name"
                )
        return value


class Job(_Strict):
    """A training or inference job as the user writes it.

    Attributes:
        name: Job name (lowercase letters, digits, ``-``, ``_``, ``.``).
        kind: ``training`` or ``inference``.
        priority: Larger is more important.
        team: Team the job is charged to (for budgets).
        resources: Accelerators per node and nodes.
        market: ``on-demand``, ``spot`` or ``any``.
        duration_hours: Expected run time; cost = price per hour × duration.
        deadline: Latest acceptable finish time.
        max_price_per_hour: Cap on the whole gang's (or service's) price per hour.
        placement: Provider, region and residency constraints.
        serving: Inference replica placement (inference jobs only).
        run: The workload.
    """

    name: str
    kind: Kind = Kind.TRAINING
    priority: int = 0
    team: str | None = None
    resources: Resources
    market: Market = Market.ON_DEMAND
    duration_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 1.0
    deadline: UtcDatetime | None = None
    max_price_per_hour: Annotated[float, Field(gt=0)] | None = None
    placement: Placement = Field(default_factory=Placement)
    serving: Serving | None = None
    run: Run = Field(default_factory=Run)

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use 1-63 lowercase letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _kind_fits(self) -> Job:
        if self.serving is not None and self.kind is not Kind.INFERENCE:
            raise ValueError("serving is only for kind: inference")
        return self

    @property
    def replicas(self) -> int:
        """Number of gangs the job needs (1 for training)."""
        return self.serving.replicas if self.serving else 1


class InlineOffer(_Strict):
    """An offer written inline in a ``sim`` provider's fleet entry.

    Attributes:
        region: Region name (any; unknown regions have no jurisdiction).
        zone: Zone, when the gang must sit in one.
        instance_type: Instance type name.
        accelerator: Accelerator on the instance.
        count: Accelerators per instance.
        price: On-demand price per instance-hour (USD).
        spot_price: Spot price per instance-hour, if spot exists.
        capacity: Nodes available (omitted = unlimited).
    """

    region: str
    zone: str | None = None
    instance_type: str
    accelerator: str
    count: Annotated[int, Field(ge=1)] = 1
    price: Annotated[float, Field(ge=0)]
    spot_price: Annotated[float, Field(ge=0)] | None = None
    capacity: Annotated[int, Field(ge=0)] | None = None

    @field_validator("accelerator")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return canonical(value)


class FaultKind(str, Enum):
    """Faults the sim provider can inject."""

    CAPACITY = "capacity"
    QUOTA = "quota"
    TRANSIENT = "transient"
    PREEMPTION = "preemption"


class Fault(_Strict):
    """A fault the sim provider injects.

    Attributes:
        kind: What to inject.
        region: Only launches in this region (None = any).
        instance_type: Only launches of this instance type (None = any).
        times: How many launches it hits (preemption: how many workloads).
        after_hours: For preemption: simulated hours after start.
    """

    kind: FaultKind
    region: str | None = None
    instance_type: str | None = None
    times: Annotated[int, Field(ge=1)] = 1
    after_hours: Annotated[float, Field(ge=0)] = 0.0


class ProviderConfig(_Strict):
    """One entry of the fleet's ``providers`` map.

    Attributes:
        adapter: Registered adapter name (defaults to the entry's key).
        regions: Region globs this provider may use (empty = all it offers).
        options: Adapter-specific settings.
        catalog: ``builtin`` to use the shipped catalog (sim only).
        offers: Inline offers (sim only).
        capacity: Nodes per instance type, or per ``region/instance_type`` (sim + catalog).
        faults: Injected faults (sim only).
    """

    adapter: str | None = None
    regions: RegionGlobs = ()
    options: dict[str, Any] = Field(default_factory=dict)
    catalog: Literal["builtin"] | None = None
    offers: tuple[InlineOffer, ...] = ()
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    faults: tuple[Fault, ...] = ()


class Rofr(_Strict):
    """Right of first refusal on new capacity.

    Attributes:
        holders: Providers holding the right, in rank order.
        scope: ``new-capacity`` (reserved capacity is used without an offer) or ``all``.
        match: True if a holder may match the outside price (billed at the lower of the two).
        tolerance: Without match, a holder accepts if its price ≤ P × (1 + tolerance).
        window: Seconds a holder has to answer before the offer counts as declined.
    """

    holders: tuple[str, ...]
    scope: Literal["new-capacity", "all"] = "new-capacity"
    match: bool = False
    tolerance: Annotated[float, Field(ge=0, le=10)] = 0.0
    window: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("holders")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one holder")
        return value


class Reservation(_Strict):
    """A prepaid capacity block: zero marginal cost until used up.

    Attributes:
        name: Reservation name.
        provider: Fleet provider holding it.
        region: Region of the block.
        zone: Zone of the block, if any.
        instance_type: Instance type reserved.
        accelerator: Accelerator (taken from the catalog when omitted).
        count: Accelerators per instance (taken from the catalog when omitted).
        nodes: Instances in the block.
        start: When the block starts (None = already).
        end: When the block ends (None = open).
    """

    name: str
    provider: str
    region: str
    zone: str | None = None
    instance_type: str
    accelerator: str | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    nodes: Annotated[int, Field(ge=1)]
    start: UtcDatetime | None = None
    end: UtcDatetime | None = None

    @field_validator("accelerator")
    @classmethod
    def _canonical(cls, value: str | None) -> str | None:
        return None if value is None else canonical(value)


class Commitment(_Strict):
    """A committed-spend contract tracked as a burn-down.

    Attributes:
        name: Contract name.
        provider: Fleet provider the money is committed to.
        total_usd: Committed total.
        start: Contract start.
        end: Contract end.
        spent_usd: Spent so far (the service keeps this current).
        tolerance: A provider behind schedule is preferred when within this price fraction.
    """

    name: str
    provider: str
    total_usd: Annotated[float, Field(gt=0)]
    start: UtcDatetime
    end: UtcDatetime
    spent_usd: Annotated[float, Field(ge=0)] = 0.0
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> Commitment:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Contracts(_Strict):
    """Contract terms that shape placement.

    Attributes:
        rofr: Right of first refusal, if any.
        reservations: Prepaid capacity blocks.
        commitments: Committed-spend contracts.
    """

    rofr: Rofr | None = None
    reservations: tuple[Reservation, ...] = ()
    commitments: tuple[Commitment, ...] = ()


class Budget(_Strict):
    """A team's spending cap.

    Attributes:
        max_cost_usd: Most the team's planned jobs may cost in one plan.
    """

    max_cost_usd: Annotated[float, Field(ge=0)]


class Fleet(_Strict):
    """The fleet file: which clouds, under which contracts.

    Attributes:
        providers: Provider entries by fleet name.
        contracts: ROFR, reservations and commitments.
        budgets: Spending caps by team.
        time_scale: Wall-clock seconds per simulated hour for sim workloads.
    """

    providers: dict[str, ProviderConfig]
    contracts: Contracts = Field(default_factory=Contracts)
    budgets: dict[str, Budget] = Field(default_factory=dict)
    time_scale: Annotated[float, Field(gt=0)] = 3600.0

    @field_validator("providers")
    @classmethod
    def _some_provider(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        if not value:
            raise ValueError("name at least one provider")
        return value

    @model_validator(mode="after")
    def _references(self) -> Fleet:
        from multicloud.accelerators import suggest

        names = tuple(self.providers)

        def check(name: str, where: str) -> None:
            if name not in self.providers:
                hint = suggest(name, names)
                tail = f"; did you mean '{hint}'?" if hint else f"; fleet has: {', '.join(names)}"
                raise ValueError(f"{where}: unknown provider '{name}'{tail}")

        rofr = self.contracts.rofr
        if rofr is not None:
            for i, holder in enumerate(rofr.holders):
                check(holder, f"contracts.rofr.holders[{i}]")
        for i, res in enumerate(self.contracts.reservations):
            check(res.provider, f"contracts.reservations[{i}].provider")
        for i, com in enumerate(self.contracts.commitments):
            check(com.provider, f"contracts.commitments[{i}].provider")
        return self

    def adapter_of(self, name: str) -> str:
        """Return the adapter name behind a fleet provider entry.

        Args:
            name: Fleet provider name.

        Returns:
            The registered adapter name.
        """
        return self.providers[name].adapter or name
