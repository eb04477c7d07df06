"""Building the fleet's adapters for the service, and launcher actors for the ones that need them.

``LauncherActorEffects`` runs one provider's launches and terminations in a long-lived Ray
actor of its own, for adapters that must not share the scheduler's process.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
from collections.abc import Sequence
from typing import Any

import ray

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.provider import Handle, Provider
from multicloud.service.config import ServiceConfig
from multicloud.service.effects import (
    InlineEffects,
    LaunchItem,
    LaunchOutcome,
    launch_batch,
    terminate_batch,
)

__all__ = ["LauncherActorEffects", "build_providers", "runtime_options"]


def runtime_options(fleet: Fleet, name: str, config: ServiceConfig) -> dict[str, Any]:
    """Constructor arguments decided by the service rather than the fleet file.

    Args:
        fleet: The fleet.
        name: Fleet provider name.
        config: The service config.

    Returns:
        Keyword arguments for the adapter (the simulated clouds' shared journal, the local
        provider's log directory).
    """
    adapter = fleet.adapter_of(name)
    if adapter == "sim":
        return {"state_path": config.sim_state}
    if adapter == "local":
        return {"logs_dir": config.local_logs}
    return {}


def build_providers(config: ServiceConfig) -> dict[str, Provider]:
    """Build every adapter of the config's fleet with the service's runtime options.

    Args:
        config: The service config.

    Returns:
        Fleet provider name → adapter.
    """
    fleet = config.fleet_model()
    return {
        name: registry.from_fleet(fleet, name, **runtime_options(fleet, name, config))
        for name in fleet.providers
    }


class _Launcher:
    """One provider's launches and terminations, in a long-lived process of their own.

    Built once per provider with the service's config: no per-call worker start, no
    per-call adapter construction. A hung cloud call holds one of its threads.

    Args:
        config_json: The service config.
        provider: Fleet provider name.
    """

    def __init__(self, config_json: str, provider: str) -> None:
        config = ServiceConfig.model_validate_json(config_json)
        fleet = config.fleet_model()
        self._adapter = registry.from_fleet(
            fleet, provider, **runtime_options(fleet, provider, config)
        )

    def launch(self, items: list[LaunchItem]) -> list[LaunchOutcome]:
        """Launch a batch; errors come back as outcomes."""
        return launch_batch(self._adapter, items)

    def terminate(self, items: list[tuple[Handle, str]]) -> list[str | None]:
        """Terminate a batch; an error message (or None) per item."""
        return terminate_batch(self._adapter, items)


class LauncherActorEffects(InlineEffects):
    """Launches and terminations in one launcher actor per provider; reads on threads here.

    For adapters that must not share the scheduler's process (a C extension that may
    crash it, an SDK that holds the GIL for long): each provider's launches run in a
    long-lived actor, started on first use, with ``workers`` calls at a time. Offers and
    status stay on this process's threads: a round trip would cost more than the call.

    Args:
        providers: The adapters, for the reads done in this process.
        config: The service config, which each launcher builds its adapter from.
        workers: Calls each launcher runs at once.
    """

    def __init__(
        self, providers: dict[str, Provider], config: ServiceConfig, *, workers: int = 4
    ) -> None:
        super().__init__(providers)
        self._config_json = config.model_dump_json()
        self._workers = workers
        self._actors: dict[str, Any] = {}

    def _actor(self, provider: str) -> Any:
        actor = self._actors.get(provider)
        if actor is None:
            remote: Any = ray.remote(_Launcher)
            # Owned by the scheduler actor: they die with it, and a restarted scheduler
            # starts its own.
            actor = remote.options(
                num_cpus=0, max_concurrency=self._workers, max_restarts=-1, max_task_retries=0
            ).remote(self._config_json, provider)
            self._actors[provider] = actor
        return actor

    def launch(self, provider: str, items: Sequence[LaunchItem]) -> cf.Future[list[LaunchOutcome]]:
        """Send a batch of launches to the provider's launcher.

        Args:
            provider: Fleet provider name.
            items: The launches.

        Returns:
            A future of the outcomes.
        """
        fut: cf.Future[list[LaunchOutcome]] = (
            self._actor(provider).launch.remote(list(items)).future()
        )
        return fut

    def terminate(
        self, provider: str, items: Sequence[tuple[Handle, str]]
    ) -> cf.Future[list[str | None]]:
        """Send a batch of terminations to the provider's launcher.

        Args:
            provider: Fleet provider name.
            items: ``(handle, request_id)`` pairs.

        Returns:
            A future of the errors (None per success).
        """
        fut: cf.Future[list[str | None]] = (
            self._actor(provider).terminate.remote(list(items)).future()
        )
        return fut

    def close(self) -> None:
        """Stop the reader threads and the launchers."""
        super().close()
        for actor in self._actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
