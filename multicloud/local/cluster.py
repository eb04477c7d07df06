"""The Ray side of the local provider: is Ray here, enough CPUs, named actors, stopping one."""

from __future__ import annotations

import contextlib
from typing import Any

from multicloud.errors import InvalidRequestError
from multicloud.local.files import STOP_RPC_SLACK_S, TERM_GRACE_S

__all__ = ["check_cpus", "named_actors", "require_ray", "stop_actor"]


def check_cpus(fleet_name: str, cpus: float) -> None:
    """Refuse a workload needing more CPUs than the Ray cluster has (InvalidRequestError)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    total = float(resources.get("CPU", 0.0))
    if total < cpus:
        # The actor would wait forever for CPUs that do not exist.
        raise InvalidRequestError(
            f"a workload needs {cpus:g} CPU(s); the Ray cluster has {total:g}",
            provider=fleet_name,
        )


def require_ray(fleet_name: str, doing: str) -> Any:
    """Return the ray module, or refuse when Ray is not initialised here (InvalidRequestError)."""
    import ray

    if not ray.is_initialized():
        raise InvalidRequestError(
            f"the local provider needs Ray initialised in this process before {doing} "
            "(ray.init(); the scheduler's actor and launchers already have it)",
            provider=fleet_name,
        )
    return ray


def named_actors() -> set[tuple[str, str]]:
    """Every named actor of the cluster, as (namespace, name)."""
    import ray

    # One GCS round trip for the whole batch (~1 ms), whatever the number of handles.
    return {(a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)}


def stop_actor(handle_id: str, namespace: str, *, started: bool) -> None:
    """Stop a workload's actor: gracefully once its command started, then kill it."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        actor = ray.get_actor(handle_id, namespace=namespace)
    except ValueError:
        return  # already gone
    if started:
        # A graceful stop first; only once the command has started (on a pending actor
        # the call would wait for CPUs). stop() runs after __init__, so a command that
        # is starting right now is either stopped here or never started.
        with contextlib.suppress(RayActorError, GetTimeoutError):
            ray.get(
                actor.stop.remote(TERM_GRACE_S),
                timeout=2 * TERM_GRACE_S + STOP_RPC_SLACK_S,
            )
    with contextlib.suppress(ValueError):
        ray.kill(actor, no_restart=True)
