"""Creating and deleting a gang's resources: its VMs, placement group and availability set.

A half-made gang is useless and costs money, so a failed creation deletes every node before
the error goes up. ARM refuses to delete a placement group or availability set (409) while a
VM still refers to it: that is retried for a few seconds, then logged and left for a later
``terminate`` of the same handle (an empty group costs nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import AvailabilitySet, ProximityPlacementGroup, VirtualMachine

from multicloud.adapterkit import AZURE_TAGS, ErrorBoundary, refuse_reuse
from multicloud.errors import ProviderError
from multicloud_azure.arm import as_dict
from multicloud_azure.bodies import availability_set_body, placement_group_body

__all__ = ["GangOps"]

log = logging.getLogger(__name__)


def _wait(poller: LROPoller[Any], deadline: float) -> bool:
    """Wait for an operation until ``deadline``; True when done (raising its error, if any)."""
    poller.wait(timeout=max(0.0, deadline - time.monotonic()))
    if poller.done():
        poller.result()
        return True
    return False


class GangOps:
    """The gang-level ARM calls of one fleet entry.

    Args:
        compute: Returns the compute client.
        errors: The fleet entry's error boundary.
        availability_set: Gangs also get an availability set.
        launch_wait_s: How long a creation is waited for.
        terminate_wait_s: How long deletes are waited for.
    """

    def __init__(
        self,
        compute: Callable[[], ComputeManagementClient],
        errors: ErrorBoundary,
        *,
        availability_set: bool,
        launch_wait_s: float,
        terminate_wait_s: float,
    ) -> None:
        self._compute = compute
        self._errors = errors
        self.availability_set = availability_set
        self.launch_wait_s = launch_wait_s
        self.terminate_wait_s = terminate_wait_s
        self.in_use_retry_s = 15.0

    def missing(
        self, group: str, names: Sequence[str], request_id: str, digest: str, region: str
    ) -> list[int]:
        """Return the ranks whose VM does not exist yet.

        Raises:
            InvalidRequestError: If a VM of that name was launched for another spec (the
                kit's "same request id, other spec" refusal).
        """
        out: list[int] = []
        for rank, name in enumerate(names):
            with self._errors(region=region, doing=f"reading VM {name}"):
                try:
                    vm = as_dict(self._compute().virtual_machines.get(group, name))
                except ResourceNotFoundError:
                    out.append(rank)
                    continue
            tags = vm.get("tags") or {}
            what = f"VM {name} of job {tags.get(AZURE_TAGS.key('job'))!r}"
            found = tags.get(AZURE_TAGS.key("spec"))
            refuse_reuse(self._errors.provider, request_id, found, digest, what=what, region=region)
        return out

    def groups(
        self, group: str, gang: str, region: str, zone: str | None, tags: Mapping[str, str]
    ) -> tuple[str, str | None]:
        """Create the gang's placement group (and availability set); return their ids."""
        compute = self._compute()
        with self._errors(region=region, zone=zone, doing=f"creating placement group of {gang}"):
            body = ProximityPlacementGroup(placement_group_body(region, zone, tags))
            ppg = compute.proximity_placement_groups.create_or_update(group, f"{gang}-ppg", body)
        ppg_id = str(as_dict(ppg).get("id", ""))
        if not self.availability_set:
            return ppg_id, None
        try:
            with self._errors(region=region, doing=f"creating availability set of {gang}"):
                avset = AvailabilitySet(availability_set_body(region, ppg_id, tags))
                made = compute.availability_sets.create_or_update(group, f"{gang}-avset", avset)
        except ProviderError:
            self.delete_groups(group, gang)  # the placement group just made
            raise
        return ppg_id, str(as_dict(made).get("id", ""))

    def create(
        self,
        group: str,
        names: Sequence[str],
        bodies: Mapping[int, dict[str, Any]],
        *,
        region: str,
        zone: str | None,
    ) -> None:
        """PUT every missing node, then wait up to ``launch_wait_s`` for them.

        Raises:
            ProviderError: The translated failure, once every node of the gang is deleted.
        """
        compute = self._compute()
        try:
            pollers = [
                compute.virtual_machines.begin_create_or_update(group, names[r], VirtualMachine(b))
                for r, b in sorted(bodies.items())
            ]
            deadline = time.monotonic() + self.launch_wait_s
            if not all(_wait(p, deadline) for p in pollers):
                log.info("VMs of %s still provisioning after %.0fs", names[0], self.launch_wait_s)
        except (AzureError, OSError) as exc:
            error = self._errors.translate(
                exc, region=region, zone=zone, doing=f"creating {names[0].rsplit('-', 1)[0]}"
            )
            self.cleanup(group, names)
            raise error from exc

    def delete(self, group: str, names: Sequence[str], wait_s: float) -> None:
        """Delete VMs (a missing one is a no-op) and wait up to ``wait_s`` for the deletes."""
        compute = self._compute()
        pollers = []
        for name in names:
            try:
                pollers.append(compute.virtual_machines.begin_delete(group, name))
            except ResourceNotFoundError:
                continue
        deadline = time.monotonic() + wait_s
        for poller in pollers:
            _wait(poller, deadline)

    def cleanup(self, group: str, names: Sequence[str]) -> None:
        """Delete the VMs of a failed launch, then the gang's availability set and group."""
        try:
            self.delete(group, names, min(self.launch_wait_s, self.terminate_wait_s))
        except (AzureError, OSError) as exc:
            # The sweep finds that VM by its tags; its terminate deletes the groups too.
            log.warning("a VM of failed launch %s was not deleted: %s", names[0], exc)
            return
        if len(names) > 1:
            self.delete_groups(group, names[0].rsplit("-", 1)[0])

    def delete_groups(self, group: str, gang: str) -> None:
        """Delete a gang's availability set, then its placement group; never raises."""
        deadline = time.monotonic() + self.in_use_retry_s
        compute = self._compute()
        # The availability set first: it refers to the placement group.
        if self._delete_in_use(compute.availability_sets.delete, group, f"{gang}-avset", deadline):
            ppgs = compute.proximity_placement_groups
            self._delete_in_use(ppgs.delete, group, f"{gang}-ppg", deadline)

    @staticmethod
    def _delete_in_use(
        delete: Callable[[str, str], object], group: str, name: str, deadline: float
    ) -> bool:
        pause = 0.2
        while True:
            try:
                delete(group, name)
                return True
            except ResourceNotFoundError:
                return True
            except HttpResponseError as exc:
                if exc.status_code == 409 and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                log.warning("%s in %s left behind, not deleted: %s", name, group, exc)
                return False
            except (AzureError, OSError) as exc:
                log.warning("%s in %s left behind, not deleted: %s", name, group, exc)
                return False
