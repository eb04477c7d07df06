"""What every spec model shares: strict models, UTC times, region globs, jurisdictions.

Every model forbids unknown fields: a typo must be an error that names the field, never a
silently ignored setting (docs/architecture.md, "Jobs and their lifecycle").
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

JURISDICTIONS: tuple[str, ...] = (
    "US", "CA", "BR", "CL", "EU", "UK", "CH", "NO", "IL", "AE", "SA", "QA", "IN", "JP", "KR",
    "SG", "ID", "AU", "TW", "HK", "ZA", "MX",
)

def _as_utc(value: datetime) -> datetime:
    # A time written without a zone is read as UTC: comparing it with aware times (now,
    # other contract dates) would otherwise fail deep inside planning.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

# What a job or resource name may be (DNS-label-like, so every cloud accepts it).
NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_.]{0,61}[a-z0-9])?$")


class Strict(BaseModel):
    """A frozen model that rejects unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _region_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    # An empty or blank glob can never match a region: a constraint nothing satisfies is a
    # typo, not a wish, and must be named rather than leave the job unplaceable.
    for glob in value:
        if not glob.strip():
            raise ValueError("a region glob cannot be empty (e.g. 'us-*' or 'europe-west4')")
        # str.split() cuts at exactly what str.isspace() calls white space
        if glob != glob.strip() or len(glob.split()) > 1:
            raise ValueError(f"region glob {glob!r} contains white space")
    return value


RegionGlobs = Annotated[tuple[str, ...], AfterValidator(_region_globs)]
