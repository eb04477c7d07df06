"""Talking to the scheduler service (starting and stopping it: :mod:`multicloud.service.control`).

>>> import multicloud
>>> client = multicloud.connect()            # the cluster `multicloud start` left running
>>> job_id = client.submit(job)
>>> client.wait(job_id, timeout=600)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multicloud.errors import MulticloudError
from multicloud.models import Job
from multicloud.service.config import ACTOR_NAME, DEFAULT_NAMESPACE
from multicloud.service.runtime import (
    connect_ray,
)

if TYPE_CHECKING:
    from multicloud.planner.types import AuditEntry
    from multicloud.service.views import ExplainView, JobView, LeaseView

__all__ = [
    "TERMINAL",
    "Client",
    "ServiceNotRunningError",
    "connect",
]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ServiceNotRunningError(MulticloudError):
    """No scheduler actor is running on the cluster."""


def _unwrap(exc: BaseException) -> BaseException:
    # Ray re-raises an actor's exception as a subclass of both RayTaskError and the
    # original class; hand callers the original (its message without Ray's traceback).
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _documents(jobs: Sequence[Job | Mapping[str, Any]]) -> list[Any]:
    """The documents the scheduler validates; anything not a job goes as it is.

    The scheduler answers whatever is not a valid job with a ``SpecError`` naming
    ``jobs[i]`` and the field, so the client does no checking of its own that could say
    something else.
    """
    out: list[Any] = []
    for j in jobs:
        if isinstance(j, Job):
            out.append(j.model_dump(mode="json"))
        else:
            out.append(dict(j) if isinstance(j, Mapping) else j)
    return out


class Client:
    """A handle on the running scheduler.

    Args:
        actor: The ``scheduler`` actor handle.
    """

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def _call(self, method: str, *args: Any, timeout: float = 60.0, retry: bool = True) -> Any:
        """Call the actor; reads are retried while Ray restarts a crashed scheduler.

        Args:
            method: Actor method.
            *args: Its arguments.
            timeout: Seconds to keep trying.
            retry: Retry when the actor is restarting (only for idempotent calls).

        Returns:
            What the method returned.
        """
        import ray

        deadline = time.monotonic() + timeout
        while True:
            try:
                return ray.get(
                    getattr(self._actor, method).remote(*args),
                    timeout=max(0.1, deadline - time.monotonic()),
                )
            except ray.exceptions.RayTaskError as exc:
                raise _unwrap(exc) from None
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                if not retry or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def ping(self) -> dict[str, Any]:
        """Return the scheduler's store, fleet and counters."""
        result: dict[str, Any] = self._call("ping")
        return result

    def submit(self, job: Job | dict[str, Any], *, client_key: str | None = None) -> str:
        """Submit one job.

        Args:
            job: The job (a model or its document).
            client_key: Idempotency key: the same key and spec return the same job id.

        Returns:
            The job id.

        Raises:
            SpecError: The job is not valid for the fleet.
            IdempotencyConflictError: The key was used for another spec.
        """
        return self.submit_many([job], client_keys=[client_key])[0]

    def submit_many(
        self,
        jobs: Sequence[Job | dict[str, Any]],
        *,
        client_keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Submit several jobs in one call (one store transaction: all or none).

        Args:
            jobs: The jobs.
            client_keys: Optional key per job.

        Returns:
            The job ids, in order.

        Raises:
            SpecError: A document is not a valid job for the fleet (each problem names
                ``jobs[i]`` and the field); nothing is accepted.
            IdempotencyConflictError: A key was used for another spec.
        """
        docs = _documents(jobs)
        keys = list(client_keys) if client_keys is not None else None
        # With keys for every job a resend is harmless; without, a retry could accept the
        # jobs twice, so a crash mid-call is reported instead.
        safe = keys is not None and all(k is not None for k in keys)
        ids: list[str] = self._call("submit", docs, keys, retry=safe)
        return ids

    def submit_async(
        self, jobs: Sequence[Job | dict[str, Any]], client_keys: Sequence[str | None] | None = None
    ) -> Any:
        """Send a batch without waiting; returns a Ray ObjectRef of the job ids.

        Args:
            jobs: The jobs.
            client_keys: Optional key per job.

        Returns:
            An ObjectRef; ``ray.get`` it for the ids. Pipelining batches this way is how
            a client reaches thousands of submissions per second.
        """
        return self._actor.submit.remote(
            _documents(jobs), list(client_keys) if client_keys else None
        )

    def status(self, job_id: str | None = None) -> list[JobView]:
        """Return one job or all jobs: state, where each runs, attempts, timeline.

        Args:
            job_id: The job (None: all).

        Returns:
            The jobs (``view.to_json()`` is what ``multicloud status --json`` prints).

        Raises:
            JobNotFoundError: No such job.
        """
        result: list[JobView] = self._call("status", job_id)
        return result

    def states(self, job_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Return job id → state (cheap).

        Args:
            job_ids: The jobs (None: all).

        Returns:
            The states.
        """
        result: dict[str, str] = self._call(
            "states", list(job_ids) if job_ids is not None else None
        )
        return result

    def wait(
        self,
        job_ids: str | Iterable[str] | None = None,
        *,
        timeout: float | None = None,
        poll: float = 0.25,
        on_poll: Any = None,
    ) -> dict[str, str]:
        """Wait until the jobs reach a final state (or the timeout passes).

        Args:
            job_ids: One job, several, or None for every job submitted so far.
            timeout: Seconds to wait at most (None: forever).
            poll: Seconds between polls.
            on_poll: Called with the states after each poll (progress bars).

        Returns:
            Job id → state at the end (some may not be final if the timeout passed).
        """
        wanted = (
            [job_ids]
            if isinstance(job_ids, str)
            else (list(job_ids) if job_ids is not None else None)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            states = self.states(wanted)
            if on_poll is not None:
                on_poll(states)
            if all(s in TERMINAL for s in states.values()):
                return states
            if deadline is not None and time.monotonic() >= deadline:
                return states
            time.sleep(poll)

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns its state afterwards."""
        result: str = self._call("cancel", job_id)  # cancelling twice is harmless
        return result

    def explain(self, job_id: str) -> ExplainView:
        """Return the job, its decisions, lifecycle events and ROFR ledger lines."""
        result: ExplainView = self._call("explain", job_id)
        return result

    def audit(self, job_id: str | None = None, holder: str | None = None) -> list[AuditEntry]:
        """Return ROFR ledger lines (optionally one job's or one holder's)."""
        result: list[AuditEntry] = self._call("audit", job_id, holder)
        return result

    def logs(self, job_id: str) -> str:
        """Return the job's output where its provider keeps it (the local provider does)."""
        result: str = self._call("logs", job_id)
        return result

    def lease(self) -> LeaseView:
        """Return the store's lease (holder, epoch, expiry) and this scheduler's role."""
        result: LeaseView = self._call("lease")
        return result


def scheduler_actor(namespace: str) -> Any:
    """The scheduler actor's handle in ``namespace`` of the connected cluster.

    Args:
        namespace: Ray namespace.

    Returns:
        The actor handle, or None when no scheduler runs there.
    """
    import ray

    try:
        return ray.get_actor(ACTOR_NAME, namespace=namespace)
    except ValueError:
        return None


def connect(address: str | None = "auto", *, namespace: str = DEFAULT_NAMESPACE) -> Client:
    """Connect to the running scheduler.

    Args:
        address: ``auto`` (inside a Ray job, or the local cluster ``multicloud start``
            recorded) or the GCS ``HOST:PORT``.
        namespace: Ray namespace of the ``scheduler`` actor.

    Returns:
        A client.

    Raises:
        RayRuntimeError: No cluster to connect to.
        ServiceNotRunningError: The cluster runs no scheduler.
    """
    connect_ray(address, namespace)
    actor = scheduler_actor(namespace)
    if actor is None:
        raise ServiceNotRunningError(
            f"no scheduler is running in Ray namespace {namespace!r}: run `multicloud start`"
        )
    return Client(actor)
