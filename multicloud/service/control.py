"""Starting and stopping the scheduler service: the local Ray head, the actor, the lease.

Talking to a running service is :mod:`multicloud.service.client`; this module owns what
brings one up and takes it down (docs/architecture.md, "The service on Ray").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from multicloud.errors import MulticloudError
from multicloud.service.client import Client, scheduler_actor
from multicloud.service.config import ACTOR_NAME, DEFAULT_NAMESPACE, ServiceConfig
from multicloud.service.runtime import (
    RayRuntimeError,
    auth_env,
    cluster_record,
    connect_ray,
    start_local_ray,
    stop_local_ray,
)

if TYPE_CHECKING:
    from multicloud.service.views import LeaseView

__all__ = ["StartResult", "start", "stop"]


@dataclass(frozen=True)
class StartResult:
    """What ``start`` did.

    Attributes:
        address: GCS address of the cluster.
        dashboard_url: Dashboard / Jobs API URL, when known.
        started_ray: A local Ray head was started.
        started_actor: The scheduler actor was created (False: it was already running).
        info: The scheduler's ``ping``.
        env: Variables a shell needs for ``ray job submit`` against this cluster.
    """

    address: str
    dashboard_url: str | None
    started_ray: bool
    started_actor: bool
    info: dict[str, Any]
    env: dict[str, str]


def start(
    config: ServiceConfig | None,
    *,
    address: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    num_cpus: int | None = None,
    ready_timeout: float = 120.0,
    standby: bool = False,
    standby_timeout: float | None = None,
    on_wait: Callable[[LeaseView], None] | None = None,
) -> StartResult:
    """Start (or find) the cluster and the scheduler actor.

    Args:
        config: What to run; None reuses the last started config.
        address: GCS address of an existing cluster (None: the local one, started if
            needed).
        namespace: Ray namespace.
        num_cpus: CPUs for a local head started here.
        ready_timeout: Seconds to wait for the actor to answer.
        standby: When the store's lease is held by another installation's scheduler,
            start as its standby and wait to take it over (instead of refusing).
        standby_timeout: Seconds a standby waits at most (None: as long as it takes).
        on_wait: Called with the lease while a standby waits (progress messages).

    Returns:
        What happened.

    Raises:
        RayRuntimeError: The cluster could not be started or reached.
        LeaseHeldError: The store's lease is held by a live scheduler elsewhere (and not
            ``standby``).
        StandbyTimeoutError: A standby did not get the lease within ``standby_timeout``.
        MulticloudError: No config given and none saved.
    """
    from multicloud.service.standby import check_lease, owner_key, wait_until_active
    from multicloud.store import LeaseHeldError

    # Before importing Ray: it reads RAY_AUTH_MODE once, at import.
    env = auth_env()
    import ray

    def active(actor: Any, info: dict[str, Any], *, kill: bool) -> dict[str, Any]:
        if info.get("role", "active") == "active":
            return info
        if not standby:
            seen = Client(actor).lease().lease
            if kill:
                ray.kill(actor, no_restart=True)
            raise LeaseHeldError(f"the store's lease is {seen.describe()}", seen)
        return wait_until_active(Client(actor), timeout=standby_timeout, on_wait=on_wait)

    owner = owner_key(namespace)
    checked = False
    if not standby and config is not None:
        # Before anything is started: a refused start leaves nothing behind.
        check_lease(config, owner)
        checked = True
    started_ray = False
    dashboard: str | None = None
    if address is None:
        record = cluster_record()
        if record is None:
            record = start_local_ray(num_cpus=num_cpus)
            started_ray = True
        address = str(record["gcs_address"])
        dashboard = str(record.get("dashboard_url"))
    connect_ray(address, namespace)
    actor = scheduler_actor(namespace)
    if actor is not None:
        try:
            info = active(actor, Client(actor).ping(), kill=False)
            return StartResult(address, dashboard, started_ray, False, info, env)
        except ray.exceptions.RayActorError:
            actor = None
    if config is None:
        config = ServiceConfig.load_saved()
        if config is None:
            raise MulticloudError("nothing to start: give --fleet (no earlier start to resume)")
    from multicloud.service.actor import SchedulerActor, build_providers

    if not standby and not checked:
        check_lease(config, owner)
    # Build the adapters here first: a fleet they refuse must fail this call with its
    # message, not send Ray into restarting an actor that can never come up.
    build_providers(config)

    remote_cls: Any = ray.remote(SchedulerActor)
    actor = remote_cls.options(
        name=ACTOR_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        # Ray brings a crashed scheduler back with the same config; it recovers from the
        # store. Calls in flight at the crash fail rather than replay (submit is not
        # idempotent without a client key).
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=32,
        num_cpus=0,
    ).remote(config.model_dump_json(), {"owner": owner, "standby": standby})
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            info = cast(
                "dict[str, Any]",
                ray.get(actor.ping.remote(), timeout=max(1.0, deadline - time.monotonic())),
            )
            break
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            if time.monotonic() >= deadline:
                raise RayRuntimeError(f"the scheduler did not come up: {exc}") from exc
            time.sleep(0.5)
    # Another scheduler took the lease between the check and the actor's start.
    info = active(actor, info, kill=True)
    config.save()
    return StartResult(address, dashboard, started_ray, True, info, env)


def stop(*, namespace: str = DEFAULT_NAMESPACE, keep_ray: bool = False) -> dict[str, bool]:
    """Stop the scheduler actor and the local Ray head ``start`` started.

    Args:
        namespace: Ray namespace.
        keep_ray: Leave the local Ray running.

    Returns:
        ``{"actor": stopped?, "ray": stopped?}``.
    """
    auth_env()
    import ray

    stopped_actor = False
    try:
        connect_ray("auto", namespace)
    except RayRuntimeError:
        return {"actor": False, "ray": False}
    actor = scheduler_actor(namespace)
    if actor is not None:
        # A scheduler that cannot shut down cleanly is killed anyway.
        with contextlib.suppress(Exception):
            ray.get(actor.shutdown.remote(), timeout=10)
        ray.kill(actor, no_restart=True)
        stopped_actor = True
    ray.shutdown()
    stopped_ray = False if keep_ray else stop_local_ray()
    return {"actor": stopped_actor, "ray": stopped_ray}
