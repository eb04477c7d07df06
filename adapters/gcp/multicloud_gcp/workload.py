"""What runs on a Google Cloud node: the kit's node program with Google's binding.

Every GPU VM and every TPU VM worker boots the one node program the kit renders
(:func:`multicloud.adapterkit.render_node_program`, docs/node-contract.md) as its
``startup-script``. Google contributes a :class:`~multicloud.adapterkit.Binding` that uses only
``curl`` to the metadata server and Google's REST APIs, ``getent``, ``sed``/``tr``/``cut`` and
``base64``:

* **rank** — a GPU VM's from its name (``<base>-<rank>``); a TPU worker's from the
  ``agent-worker-number`` attribute (also exported as ``TPU_WORKER_ID``);
* **rank 0's address** — GPU VMs resolve ``<base>-0`` through the VPC's internal DNS
  (``getent hosts``); TPU workers take the first of the ``worker-network-endpoints``
  attribute (``unknown:unknown:<ip>,...``, worker 0 first — how JAX's own cloud_tpu_cluster
  reads it);
* **reclaimed** — the metadata server's ``instance/preempted`` is ``TRUE`` (spot reclaim) or
  ``instance/maintenance-event`` is ``TERMINATE_ON_HOST_MAINTENANCE`` (Compute Engine
  "Create and use Spot VMs": detect preemption from the metadata server);
* **secret** — Secret Manager ``versions/latest:access`` with the node's own token;
* **report** — a GPU VM writes ``multicloud-exit=<code|preempted>`` into its own labels
  (``instances.setLabels`` with the label fingerprint) and powers off; on a TPU slice, worker 0
  writes the label on the TPU node (``nodes.patch``, ``updateMask=labels``).

Labels are lowercased and at most 63 characters (``GCP_LABELS``), so the exact ownership also
travels in metadata (:data:`EXACT`) for the orphan sweep.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from multicloud.adapterkit import (
    GCP_LABELS,
    Binding,
    LabelStyle,
    NodeShape,
    Ownership,
    refuse_reuse,
    render_node_program,
    resource_name,
)
from multicloud.provider import LaunchSpec, MarketKind, Offer

__all__ = [
    "DEFAULT_GPU_IMAGE",
    "EXACT",
    "LABEL_ATTEMPT",
    "LABEL_EXIT",
    "LABEL_HANDLE",
    "LABEL_INSTALL",
    "LABEL_JOB",
    "META_TYPE",
    "TPU_RUNTIME_VERSIONS",
    "Launch",
    "gvnic_only",
    "has_rdma",
    "is_tpu",
    "label_value",
    "tpu_generation",
    "tpu_hosts",
]

LABEL_JOB = GCP_LABELS.key("job")
LABEL_ATTEMPT = GCP_LABELS.key("attempt")
LABEL_INSTALL = GCP_LABELS.key("install")
LABEL_HANDLE = "multicloud-handle"
LABEL_EXIT = "multicloud-exit"
"""Written by the node itself when it ends: its exit code, or ``preempted``."""
META_TYPE = "multicloud-instance-type"
EXACT = LabelStyle("multicloud-")
"""The ownership as metadata items: the same keys as the labels, values unchanged."""

DEFAULT_GPU_IMAGE = "projects/deeplearning-platform-release/global/images/family/" + (
    "common-cu128-ubuntu-2204-nvidia-570"
)
"""Boot image of NVIDIA GPU VMs (every GCP GPU family: A2, A3, A3 Mega/Ultra, A4, G2): a Deep
Learning VM image with the NVIDIA 570 driver (B200 and H200 need >= 570 / 550) and Docker."""

TPU_RUNTIME_VERSIONS: dict[str, str] = {
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
"""TPU VM software version per generation (Cloud TPU "TPU software versions")."""


def label_value(text: str) -> str:
    """Return ``text`` as a GCP label value (lowercase, ``[a-z0-9_-]``, at most 63 chars)."""
    return GCP_LABELS.value(text)


def is_tpu(instance_type: str) -> bool:
    """Return True for a TPU slice (``tpu-v5litepod-8``) rather than a machine type."""
    return instance_type.startswith("tpu-")


def gvnic_only(instance_type: str) -> bool:
    """Return True for machine series that boot only with a gVNIC (A3 High/Mega/Ultra, A4).

    Compute Engine "GPUDirect": "The VMs must also use the Google Virtual NIC (gVNIC)";
    "Networking and GPU machines" lists only gVNIC (and CX-7 MRDMA) NICs for these series.
    """
    return instance_type.startswith(("a3-", "a4-"))


def has_rdma(instance_type: str) -> bool:
    """Return True for machine types with ConnectX-7 RDMA NICs (A3 Ultra, A4; NIC type MRDMA).

    A3 Mega's GPUDirect-TCPXO is not RDMA: it runs over eight extra gVNICs with Google's
    receive-datapath-manager beside the job, which this adapter does not set up.
    """
    return instance_type.startswith(("a3-ultragpu", "a4-"))


def tpu_generation(instance_type: str) -> str:
    """Return the generation of a TPU slice (``tpu-v5litepod-8`` -> ``v5litepod``)."""
    return instance_type.removeprefix("tpu-").rsplit("-", 1)[0]


def tpu_hosts(instance_type: str, chips: int) -> int:
    """Return the TPU VM workers of a slice: 4 chips per host, but v5e/v6e up to 8 on one."""
    per_host = 4 if tpu_generation(instance_type) == "v5p" or chips > 8 else max(chips, 1)
    return max(1, math.ceil(chips / per_host))


_PRELUDE = r"""MD=http://metadata.google.internal/computeMetadata/v1
COMPUTE=https://compute.googleapis.com/compute/v1
TPUAPI=https://tpu.googleapis.com/v2
md() { curl -sf -H 'Metadata-Flavor: Google' "$MD/$1"; }
field() { tr -d '\n ' | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
token() { md instance/service-accounts/default/token | field access_token; }
api() { curl -sf -H "Authorization: Bearer $(token)" -H 'Content-Type: application/json' "$@"; }
"""

_SECRET = r"""local path=$1 data
case "$path" in projects/*) ;; *) path="projects/$(md project/project-id)/secrets/$path";; esac
data=$(api "https://secretmanager.googleapis.com/v1/$path/versions/latest:access" | field data)
[ -n "$data" ] && printf '%s' "$data" | base64 -d"""

_RECLAIMED = (
    '[ "$(md instance/preempted)" = TRUE ] || '
    '[ "$(md instance/maintenance-event)" = TERMINATE_ON_HOST_MAINTENANCE ]'
)

_BODY = r'"{\"labels\":{$LABELS,\"multicloud-exit\":\"$1\"}'

_VM = Binding(
    cloud="gcp",
    prelude="",
    rank='local name; name=$(md instance/name) || return 1; echo "${name##*-}"',
    master="getent hosts \"$BASE-0\" | awk '{print $1; exit}'",
    secret=_SECRET,
    reclaimed=_RECLAIMED,
    report=r"""local name zone url fp
name=$(md instance/name) && zone=$(md instance/zone) || return 1
url="$COMPUTE/projects/$(md project/project-id)/zones/${zone##*/}/instances/$name"
fp=$(api "$url?fields=labelFingerprint" | field labelFingerprint)
[ -n "$fp" ] || return 1
api -X POST -d """
    + _BODY
    + r""",\"labelFingerprint\":\"$fp\"}" "$url/setLabels" >/dev/null""",
)

_TPU = dataclasses.replace(
    _VM,
    rank="md instance/attributes/agent-worker-number",
    master="md instance/attributes/worker-network-endpoints | cut -d, -f1 | cut -d: -f3",
    # Worker 0 speaks for the slice; a TPU VM cannot stop itself (the scheduler deletes it).
    report=r"""local worker zone url
