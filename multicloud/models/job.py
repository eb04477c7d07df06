"""The job spec as users write it: resources, placement, serving and what runs."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from multicloud.accelerators import canonical
from multicloud.models.common import JURISDICTIONS, NAME, RegionGlobs, Strict, UtcDatetime


class Kind(str, Enum):
    """What a job is: a training gang or an inference service."""

    TRAINING = "training"
    INFERENCE = "inference"


class Market(str, Enum):
    """Which pricing markets a job accepts."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    ANY = "any"


# Accelerator lists as written -> canonical (bounded by the spellings users write).
_CANONICAL: dict[tuple[str, ...], tuple[str, ...]] = {}
_CANONICAL_MAX = 4096  # a long-running scheduler sees what its clients write


class Resources(Strict):
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
        # A job file repeats a few spellings thousands of times: each is worked out once.
        # Only valid spellings are remembered (an unknown one raises before that).
        known = _CANONICAL.get(value)
        if known is not None:
            return known
        if not value:
            raise ValueError("name at least one accelerator")
        known = tuple(dict.fromkeys(canonical(v) for v in value))
        if len(_CANONICAL) < _CANONICAL_MAX:
            _CANONICAL[value] = known
        return known


class Placement(Strict):
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


# The default placement, shared: a frozen model of tuples cannot change, and building one
# per job (a validation each) was a tenth of validating a large job file.
_ANYWHERE = Placement()


class Serving(Strict):
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
            raise ValueError(f"spread ({self.spread}) cannot exceed replicas ({self.replicas})")
        if self.max_latency_ms is not None and not self.regions_near:
            raise ValueError("max_latency_ms needs regions_near")
        return self


class Run(Strict):
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


class Job(Strict):
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
    placement: Placement = Field(default_factory=lambda: _ANYWHERE)
    serving: Serving | None = None
    run: Run = Field(default_factory=Run)

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not NAME.match(value):
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
