"""Starting against a store whose lease may be held: refuse, or wait as a standby.

``multicloud start`` looks at the store's lease before it starts a scheduler
(``docs/architecture.md``, "One scheduler per store"). Held by a live scheduler of another
installation, it refuses (:class:`~multicloud.store.LeaseHeldError`, exit status 3); with
``--standby`` it starts the actor anyway, which waits for the lease to run out and then
takes it over, and :func:`wait_until_active` polls the actor meanwhile.

An installation is a host, a multicloud home and a Ray namespace (:func:`owner_key`): a
scheduler of the same installation (Ray restarting the actor, a whole-cluster restart on
the same home) takes its own earlier lease back at once rather than wait out its TTL.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from multicloud import paths
from multicloud.errors import MulticloudError
from multicloud.service.config import ServiceConfig
from multicloud.store import LeaseHeldError, Store

if TYPE_CHECKING:
    from multicloud.service.client import Client
    from multicloud.service.views import LeaseView

__all__ = ["StandbyTimeoutError", "check_lease", "owner_key", "wait_until_active"]


class StandbyTimeoutError(MulticloudError):
    """A standby did not get the lease within the time it was given."""


def owner_key(namespace: str) -> str:
    """Return this installation's key: ``HOST:MULTICLOUD_HOME#NAMESPACE``.

    Args:
        namespace: The scheduler's Ray namespace.

    Returns:
        The key the lease records as its holder's ``owner``.
    """
    return f"{socket.gethostname()}:{paths.home()}#{namespace}"


def check_lease(config: ServiceConfig, owner: str) -> None:
    """Refuse to start when a live scheduler of another installation holds the lease.

    Args:
        config: What would be started (its store).
        owner: This installation's key.

    Raises:
        LeaseHeldError: The lease is held, unexpired, by another owner.
    """
    with Store.open(config.store_url) as store:
        lease = store.lease.read()
    if lease.held and lease.holder is not None and lease.holder.owner != owner:
        raise LeaseHeldError(f"the store's lease is {lease.describe()}", lease)


def wait_until_active(
    client: Client,
    *,
    timeout: float | None,
    poll: float = 1.0,
    on_wait: Callable[[LeaseView], None] | None = None,
) -> dict[str, Any]:
    """Wait until the scheduler holds the lease (a standby took it over).

    Args:
        client: The scheduler.
        timeout: Seconds to wait at most (None: as long as it takes).
        poll: Seconds between looks (the actor itself retries every ``lease_poll_s``).
        on_wait: Called with the lease after each look that found the actor on standby.

    Returns:
        The scheduler's ``ping`` once it is active.

    Raises:
        StandbyTimeoutError: ``timeout`` passed first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = client.ping()
        if info.get("role") == "active":
            return info
        if on_wait is not None:
            on_wait(client.lease())
        if deadline is not None and time.monotonic() >= deadline:
            raise StandbyTimeoutError(
                f"still a standby after {timeout:g} s: the store's lease is still held "
                "(the standby actor keeps waiting; `multicloud stop` ends it)"
            )
        time.sleep(poll)
