"""What ``multicloud start`` hands the scheduler actor, and where it keeps it between starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from multicloud import paths
from multicloud.models import Fleet
from multicloud.planner import Policy

__all__ = ["ACTOR_NAME", "DEFAULT_NAMESPACE", "ServiceConfig", "default_store_url"]

DEFAULT_NAMESPACE = "multicloud"
ACTOR_NAME = "scheduler"


def store_password_warning(url: str) -> str | None:
    """Say why a store URL with an inline password is a bad idea, if it has one.

    The service keeps its store URL in ``service.json`` and hands it to the scheduler actor,
    whose arguments Ray keeps in its metadata: a password there is a secret at rest in two
    places. libpq reads it from ``PGPASSWORD`` or a ``passfile`` instead.

    Args:
        url: The store URL.

    Returns:
        The warning text, or None when the URL carries no password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:
        return None
    if not password:
        return None
    return (
        "the store URL carries a password: it would be kept in service.json and in Ray's "
        "actor metadata. Give it through PGPASSWORD or '?passfile=PATH' instead."
    )


def default_store_url() -> str:
    """Return the default store: a SQLite file in the multicloud home."""
    return f"sqlite:///{paths.home() / 'multicloud.db'}"


class ServiceConfig(BaseModel):
    """Everything the scheduler actor needs to (re)build itself.

    Ray restarts a crashed actor with the same arguments, and ``multicloud start`` after the
    whole cluster went away reads the last config back from the multicloud home: either
    way the scheduler comes back on the same store, fleet and simulated clouds.

    Attributes:
        fleet: The fleet document (already validated once by the CLI).
        fleet_source: Where the fleet came from, for messages.
        store_url: The job store.
        sim_state: Journal of the simulated clouds (one per store).
        local_logs: Directory of the ``local`` provider's logs.
        metrics_port: Port for Prometheus ``/metrics`` (None: off).
        metrics_host: Address ``/metrics`` binds: loopback by default; a pod behind a
            Service and a NetworkPolicy (the Helm chart) binds ``0.0.0.0``.
        settings: Overrides of :class:`multicloud.service.scheduler.Settings` fields.
        policy: Overrides of :class:`multicloud.planner.Policy` fields (by default the
            service plans exactly as ``multicloud plan`` does).
        crash_points: Crash point → probability (restart-safety tests only).
        crash_seed: Seed for the crash points.
        launcher: Where launches and terminations run: ``threads`` (bounded pools per
            provider in the scheduler's process) or ``actors`` (one long-lived launcher
            actor per provider).
    """

    model_config = ConfigDict(extra="forbid")

    fleet: dict[str, Any]
    fleet_source: str = "fleet"
    store_url: str
    sim_state: str
    local_logs: str
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # int before float: pydantic keeps 4 an int (chunk sizes, attempt counts) and 0.5 a float.
    settings: dict[str, int | float] = Field(default_factory=dict)
    policy: dict[str, int | float | bool] = Field(default_factory=dict)
    crash_points: dict[str, float] = Field(default_factory=dict)
    crash_seed: int | None = None
    launcher: Literal["threads", "actors"] = "threads"

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_fields(cls, data: Any) -> Any:
        # A config saved by an earlier multicloud (service.json) must still start: launches
        # no longer go to one Ray task per batch, so that switch has nothing to choose.
        if isinstance(data, dict) and "launch_in_tasks" in data:
            data = {k: v for k, v in data.items() if k != "launch_in_tasks"}
        return data

    def policy_model(self) -> Policy:
        """Return the planner policy the scheduler plans with."""
        return Policy(**self.policy)  # type: ignore[arg-type]

    @classmethod
    def build(
        cls,
        fleet: Fleet,
        *,
        fleet_source: str = "fleet",
        store_url: str | None = None,
        **extra: Any,
    ) -> ServiceConfig:
        """Make a config with the default store and per-store sim journal.

        Args:
            fleet: The fleet.
            fleet_source: Where it came from.
            store_url: The store (default: SQLite in the multicloud home).
            **extra: Further fields.

        Returns:
            The config.
        """
        url = store_url or default_store_url()
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return cls(
            fleet=fleet.model_dump(mode="json", exclude_unset=True),
            fleet_source=fleet_source,
            store_url=url,
            sim_state=str(extra.pop("sim_state", paths.sim_state_path(digest))),
            local_logs=str(extra.pop("local_logs", paths.local_logs_dir())),
            **extra,
        )

    def fleet_model(self) -> Fleet:
        """Return the fleet as a model."""
        return Fleet.model_validate(self.fleet)

    @staticmethod
    def saved_path() -> Path:
        """Where the last started config is kept."""
        return paths.home() / "service.json"

    def save(self) -> None:
        """Remember this config for the next ``multicloud start``."""
        path = self.saved_path()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def load_saved(cls) -> ServiceConfig | None:
        """Return the last started config, if any."""
        path = cls.saved_path()
        if not path.exists():
            return None
        return cls.model_validate(json.loads(path.read_text()))
