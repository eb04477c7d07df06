"""The fleet file as users write it: providers, injected faults, contracts and budgets."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from multicloud.accelerators import canonical
from multicloud.models.common import RegionGlobs, Strict, UtcDatetime


class InlineOffer(Strict):
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


class Fault(Strict):
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


class ProviderConfig(Strict):
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


class Rofr(Strict):
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


class Reservation(Strict):
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


class Commitment(Strict):
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


class Contracts(Strict):
    """Contract terms that shape placement.

    Attributes:
        rofr: Right of first refusal, if any.
        reservations: Prepaid capacity blocks.
        commitments: Committed-spend contracts.
    """

    rofr: Rofr | None = None
    reservations: tuple[Reservation, ...] = ()
    commitments: tuple[Commitment, ...] = ()


class Budget(Strict):
    """A team's spending cap.

    Attributes:
        max_cost_usd: Most the team's planned jobs may cost in one plan.
    """

    max_cost_usd: Annotated[float, Field(ge=0)]


class Fleet(Strict):
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
