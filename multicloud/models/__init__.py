"""Pydantic models of the job spec and the fleet file, as users write them in YAML.

A package by concern (docs/architecture.md, "Jobs and their lifecycle"): ``job`` is what a
job file holds, ``fleet`` what a fleet file holds, ``common`` what both share. Every model
forbids unknown fields, so a typo is an error that names the field.
"""

from __future__ import annotations

from multicloud.models.common import JURISDICTIONS, RegionGlobs, UtcDatetime
from multicloud.models.fleet import (
    Budget,
    Commitment,
    Contracts,
    Fault,
    FaultKind,
    Fleet,
    InlineOffer,
    ProviderConfig,
    Reservation,
    Rofr,
)
from multicloud.models.job import Job, Kind, Market, Placement, Resources, Run, Serving

__all__ = [
    "JURISDICTIONS",
    "Budget",
    "Commitment",
    "Contracts",
    "Fault",
    "FaultKind",
    "Fleet",
    "InlineOffer",
    "Job",
    "Kind",
    "Market",
    "Placement",
    "ProviderConfig",
    "RegionGlobs",
    "Reservation",
    "Resources",
    "Rofr",
    "Run",
    "Serving",
    "UtcDatetime",
]