worker=$(md instance/attributes/agent-worker-number) || worker=0
[ "$worker" = 0 ] || return 0
zone=$(md instance/zone) || return 1
url="$TPUAPI/projects/$(md project/project-id)/locations/${zone##*/}/nodes/$BASE"
api -X PATCH -d """
    + _BODY
    + r"""}" "$url?updateMask=labels" >/dev/null""",
    halt=":",
    tpu=True,
)


@dataclass(frozen=True)
class Launch:
    """One launch as the VM and TPU code need it.

    Attributes:
        offer: The planned offer (zonal).
        spec: The launch.
        request_id: Its idempotency key.
        base: Base name of its resources (VMs ``<base>-<i>``, the TPU node ``<base>``).
        labels: Labels of every resource: the ownership and the handle.
        metadata: Metadata of every resource: the exact ownership.
    """

    offer: Offer
    spec: LaunchSpec
    request_id: str
    base: str
    labels: dict[str, str]
    metadata: dict[str, str]

    @classmethod
    def of(cls, offer: Offer, spec: LaunchSpec, request_id: str, fleet_name: str) -> Launch:
        """Return the launch of ``spec`` on ``offer`` by a fleet entry, named and labelled."""
        base = resource_name(fleet_name, request_id)
        owner = Ownership.of(spec, offer, request_id)
        labels = {**owner.labels(GCP_LABELS), LABEL_HANDLE: base}
        return cls(offer, spec, request_id, base, labels, owner.labels(EXACT))

    @property
    def zone(self) -> str:
        """The offer's zone."""
        return str(self.offer.zone)

    @property
    def spot(self) -> bool:
        """Whether the launch is in the spot market."""
        return self.spec.market is MarketKind.SPOT

    def refuse_reuse(self, fleet_name: str, found: Mapping[str, str], what: str) -> None:
        """Refuse the request id when ``found`` (labels met under its name) is another launch."""
        key = GCP_LABELS.key("spec")
        refuse_reuse(
            fleet_name,
            self.request_id,
            dict(found).get(key),
            self.labels[key],
            what=what,
            region=self.offer.region,
        )

    def program(self, *, rdma: bool = False) -> str:
        """Render the ``startup-script`` every node of the launch boots.

        Args:
            rdma: The VMs have MRDMA NICs attached (``/dev/infiniband`` exists).

        Returns:
            The bash program (secret names only; values are fetched on the node).
        """
        spec, offer = self.spec, self.offer
        pairs = json.dumps(self.labels, sort_keys=True, separators=(",", ":"))[1:-1]
        prelude = f"BASE={shlex.quote(self.base)}\nLABELS={shlex.quote(pairs)}\n{_PRELUDE}"
        if not is_tpu(offer.instance_type):
            binding = dataclasses.replace(_VM, prelude=prelude)
            shape = NodeShape.of(offer, rdma=rdma)
            return render_node_program(spec, offer, self.request_id, binding, shape=shape)
        # A slice of several TPU VM workers is a gang of that many nodes, one program each.
        hosts = tpu_hosts(offer.instance_type, offer.count)
        shape = NodeShape("tpu", max(1, offer.count // hosts))
        gang = dataclasses.replace(spec, nodes=hosts)
        binding = dataclasses.replace(_TPU, prelude=prelude)
        return render_node_program(gang, offer, self.request_id, binding, shape=shape)
