"""Azure's part of the node contract: the bash snippets every VM's node program is made of.

The program itself is the kit's (``multicloud.adapterkit.render_node_program``, see
docs/node-contract.md); Azure contributes a ``Binding``. Every VM gets its own custom data, so
a node's rank and the name of rank 0's VM are rendered into its program. On the VM it uses
``curl`` (to the instance metadata service, IMDS, with ``Metadata: true``, and to ARM and Key
Vault with a token IMDS issues for the VMs' user-assigned identity), ``getent`` and
``python3`` (cloud-init, which runs custom data, is itself Python, so every image that runs
this program has it) to read JSON:

* rank 0's address: rank 0 reads its own private IP from IMDS; the others resolve rank 0's VM
  name, which Azure-provided DNS resolves inside the virtual network;
* secrets: Key Vault ``https://<key_vault>.vault.azure.net/secrets/<name>`` (``_`` → ``-``:
  Key Vault names hold letters, digits and dashes only);
* reclaimed: IMDS Scheduled Events lists a ``Preempt`` event naming this VM (Spot eviction,
  at least 30 s ahead); events go to every VM of an availability set, hence the name check;
* report: ARM "Tags - Update At Scope" (``Merge``) sets ``multicloud:exit`` on the VM itself;
* halt: ARM ``virtualMachines/deallocate`` — not ``powerOff``, which keeps the VM allocated and
  billed (azure-mgmt-compute: ``begin_deallocate`` "You are not billed for the compute
  resources", ``begin_power_off`` "You are still charged") — and a guest shutdown if that fails.
"""

from __future__ import annotations

import base64
import re
import shlex
import urllib.parse
from collections.abc import Sequence

from multicloud.adapterkit import Binding

__all__ = [
    "CUSTOM_DATA_LIMIT",
    "EXIT_TAG",
    "IMAGES",
    "custom_data",
    "has_infiniband",
    "node_binding",
    "secret_problem",
]

EXIT_TAG = "multicloud:exit"
"""Tag a node sets on its own VM: its exit code, or ``preempted``."""

CUSTOM_DATA_LIMIT = 65535
"""Bytes of decoded custom data Azure accepts (azure-mgmt-compute ``OSProfile.custom_data``)."""

IMAGES: dict[str, str] = {
    # Ubuntu HPC: NVIDIA driver, Docker with the NVIDIA container toolkit, and the InfiniBand
    # stack (MOFED) the ND sizes need.
    "nvidia": "microsoft-dsvm:ubuntu-hpc:2204:latest",
}
"""Default VM image per accelerator family (the ``image`` option overrides it)."""

IMDS = "http://169.254.169.254/metadata"
_IMDS_TOKEN = "identity/oauth2/token?api-version=2018-02-01"
_IMDS_EVENTS = "scheduledevents?api-version=2020-07-01"
_IMDS_OWN_IP = (
    "instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2021-02-01"
    "&format=text"
)
# Key Vault secret names: 1-127 letters, digits and dashes (a "_" is read as "-").
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,127}$")
_TAGS = "/providers/Microsoft.Resources/tags/default?api-version=2021-04-01"
_DEALLOCATE = "/deallocate?api-version=2024-07-01"

# Azure's size names spell features in lower case after the vCPU count; "r" = "includes RDMA
# (InfiniBand) secondary network" (learn.microsoft.com/azure/virtual-machines/
# vm-naming-conventions): ND96isr_H100_v5, ND96isr_H200_v5, ND96isr_MI300X_v5, ND96asr_v4,
# ND96amsr_A100_v4, ND40rs_v2, NC24rs_v3 — not NC24ads_A100_v4 or NC40ads_H100_v5.
_FEATURES = re.compile(r"Standard_[A-Z]+\d+(?:-\d+)?([a-z]*)")


def has_infiniband(size: str) -> bool:
    """Return True if a VM size has InfiniBand devices (``/dev/infiniband``).

    Args:
        size: VM size, e.g. ``Standard_ND96isr_H100_v5``.

    Returns:
        Whether its name carries the RDMA feature letter.
    """
    match = _FEATURES.match(size)
    return bool(match and "r" in match.group(1))


