"""The scheduler as a detached Ray actor, and the launcher actors it may use.

The actor is a thin shell: it builds the store, the fleet's adapters and a
:class:`~multicloud.service.scheduler.Scheduler`, runs the cycle on a thread, and answers
the client's calls (submit, status, cancel, explain, audit, logs) on Ray's actor threads
with the typed views of :mod:`multicloud.service.views`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import gc
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import ray
from pydantic import ValidationError

from multicloud import providers as registry
from multicloud.models import Fleet, Job
from multicloud.planner.types import AuditEntry
from multicloud.provider import Handle, Provider
from multicloud.service.config import ServiceConfig
from multicloud.service.effects import (
    InlineEffects,
    LaunchItem,
    LaunchOutcome,
    launch_batch,
    terminate_batch,
)
from multicloud.service.metrics import Metrics
from multicloud.service.scheduler import CrashPoints, Scheduler, Settings
from multicloud.service.views import ExplainView, JobView, explain_view, job_view
from multicloud.specs import check_against_fleet, validate_jobs
from multicloud.store import Store

__all__ = ["LauncherActorEffects", "SchedulerActor", "build_providers", "runtime_options"]

log = logging.getLogger(__name__)


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


def _validate(docs: list[Any]) -> list[Job]:
    """Turn submitted documents into jobs.

    The documents arrive already parsed: validating them directly spares a round trip
    through text and a parser, which cost ten times the validation itself. Anything
    refused (an invalid job, a duplicate name) goes to ``validate_jobs`` for its
    field-path messages.

    Args:
        docs: Job documents.

    Returns:
        The jobs, in order.

    Raises:
        SpecError: A document is not a valid job.
    """
    try:
        jobs = [Job.model_validate(doc) for doc in docs]
    except ValidationError:
        jobs = []
    if jobs and len({j.name for j in jobs}) == len(jobs):
        return jobs
    return validate_jobs(docs, source="submission")


class SchedulerActor:
    """The body of the ``scheduler`` actor (wrapped with ``ray.remote`` by the runtime).

    Args:
        config_json: A :class:`ServiceConfig` as JSON.
    """

    def __init__(self, config_json: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self.config = ServiceConfig.model_validate_json(config_json)
        self.fleet = self.config.fleet_model()
        self.store = Store.open(self.config.store_url)
        providers = build_providers(self.config)
        effects: InlineEffects = (
            LauncherActorEffects(providers, self.config)
            if self.config.launcher == "actors"
            else InlineEffects(providers)
        )
        self.metrics = Metrics()
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port, addr=self.config.metrics_host)
        self.scheduler = Scheduler(
            self.store,
            self.fleet,
            effects,
            settings=Settings.from_overrides(self.config.settings),
            policy=self.config.policy_model(),
            crash=CrashPoints(self.config.crash_points, seed=self.config.crash_seed),
            metrics=self.metrics,
            adapters=providers,
        )
        # The optimiser imports SciPy on first use, which takes seconds: pay that at start
        # rather than in the middle of the first contended plan, with submitters waiting.
        importlib.import_module("multicloud.planner.milp")
        # What exists now (Ray, SciPy, the catalog, the adapters, the recovered index) lives
        # as long as the actor. Frozen, it is no longer scanned by every full collection,
        # which otherwise stops all threads for hundreds of milliseconds at a time.
        gc.freeze()
        self._stop = threading.Event()
        self._loop = threading.Thread(
            target=self.scheduler.run, args=(self._stop,), name="scheduler-cycle", daemon=True
        )
        self._loop.start()

    # -- calls from clients ------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """Return who this is and how it is doing (counters, memory)."""
        import psutil

        return {
            "store": self.store.url,
            "fleet": self.config.fleet_source,
            "providers": sorted(self.fleet.providers),
            "metrics_port": self.config.metrics_port,
            "metrics_host": self.config.metrics_host,
            "launcher": self.config.launcher,
            "pid": os.getpid(),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            **self.scheduler.stats(),
        }

    def tick_stats(self, window_s: float = 10.0) -> dict[str, Any]:
        """Return tick-time percentiles of the last ``window_s`` seconds (benchmarks)."""
        return self.scheduler.tick_stats(window_s)

    def submit(
        self, docs: list[Any], client_keys: list[str | None] | None = None
    ) -> list[str]:
        """Validate and accept jobs.

        Args:
            docs: Job documents (``Job.model_dump(mode="json")``).
            client_keys: Optional idempotency key per job.

        Returns:
            The job ids, in order.

        Raises:
            SpecError: A document is not a valid job for this fleet; nothing is accepted.
            IdempotencyConflictError: A key was used for another spec; nothing is accepted.
        """
        keys = client_keys or [None] * len(docs)
        if len(keys) != len(docs):
            raise ValueError("give one client key (or None) per job")
        jobs = _validate(docs)
        check_against_fleet(jobs, self.fleet, source="submission")
        results = self.scheduler.submit(list(zip(jobs, keys, strict=True)))
        return [job_id for job_id, _ in results]

    def status(self, job_id: str | None = None) -> list[JobView]:
        """Return one job (or all) as ``status`` shows it.

        Args:
            job_id: The job, or None for every job.

        Returns:
            The jobs, in submission order.

        Raises:
            JobNotFoundError: No such job.
        """
        if job_id is not None:
            record = self.store.get(job_id)
            return [job_view(record, self.store.state_times([job_id]).get(job_id))]
        times = self.store.state_times()
        return [job_view(r, times.get(r.id)) for r in self.store.list_jobs()]

    def states(self, job_ids: list[str] | None = None) -> dict[str, str]:
        """Return just the state of each job (cheap; what ``wait`` polls).

        Args:
            job_ids: The jobs (None: all).

        Returns:
            Job id → state.
        """
        return self.store.job_states(job_ids)

    def cancel(self, job_id: str) -> str:
        """Cancel a job.

        Args:
            job_id: The job.

        Returns:
            Its state afterwards.

        Raises:
            JobNotFoundError: No such job.
        """
        return self.scheduler.cancel(job_id).value

    def explain(self, job_id: str) -> ExplainView:
        """Return why a job is where it is: decisions, events, ROFR lines, attempts.

        Args:
            job_id: The job.

        Returns:
            The explanation.

        Raises:
            JobNotFoundError: No such job.
        """
        store = self.store
        return explain_view(
            store.get(job_id),
            store.state_times([job_id]).get(job_id),
            store.decisions(job_id),
            store.events(job_id),
            store.audit(job_id=job_id),
        )

    def audit(self, job_id: str | None = None, holder: str | None = None) -> list[AuditEntry]:
        """Return ROFR ledger lines.

        Args:
            job_id: Only this job's.
            holder: Only offers to this holder.

        Returns:
            The lines, oldest first.
        """
        return self.store.audit(job_id=job_id, holder=holder)

    def logs(self, job_id: str) -> str:
        """Return a job's output where its provider keeps it.

        Args:
            job_id: The job.

        Returns:
            The output.
        """
        return self.scheduler.logs(job_id)

    def shutdown(self) -> None:
        """Stop the cycle (before the actor is killed)."""
        self._stop.set()
        self.scheduler.wake.set()
        self._loop.join(timeout=5)
        self.scheduler.close()
        self.scheduler.effects.close()
