"""Faults a simulated cloud injects: capacity, quota and transient errors, preemptions.

Each fault fires at most ``times`` times per cloud; how often it has fired lives in the
cloud's :class:`~multicloud.sim.state.SimState`, so a journaled cloud counts across
processes and restarts. Every method runs inside the state's transaction, so the check
and the use of a fault cannot be split.
"""

from __future__ import annotations

from collections.abc import Sequence

from multicloud.errors import CapacityError, QuotaError, TransientError, error_scope
from multicloud.models import Fault, FaultKind
from multicloud.provider import Offer
from multicloud.sim.state import SimState

__all__ = ["FaultInjector", "fault_key"]


def fault_key(fleet_name: str, index: int) -> str:
    """The key a fault's uses are counted under: its fleet entry and its place there.

    Args:
        fleet_name: Fleet provider name.
        index: The fault's index in the entry's ``faults``.

    Returns:
        ``FLEET_NAME#INDEX``.
    """
    return f"{fleet_name}#{index}"


class FaultInjector:
    """The faults of one fleet provider entry.

    Args:
        fleet_name: Fleet provider name (scopes errors, keys the fault counts).
        faults: The faults, in fleet order.
        time_scale: Wall seconds per simulated hour.
    """

    def __init__(self, fleet_name: str, faults: Sequence[Fault], time_scale: float) -> None:
        self.fleet_name = fleet_name
        self.faults = tuple(faults)
        self.time_scale = time_scale

    def _applies(self, fault: Fault, offer: Offer) -> bool:
        if fault.region is not None and fault.region not in (offer.region, offer.zone):
            return False
        return fault.instance_type is None or fault.instance_type == offer.instance_type

    def _take(self, state: SimState, index: int, fault: Fault) -> bool:
        key = fault_key(self.fleet_name, index)
        if state.fault_uses.get(key, 0) >= fault.times:
            return False
        state.use_fault(key)
        return True

    def fire_launch_fault(self, state: SimState, offer: Offer) -> None:
        """Raise the first launch fault that applies to ``offer`` and has uses left.

        Args:
            state: The cloud's state (inside its transaction).
            offer: The pool launched on.

        Raises:
            CapacityError: An injected capacity fault (scoped to the zone or region).
            QuotaError: An injected quota fault (scoped to the region).
            TransientError: An injected transient fault.
        """
        zone_scope = error_scope(self.fleet_name, offer.region, offer.zone)
        for index, fault in enumerate(self.faults):
            if fault.kind is FaultKind.PREEMPTION or not self._applies(fault, offer):
                continue
            if not self._take(state, index, fault):
                continue
            where = offer.zone or offer.region
            if fault.kind is FaultKind.CAPACITY:
                raise CapacityError(
                    f"injected capacity fault: no {offer.instance_type} capacity in {where}",
                    provider=self.fleet_name,
                    scope=zone_scope,
                )
            if fault.kind is FaultKind.QUOTA:
                raise QuotaError(
                    f"injected quota fault: {offer.instance_type} quota exhausted in "
                    f"{offer.region}",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, offer.region),
                )
            raise TransientError(
                f"injected transient fault launching {offer.instance_type} in {where}",
                provider=self.fleet_name,
                scope=zone_scope,
            )

    def schedule_preemption(self, state: SimState, offer: Offer, duration_s: float) -> float | None:
        """Return when a spot workload on ``offer`` is preempted (None: never).

        Args:
            state: The cloud's state (inside its transaction).
            offer: The pool launched on.
            duration_s: Wall seconds the workload runs.

        Returns:
            Seconds after launch, from the first preemption fault that applies and has uses.
        """
        for index, fault in enumerate(self.faults):
            if fault.kind is not FaultKind.PREEMPTION or not self._applies(fault, offer):
                continue
            after = fault.after_hours * self.time_scale
            # A preemption due after the run ends would never be seen; keep it for the next one.
            if after >= duration_s:
                continue
            if self._take(state, index, fault):
                return after
        return None