def node_binding(
    *,
    rank: int,
    vm_id: str,
    head: str,
    arm: str,
    identity_id: str,
    identity_client_id: str | None,
    key_vault: str | None,
) -> Binding:
    """Return the snippets of one VM's node program.

    Args:
        rank: The node's rank.
        vm_id: Its VM's resource id (the scope it tags and deallocates).
        head: VM name of rank 0 (resolvable in the virtual network).
        arm: Resource Manager endpoint (also the token's resource).
        identity_id: Resource id of the VMs' user-assigned identity.
        identity_client_id: Its client id, if given (else IMDS is asked by resource id).
        key_vault: Key Vault the secrets are read from.

    Returns:
        The binding.
    """
    q = shlex.quote
    arm = arm.rstrip("/")
    who = (
        f"client_id={urllib.parse.quote(identity_client_id, safe='')}"
        if identity_client_id
        else f"msi_res_id={urllib.parse.quote(identity_id, safe='')}"
    )
    prelude = "\n".join(
        [
            f"IMDS={IMDS}",
            f"ARM={q(arm)}",
            f"VM_ID={q(vm_id)}",
            f"VM_NAME={q(vm_id.rsplit('/', 1)[-1])}",
            "imds() { curl -sf -H 'Metadata: true' \"$IMDS/$1\"; }",
            "field() { python3 -c 'import json, sys; "
            'sys.stdout.write(json.load(sys.stdin)[sys.argv[1]])\' "$1" 2>/dev/null; }',
            f'token() {{ imds "{_IMDS_TOKEN}&resource=$1&{who}" | field access_token; }}',
            'arm() { local t; t=$(token "$ARM/") && curl -sf -o /dev/null -X "$1" '
            "-H \"Authorization: Bearer $t\" -H 'Content-Type: application/json' "
            '-d "$3" "$ARM$VM_ID$2"; }',
            # Scheduled Events delivers events only once asked for them (the first answer can
            # take two minutes): ask now, so that a Preempt notice reaches this node later.
            f"(imds '{_IMDS_EVENTS}' >/dev/null 2>&1 &)",
        ]
    )
    if rank == 0:
        master = f"imds '{_IMDS_OWN_IP}'"
    else:
        master = f"getent hosts {q(head)} | awk '{{print $1; exit}}'"
    vault = f"https://{key_vault}.vault.azure.net" if key_vault else ""
    secret = (
        "local t; t=$(token https://vault.azure.net) || return 1\n"
        f'curl -sf -H "Authorization: Bearer $t" "{vault}/secrets/${{1//_/-}}?api-version=7.4"'
        " | field value"
    )
    reclaimed = (
        f"imds '{_IMDS_EVENTS}' | python3 -c 'import json, sys; "
        'events = json.load(sys.stdin).get("Events", []); '
        'sys.exit(not any(e.get("EventType") == "Preempt" and sys.argv[1] in '
        'e.get("Resources", []) for e in events))\' "$VM_NAME" 2>/dev/null'
    )
    body = '{"operation":"Merge","properties":{"tags":{"' + EXIT_TAG + '":"$1"}}}'
    body = body.replace('"', '\\"')  # inside a double-quoted bash word
    return Binding(
        cloud="azure",
        prelude=prelude,
        rank=f"echo {rank}",
        master=master,
        secret=secret,
        reclaimed=reclaimed,
        report=f"arm PATCH '{_TAGS}' \"{body}\"",
        halt=f"arm POST '{_DEALLOCATE}' '' || shutdown -h now",
    )


def secret_problem(secrets: Sequence[str], key_vault: str | None) -> str | None:
    """Return why a job's secrets cannot be read on its nodes, or None when they can.

    Args:
        secrets: The job's secret names.
        key_vault: The Key Vault option.

    Returns:
        The problem, for an ``InvalidRequestError``.
    """
    if secrets and not key_vault:
        return "the job has secrets but the key_vault option is not set"
    bad = [s for s in secrets if not _SECRET_NAME.match(s)]
    if bad:
        return f"not Key Vault secret names (letters, digits, - and _): {', '.join(bad)}"
    return None


def custom_data(program: str) -> str:
    """Encode a node program as VM custom data.

    Args:
        program: The program.

    Returns:
        Its base64 text.

    Raises:
        ValueError: If it is over Azure's limit.
    """
    raw = program.encode("utf-8")
    if len(raw) > CUSTOM_DATA_LIMIT:
        raise ValueError(
            f"the node program is {len(raw)} bytes, over Azure's {CUSTOM_DATA_LIMIT} for custom "
            "data; shorten the command or environment"
        )
    return base64.b64encode(raw).decode("ascii")
