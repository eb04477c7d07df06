"""What a working Azure fleet entry must set, checked when the adapter is built.

The adapter is built when a fleet is loaded (``multicloud start``, ``plan``, the service), so an
entry refused here stops the command with exit status 2 before anything starts, naming the
option (``providers.<name>.options.<option>``).
"""

from __future__ import annotations

import re
from typing import Any

from multicloud_azure.arm import CREDENTIALS, is_loopback_http
from multicloud_azure.bodies import image_reference

__all__ = ["IDENTITY_ID", "option_problems"]

IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$",
    re.IGNORECASE,
)
"""An ARM id of a user-assigned managed identity."""
# Key Vault names: 3-24 characters, letters, digits and dashes, starting with a letter.
_KEY_VAULT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")

_NO_IDENTITY = (
    "required: the resource id of a user-assigned managed identity given to the VMs. A node "
    "reports how its job ended (a tag on its VM) and deallocates itself with it; without one "
    "every job would read FAILED and every finished VM would stay allocated and billed"
)


def option_problems(**o: Any) -> list[tuple[str, str]]:
    """Return ``(option, problem)`` for each option a working fleet entry cannot have.

    Args:
        **o: The options checked (``subscription_id``, ``credential``, ``base_url``,
            ``subnet_id``, ``identity_id``, ``key_vault``, ``image``, ``os_disk_gb``,
            ``zonal``, ``availability_set``, ``launch_wait_s``).

    Returns:
        The problems, empty when the entry can run jobs.
    """
    problems: list[tuple[str, str]] = []
    if not o["subscription_id"]:
        problems.append(("subscription_id", "required (or set $AZURE_SUBSCRIPTION_ID)"))
    credential = o["credential"]
    if isinstance(credential, str) and credential not in CREDENTIALS:
        problems.append(("credential", f"must be one of {', '.join(CREDENTIALS)}"))
    if credential == "static" and not is_loopback_http(o["base_url"]):
        # A fixed token only makes sense against a fake; never send it anywhere else.
        problems.append(("credential", "'static' needs a loopback http base_url (a fake ARM)"))
    if not o["subnet_id"]:
        problems.append(("subnet_id", "required: the subnet the VMs' NICs join"))
    if not o["identity_id"]:
        problems.append(("identity_id", _NO_IDENTITY))
    elif not IDENTITY_ID.match(o["identity_id"]):
        problems.append(
            (
                "identity_id",
                "must be /subscriptions/…/resourceGroups/…/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/<name>",
            )
        )
    if o["key_vault"] is not None and not _KEY_VAULT.match(o["key_vault"]):
        problems.append(("key_vault", "a Key Vault name: 3-24 letters, digits and dashes"))
    if o["image"] is not None and image_reference(o["image"]) is None:
        problems.append(("image", "neither publisher:offer:sku:version nor an image resource id"))
    if o["os_disk_gb"] < 30:
        problems.append(("os_disk_gb", "must be at least 30"))
    if o["zonal"] and o["availability_set"]:
        problems.append(("availability_set", "cannot be combined with zonal (Azure refuses both)"))
    if o["launch_wait_s"] < 0:
        problems.append(("launch_wait_s", "must be at least 0"))
    return problems
