"""The REST bodies the adapter PUTs: a gang's VMs, its placement group and availability set.

Each VM's NIC and OS disk are created *inside* the VM's PUT (``networkInterfaceConfigurations``
and ``deleteOption: Delete``), so they live and die with the VM and no network client is
needed; the VM gets no public IP.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multicloud.provider import MarketKind

__all__ = [
    "VmSettings",
    "availability_set_body",
    "image_reference",
    "placement_group_body",
    "vm_body",
]


@dataclass(frozen=True)
class VmSettings:
    """The adapter options that shape every VM: the subnet of its NIC (``{region}`` already
    replaced), the admin user and its SSH key (without one a random password, never stored, is
    set: Azure requires one of the two), the nodes' user-assigned identity, the OS disk size."""

    subnet_id: str
    admin_username: str
    ssh_public_key: str | None
    identity_id: str
    os_disk_gb: int


def image_reference(image: str) -> dict[str, str] | None:
    """Return the ``imageReference`` of a marketplace URN or an image resource id.

    Args:
        image: ``publisher:offer:sku:version`` or ``/subscriptions/…`` id.

    Returns:
        The reference, or None when ``image`` is neither.
    """
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) != 4 or not all(parts):
        return None
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def vm_body(
    name: str,
    *,
    size: str,
    region: str,
    zone: str | None,
    market: MarketKind,
    image: Mapping[str, str],
    custom_data: str,
    tags: Mapping[str, str],
    settings: VmSettings,
    placement_group: str | None,
    availability_set: str | None,
) -> dict[str, Any]:
    """Return the PUT body of one node's VM.

    Args:
        name: VM name (also its host name, which Azure DNS resolves in the network).
        size: VM size.
        region: Region.
        zone: Zone number, for a zonal offer.
        market: Spot or on demand.
        image: Its ``imageReference``.
        custom_data: The node program, base64.
        tags: Tags.
        settings: Adapter options.
        placement_group: Resource id of the gang's proximity placement group.
        availability_set: Resource id of the gang's availability set (which carries the
            placement group; a VM may not name both).

    Returns:
        The body.
    """
    linux: dict[str, Any] = {"provisionVMAgent": True}
    os_profile: dict[str, Any] = {
        "computerName": name,
        "adminUsername": settings.admin_username,
        "customData": custom_data,
        "linuxConfiguration": linux,
    }
    if settings.ssh_public_key:
        linux["disablePasswordAuthentication"] = True
        linux["ssh"] = {
            "publicKeys": [
                {
                    "path": f"/home/{settings.admin_username}/.ssh/authorized_keys",
                    "keyData": settings.ssh_public_key,
                }
            ]
        }
    else:
        os_profile["adminPassword"] = secrets.token_urlsafe(24) + "aA1!"
    nic = {
        "name": f"{name}-nic",
        "properties": {
            "primary": True,
            "deleteOption": "Delete",
            "enableAcceleratedNetworking": True,
            "ipConfigurations": [
                {"name": "ipconfig1", "properties": {"subnet": {"id": settings.subnet_id}}}
            ],
        },
    }
    props: dict[str, Any] = {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {
            "imageReference": dict(image),
            "osDisk": {
                "createOption": "FromImage",
                "deleteOption": "Delete",
                "diskSizeGB": settings.os_disk_gb,
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
        },
        "osProfile": os_profile,
        "networkProfile": {
            "networkApiVersion": "2020-11-01",
            "networkInterfaceConfigurations": [nic],
        },
        "priority": "Regular",
    }
    if market is MarketKind.SPOT:
        # Delete: an evicted node leaves nothing billed. -1: pay up to the on-demand price,
        # so eviction comes only for capacity, never for price.
        props.update(priority="Spot", evictionPolicy="Delete", billingProfile={"maxPrice": -1})
    if availability_set:
        props["availabilitySet"] = {"id": availability_set}
    elif placement_group:
        props["proximityPlacementGroup"] = {"id": placement_group}
    body: dict[str, Any] = {
        "location": region,
        "tags": dict(tags),
        "properties": props,
        "identity": {
            "type": "UserAssigned",
            "userAssignedIdentities": {settings.identity_id: {}},
        },
    }
    if zone:
        body["zones"] = [zone]
    return body


def placement_group_body(region: str, zone: str | None, tags: Mapping[str, str]) -> dict[str, Any]:
    """Return the PUT body of a gang's proximity placement group (a PUT: re-sends are no-ops)."""
    body: dict[str, Any] = {
        "location": region,
        "tags": dict(tags),
        "properties": {"proximityPlacementGroupType": "Standard"},
    }
    if zone:
        body["zones"] = [zone]
    return body


def availability_set_body(
    region: str, placement_group: str, tags: Mapping[str, str]
) -> dict[str, Any]:
    """Return the PUT body of a gang's availability set, inside its placement group.

    On ND sizes, VMs share an InfiniBand fabric only within one availability set or scale set.
    """
    return {
        "location": region,
        "tags": dict(tags),
        "sku": {"name": "Aligned"},
        "properties": {
            "platformFaultDomainCount": 1,
            "platformUpdateDomainCount": 1,
            "proximityPlacementGroup": {"id": placement_group},
        },
    }
