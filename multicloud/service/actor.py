"""The scheduler as a detached Ray actor, and the Ray tasks that carry its launches.

The actor is a thin shell: it builds the store, the fleet's adapters and a
:class:`~multicloud.service.scheduler.Scheduler`, runs the cycle on a thread, and answers
the client's calls (submit, status, cancel, explain, audit, logs) on Ray's actor threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import hashlib
import importlib
import json
import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import ray
from pydantic import ValidationError

from multicloud import providers as registry
from multicloud.models import Fleet, Job
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
from multicloud.specs import check_against_fleet, parse_jobs
from multicloud.store import JobRecord, JobState, Store

__all__ = ["RayEffects", "SchedulerActor", "build_providers", "runtime_options"]

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


@lru_cache(maxsize=16)
def _worker_providers(key: str, config_json: str) -> dict[str, Provider]:
    # Ray reuses worker processes: build each fleet's adapters once per worker.
    del key
    return build_providers(ServiceConfig.model_validate_json(config_json))


@ray.remote(num_cpus=0, max_retries=0)
def _launch_task(
    key: str, config_json: str, provider: str, items: list[LaunchItem]
) -> list[LaunchOutcome]:
    return launch_batch(_worker_providers(key, config_json)[provider], items)


@ray.remote(num_cpus=0, max_retries=0)
def _terminate_task(
    key: str, config_json: str, provider: str, items: list[tuple[Handle, str]]
) -> list[str | None]:
    return terminate_batch(_worker_providers(key, config_json)[provider], items)


class RayEffects(InlineEffects):
    """Launches and terminations in Ray tasks; offers and status on actor threads.

    A launch can take minutes on a real cloud (and hang on a bad one): as a task it holds a
    Ray worker, not the scheduler. Offers and status are reads the cycle waits on with a
    deadline; a task's round trip (a few ms) would be most of their cost.

    Args:
        providers: The adapters, for the reads done in this process.
        config: The service config, which the tasks rebuild the adapters from.
    """

    def __init__(self, providers: dict[str, Provider], config: ServiceConfig) -> None:
        super().__init__(providers)
        self._config_json = config.model_dump_json()
        self._key = hashlib.sha256(self._config_json.encode()).hexdigest()

    def launch(self, provider: str, items: Sequence[LaunchItem]) -> cf.Future[list[LaunchOutcome]]:
        """Send a batch of launches to a Ray task.

        Args:
            provider: Fleet provider name.
            items: The launches.

        Returns:
            A future of the outcomes.
        """
        ref = _launch_task.remote(self._key, self._config_json, provider, list(items))
        fut: cf.Future[list[LaunchOutcome]] = ref.future()
        return fut

    def terminate(
        self, provider: str, items: Sequence[tuple[Handle, str]]
    ) -> cf.Future[list[str | None]]:
        """Send a batch of terminations to a Ray task.

        Args:
            provider: Fleet provider name.
            items: ``(handle, request_id)`` pairs.

        Returns:
            A future of the errors (None per success).
        """
        ref = _terminate_task.remote(self._key, self._config_json, provider, list(items))
        fut: cf.Future[list[str | None]] = ref.future()
        return fut


def job_view(record: JobRecord, times: dict[str, str] | None = None) -> dict[str, Any]:
    """Return a job as ``multicloud status --json`` prints it.

    Args:
        record: The job.
        times: When it first entered each state (``Store.state_times``).

    Returns:
        ``{"id", "name", "state", "priority", "team", "provider", "region",
        "instance_type", "attempts", "submitted_at", "updated_at", "placed_at",
        "started_at", "finished_at"}``; provider/region/instance type of the latest attempt.
    """
    times = times or {}
    last = record.attempts[-1] if record.attempts else None
    finished = next(
        (
            times[s.value]
            for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
            if s.value in times
        ),
        None,
    )
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "priority": record.priority,
        "team": record.team,
        "kind": record.job.kind,
        "provider": last.provider if last else None,
        "region": last.region if last else None,
        "instance_type": last.instance_type if last else None,
        "attempts": [
            {
                "attempt": a.attempt,
                "request_id": a.request_id,
                "handle": (a.handle or {}).get("id"),
                "outcome": a.outcome,
                "provider": a.provider,
                "region": a.region,
                "zone": a.zone,
                "instance_type": a.instance_type,
                "nodes": a.nodes,
                "market": a.market.value,
                "price_per_hour": round(a.price_per_hour, 4),
                "reservation": a.reservation,
                "started_at": a.started_at.isoformat(),
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
            }
            for a in record.attempts
        ],
        "client_key": record.client_key,
        "submitted_at": record.submitted_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "placed_at": times.get(JobState.PLACED.value),
        "started_at": times.get(JobState.RUNNING.value),
        "finished_at": finished,
    }


def _validate(docs: list[dict[str, Any]]) -> list[Job]:
    """Turn submitted documents into jobs, as ``parse_jobs`` would.

    The documents arrive already parsed: validating them directly spares a round trip
    through JSON text and the YAML parser, which cost ten times the validation itself
    and was most of a submission's time. Anything ``parse_jobs`` would refuse (an invalid
    job, a duplicate name) is handed to it, for its field-path messages.

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
    parsed: list[Job] = parse_jobs(json.dumps({"jobs": docs}), source="submission")
    return parsed


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
            RayEffects(providers, self.config)
            if self.config.launch_in_tasks
            else InlineEffects(providers)
        )
        self.metrics = Metrics()
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port, addr=self.config.metrics_host)
        settings = Settings(**self.config.settings)  # type: ignore[arg-type]
        self.scheduler = Scheduler(
            self.store,
            self.fleet,
            effects,
            settings=settings,
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
        """Return who this is and how it is doing."""
        return {
            "store": self.store.url,
            "fleet": self.config.fleet_source,
            "providers": sorted(self.fleet.providers),
            "metrics_port": self.config.metrics_port,
            "metrics_host": self.config.metrics_host,
            **self.scheduler.stats(),
        }

    def submit(
        self, docs: list[dict[str, Any]], client_keys: list[str | None] | None = None
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

    def status(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Return one job (or all) in the ``status --json`` form.

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

    def explain(self, job_id: str) -> dict[str, Any]:
        """Return why a job is where it is: decisions, events, ROFR lines, attempts.

        Args:
            job_id: The job.

        Returns:
            ``{"job", "decisions", "events", "audit"}``.

        Raises:
            JobNotFoundError: No such job.
        """
        record = self.store.get(job_id)
        return {
            "job": job_view(record, self.store.state_times([job_id]).get(job_id)),
            "decisions": self.store.decisions(job_id),
            "events": self.store.events(job_id),
            "audit": self.store.audit(job_id=job_id),
        }

    def audit(self, job_id: str | None = None, holder: str | None = None) -> list[dict[str, Any]]:
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
        self.scheduler.effects.close()
