"""The scheduler as a detached Ray actor, and the launcher actors it may use.

The actor is a thin shell: it builds the store, the fleet's adapters and a
:class:`~multicloud.service.scheduler.Scheduler`, runs the cycle on a thread, and answers
the client's calls (submit, status, cancel, explain, audit, logs) on Ray's actor threads
with the typed views of :mod:`multicloud.service.views`.

The scheduler exists only while the actor holds the store's lease (``docs/architecture.md``,
"One scheduler per store"). An actor that cannot take it waits as a **standby**, polling
every ``lease_poll_s``, and answers reads only; one that loses it (paused, partitioned,
replaced) stops its cycle at once and becomes a standby again.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import socket
import threading
import time
from typing import Any

import ray
from pydantic import ValidationError

from multicloud import gcpause
from multicloud.models import Job
from multicloud.planner.types import AuditEntry
from multicloud.service.config import ServiceConfig
from multicloud.service.effects import InlineEffects
from multicloud.service.launchers import LauncherActorEffects, build_providers, runtime_options
from multicloud.service.metrics import Metrics
from multicloud.service.scheduler import CrashPoints, Scheduler, Settings
from multicloud.service.scheduler.lease import LeaseKeeper
from multicloud.service.views import (
    ExplainView,
    JobView,
    LeaseView,
    explain_view,
    job_view,
)
from multicloud.specs import check_against_fleet, validate_jobs
from multicloud.store import Holder, LeaseHeldError, Store, unreachable

__all__ = ["LauncherActorEffects", "SchedulerActor", "build_providers", "runtime_options"]

log = logging.getLogger(__name__)


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


_GC_YOUNG = 20_000
"""Allocations after which the youngest generation is collected at the cycle's next idle
moment (CPython collects it every 700, wherever it happens to be)."""

_GC_BACKSTOP = 200_000
"""Allocations after which it is collected anyway (a cycle that never goes idle)."""

_STARTUP_WAIT_S = 60.0
"""Seconds a starting actor waits for an unreachable store before it gives up (opening)
or leaves taking the lease to the cycle's thread."""


def _open_store(url: str, deadline: float) -> tuple[Store, str]:
    """Open the store and read its install id, trying again while it cannot be reached.

    Args:
        url: The store URL.
        deadline: ``time.monotonic()`` after which an unreachable store is an error.

    Returns:
        The open store and its install id.

    Raises:
        StoreError: The store refused (bad URL, newer schema).
        sqlalchemy.exc.DBAPIError: It was still unreachable at ``deadline``.
    """
    delay = 0.1
    while True:
        store: Store | None = None
        try:
            store = Store.open(url)
            return store, store.install_id()
        except Exception as exc:
            if store is not None:
                store.close()
            if not unreachable(exc) or time.monotonic() > deadline:
                raise
            log.warning("the store cannot be reached (%s); trying again", exc)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


