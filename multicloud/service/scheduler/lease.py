"""Holding the store's lease for the cycle: acquire, renew on the cycle's clock, release.

One scheduler per store (``docs/architecture.md``, "One scheduler per store"): the keeper
takes the store's lease before the scheduler reads anything, and renews it every
``lease_renew_s`` of the cycle's clock (expiry itself is in database time, see
:mod:`multicloud.store.lease`). Once acquired, every write of the store is fenced by the
lease's epoch; a renewal or a write that finds the epoch moved on raises ``LeaseLost``, and
the cycle stops.
"""

from __future__ import annotations

from multicloud.service.scheduler.settings import Settings
from multicloud.service.scheduler.timing import Clock, Timer
from multicloud.store import Holder, Lease, LeaseHeldError, Store

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """The lease of one scheduler.

    Args:
        store: The store.
        holder: Who this scheduler is.
        settings: ``lease_ttl_s`` and ``lease_renew_s``.
        clock: The scheduler's clock (paces renewals).
    """

    def __init__(self, store: Store, holder: Holder, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.holder = holder
        self.ttl = settings.lease_ttl_s
        self.clock = clock
        self.timer = Timer(clock, settings.lease_renew_s, due_now=False)
        self.lease: Lease | None = None
        self.seen: Lease | None = None

    @property
    def epoch(self) -> int | None:
        """The epoch held (None: not holding)."""
        return self.store.lease.epoch

    def acquire(self, *, own: bool) -> Lease:
        """Take the lease if it is free or expired (or, with ``own``, this installation's).

        Args:
            own: Take it at once from an earlier holder with the same owner key (a restart
                of this installation).

        Returns:
            The lease held; every later write of the store is fenced with its epoch.

        Raises:
            LeaseHeldError: Another live scheduler holds it (``.lease`` says who).
        """
        try:
            self.lease = self.store.lease.acquire(self.holder, self.ttl, own=own)
        except LeaseHeldError as held:
            self.seen = held.lease if isinstance(held.lease, Lease) else None
            raise
        self.seen = self.lease
        self.timer = Timer(self.clock, self.timer.interval, due_now=False)
        return self.lease

    def try_acquire(self, *, own: bool) -> Lease | None:
        """:meth:`acquire`, or None when another live scheduler holds it (see :attr:`seen`)."""
        try:
            return self.acquire(own=own)
        except LeaseHeldError:
            return None

    def renew_if_due(self) -> None:
        """Renew the lease when its renewal interval has passed.

        Raises:
            LeaseLost: Another scheduler took it over.
        """
        if self.timer.due():
            self.lease = self.store.lease.renew(self.ttl)

    def release(self) -> None:
        """Let the lease run out now (a clean stop), so a successor need not wait."""
        self.store.lease.release()
