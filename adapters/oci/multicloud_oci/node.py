"""The node contract on OCI: the kit's node program with Oracle Cloud's bindings.

Each node boots the program rendered by ``multicloud.adapterkit.render_node_program`` from
its ``user_data`` (cloud-init runs it). What OCI contributes (docs/node-contract.md):

* **rank**: the instance's own custom metadata key ``multicloud_rank``, read from the
  instance metadata service (IMDSv2, ``http://169.254.169.254/opc/v2/`` with the header
  ``Authorization: Bearer Oracle``);
* **rank 0's address**: rank 0's VNIC is launched with the hostname label ``<name>-0``, which
  the VCN resolver answers in the subnet (``getent hosts``);
* **secrets** by name from an OCI Vault (``GetSecretBundleByName`` through the OCI CLI with
  the instance principal), base64-decoded;
* **reclaimed**: OCI has no on-node termination notice for preemptible instances (it
  terminates them, https://docs.oracle.com/iaas/Content/Compute/Concepts/preemptible.htm):
  the node asks the Compute API for its own lifecycle state and counts TERMINATING or
  TERMINATED as being reclaimed;
* **report**: the node renames itself to ``<name>-<rank> exit=<code>`` (``UpdateInstance``:
  the display name is the one field OCI lets a preemptible instance change);
* **halt**: the node terminates itself. Stopping from the OS does not stop billing, and a
  stopped GPU instance (but VM.GPU.A10) is still billed
  (https://docs.oracle.com/iaas/Content/Compute/Tasks/resource-billing-stopped-instances.htm).
"""

from __future__ import annotations

import base64
import re
import shlex

from multicloud.adapterkit import Binding, NodeShape, render_node_program
from multicloud.provider import LaunchSpec, Offer

__all__ = ["IMDS", "RANK_KEY", "binding", "reported", "user_data"]

IMDS = "http://169.254.169.254/opc/v2"
RANK_KEY = "multicloud_rank"
"""Custom metadata key holding a node's rank."""

_REPORT = re.compile(r" exit=(\S+)$")
_CLI = "oci --auth instance_principal"


def binding(base: str, vault_id: str | None) -> Binding:
    """Return OCI's bindings for the nodes of one launch.

    Args:
        base: The launch's base name (node ``i`` is ``<base>-<i>``, also its hostname).
        vault_id: The Vault holding the job's secrets, if any.

    Returns:
        The binding.
    """
    me = '--instance-id "$(md instance/id)"'
    secret = "return 1"  # no vault: every secret is unreadable (the launch refuses first)
    if vault_id:
        secret = "\n".join(
            [
                "local b64",
                f"b64=$(occ secrets secret-bundle get-secret-bundle-by-name "
                f'--vault-id {shlex.quote(vault_id)} --secret-name "$1" '
                "--query 'data.\"secret-bundle-content\".content' --raw-output) || return 1",
                'printf \'%s\' "$b64" | base64 -d',
            ]
        )
    return Binding(
        cloud="oci",
        prelude="\n".join(
            [
                f'md() {{ curl -sf -H "Authorization: Bearer Oracle" -L "{IMDS}/$1"; }}',
                f'occ() {{ {_CLI} "$@"; }}',
            ]
        ),
        rank=f"md instance/metadata/{RANK_KEY}",
        master=f"getent hosts {shlex.quote(base + '-0')} | awk '{{print $1; exit}}'",
        secret=secret,
        reclaimed="\n".join(
            [
                "local state",
                f"state=$(occ compute instance get {me} "
                "--query 'data.\"lifecycle-state\"' --raw-output) || return 1",
                '[ "$state" = TERMINATING ] || [ "$state" = TERMINATED ]',
            ]
        ),
        report=f'occ compute instance update {me} --display-name "{base}-$(mc_rank) exit=$1" '
        "--force >/dev/null",
        halt=f"occ compute instance terminate {me} --preserve-boot-volume false --force",
    )


def user_data(
    spec: LaunchSpec,
    offer: Offer,
    request_id: str,
    base: str,
    shape: NodeShape,
    vault_id: str | None,
) -> str:
    """Return the ``user_data`` metadata value every node of the launch boots with.

    Args:
        spec: The launch.
        offer: The planned offer.
        request_id: The launch's idempotency key.
        base: The launch's base name.
        shape: The nodes' shape (family, accelerators, RDMA).
        vault_id: The Vault of the job's secrets.

    Returns:
        The node program, base64-encoded as OCI's ``user_data`` key requires.
    """
    program = render_node_program(
        spec, offer, request_id, binding(base, vault_id), shape=shape
    )
    return base64.b64encode(program.encode()).decode()


def reported(display_name: str | None) -> str | None:
    """Return what a node reported in its display name (an exit code or ``preempted``)."""
    hit = _REPORT.search(display_name or "")
    return hit.group(1) if hit else None