class SchedulerActor:
    """The body of the ``scheduler`` actor (wrapped with ``ray.remote`` by the runtime).

    Args:
        config_json: A :class:`ServiceConfig` as JSON.
        claim: How ``start`` asked for the lease: ``owner`` (this installation's key; an
            earlier holder with the same key is taken over at once) and ``standby``.
    """

    def __init__(self, config_json: str, claim: dict[str, Any] | None = None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.config = ServiceConfig.model_validate_json(config_json)
        self.fleet = self.config.fleet_model()
        # Every start may meet a store that is restarting or that just ended this
        # process's connections: an error raised out of the constructor would make Ray
        # give the actor up for good (it restarts a crashed actor, never a failed init).
        started = time.monotonic()
        self.store, install_id = _open_store(self.config.store_url, started + _STARTUP_WAIT_S)
        self.providers = build_providers(self.config)
        self.effects: InlineEffects = (
            LauncherActorEffects(self.providers, self.config)
            if self.config.launcher == "actors"
            else InlineEffects(self.providers)
        )
        self.metrics = Metrics()
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port, addr=self.config.metrics_host)
        self.settings = Settings.from_overrides(self.config.settings)
        context = ray.get_runtime_context()
        ray_address = str(context.gcs_address)
        holder = Holder(
            owner=str((claim or {}).get("owner") or f"{socket.gethostname()}:{ray_address}"),
            install_id=install_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            ray_address=ray_address,
            actor=str(context.get_actor_id() or ""),
        )
        self.keeper = LeaseKeeper(self.store, holder, self.settings, time.monotonic)
        # The cycle allocates (and frees, by reference counting) a few hundred objects per
        # job; at the default threshold of 700 that sets off a young collection every few
        # jobs and a full one, which stops every thread for up to a few hundred
        # milliseconds on a busy heap, every few seconds (profiled: bench/service.py). A
        # larger first generation keeps the pauses rare; they run between the cycle's
        # ticks when no submission waits, where they hold up no one.
        self._collections = gcpause.IdleCollections(_GC_YOUNG, _GC_BACKSTOP)
        self.scheduler: Scheduler | None = None
        self.lost: str | None = None
        # The optimiser imports SciPy on first use, which takes seconds: pay that at start
        # rather than in the middle of the first contended plan, with submitters waiting.
        importlib.import_module("multicloud.planner.milp")
        # A restart of this installation (same owner key) takes its own lease back at once;
        # if the store cannot be reached for a while, the cycle's thread keeps trying.
        while self._take(own=True) is None and time.monotonic() < started + _STARTUP_WAIT_S:
            time.sleep(self.settings.lease_poll_s)
        # What exists now (Ray, SciPy, the catalog, the adapters, the recovered index) lives
        # as long as the actor. Frozen, it is no longer scanned by every full collection,
        # which otherwise stops all threads for hundreds of milliseconds at a time.
        gc.freeze()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._serve, name="scheduler-cycle", daemon=True)
        self._loop.start()

    def _build(self) -> Scheduler:
        return Scheduler(
            self.store,
            self.fleet,
            self.effects,
            settings=self.settings,
            policy=self.config.policy_model(),
            crash=CrashPoints(self.config.crash_points, seed=self.config.crash_seed),
            metrics=self.metrics,
            adapters=self.providers,
            lease=self.keeper,
            idle=self._collections,
        )

    def _take(self, *, own: bool) -> bool | None:
        """Take the lease and start the scheduler; never raises.

        Args:
            own: Take it at once from an earlier holder with this installation's key.

        Returns:
            True: the scheduler runs. False: another live scheduler holds the lease.
            None: the store failed (unreachable, or the scheduler could not be built);
            the lease is let go, and the caller tries again later.
        """
        try:
            if self.keeper.try_acquire(own=own) is None:
                return False
        except Exception:
            log.exception("could not take the store's lease; trying again")
            return None
        try:
            self.scheduler = self._build()
        except Exception:
            log.exception("could not start the scheduler after taking the lease")
            # The store may still be unreachable: then the lease runs out on its own, and
            # this installation takes it back (``own``) or waits it out.
            with contextlib.suppress(Exception):
                self.keeper.release()
            return None
        log.warning("took the store's lease: %s", self.keeper.lease)
        return True

    def _serve(self) -> None:
        """Run the cycle while holding the lease; otherwise wait for it as a standby."""
        own = True
        while not self._stop.is_set():
            scheduler = self.scheduler
            if scheduler is None:
                if not self._take(own=own):
                    self._stop.wait(self.settings.lease_poll_s)
                    continue
                scheduler = self.scheduler
                assert scheduler is not None
            scheduler.run(self._stop)
            if scheduler.lost is not None:
                # Replaced: never take the lease back from "ourselves" at once again, or
                # a paused incarnation and a restarted one would take turns.
                own = False
                self.lost = str(scheduler.lost)
                self.scheduler = None
                scheduler.close()

    def _active(self) -> Scheduler:
        scheduler = self.scheduler
        if scheduler is None:
            lease = self.store.lease.read()
            raise LeaseHeldError(
                f"this scheduler is a standby: the store's lease is {lease.describe()}", lease
            )
        return scheduler

    # -- calls from clients ------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """Return who this is and how it is doing (role, lease, counters, memory)."""
        import psutil

        scheduler = self.scheduler
        last_write = self.store.lease.last_write_at
        return {
            "store": self.store.url,
            "fleet": self.config.fleet_source,
            "providers": sorted(self.fleet.providers),
            "metrics_port": self.config.metrics_port,
            "metrics_host": self.config.metrics_host,
            "launcher": self.config.launcher,
            "pid": os.getpid(),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "role": "active" if scheduler is not None else "standby",
            # A replaced scheduler keeps its fence (its writes stay refused), not its epoch.
            "lease_epoch": self.store.lease.epoch if scheduler is not None else None,
            "lease_lost": self.lost,
            "last_write_at": last_write.isoformat() if last_write else None,
            **(scheduler.stats() if scheduler is not None else {}),
        }

    def lease(self) -> LeaseView:
        """Return the store's lease and this scheduler's role (``status`` shows it)."""
        active = self.scheduler is not None
        return LeaseView(
            self.store.lease.read(),
            role="active" if active else "standby",
            scheduler_epoch=self.store.lease.epoch if active else None,
            lost=self.lost,
        )

    def tick_stats(self, window_s: float = 10.0) -> dict[str, Any]:
        """Return tick-time percentiles of the last ``window_s`` seconds (benchmarks)."""
        return self._active().tick_stats(window_s)

    def submit(self, docs: list[Any], client_keys: list[str | None] | None = None) -> list[str]:
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
        results = self._active().submit(list(zip(jobs, keys, strict=True)))
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
        return self._active().cancel(job_id).value

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
        return self._active().logs(job_id)

    def shutdown(self) -> None:
        """Stop the cycle and release the lease (before the actor is killed)."""
        self._stop.set()
        scheduler = self.scheduler
        if scheduler is not None:
            scheduler.wake.set()
        self._loop.join(timeout=5)
        if scheduler is not None:
            scheduler.close()
            # A clean stop hands the lease on at once: a successor need not wait it out.
            with contextlib.suppress(Exception):
                self.keeper.release()
        self.effects.close()
