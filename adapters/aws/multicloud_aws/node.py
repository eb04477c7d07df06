"""The node contract on EC2: the binding's snippets and the image each accelerator family boots.

Every node of a gang boots the kit's node program (``multicloud.adapterkit.node``;
docs/node-contract.md) as user-data. AWS contributes only the :data:`BINDING`:

* rank: ``ami-launch-index`` from the instance metadata service (IMDSv2). A gang is one
  ``RunInstances`` with ``MinCount = MaxCount = nodes``, so its nodes are one EC2
  *reservation* whose launch indexes are 0 … nodes-1, stable for the nodes' lifetime;
* rank 0's address: ``ec2 describe-instances`` of this node's reservation (``reservation-id``
  from IMDS) at ``launch-index`` 0;
* a secret by name: Secrets Manager, then SSM Parameter Store (decrypted);
* reclaimed: IMDS ``spot/instance-action`` exists (EC2's two-minute spot interruption notice);
* report: the node tags itself ``multicloud:exit=<code or "preempted">``; halt powers off, which
  terminates the instance (``InstanceInitiatedShutdownBehavior=terminate``).

The snippets use only ``curl`` (IMDSv2) and the ``aws`` CLI, both on every image below.
"""

from __future__ import annotations

from collections.abc import Mapping

from multicloud.adapterkit import Binding, NodeShape, family_of, render_node_program
from multicloud.errors import InvalidRequestError
from multicloud.provider import LaunchSpec, Offer

__all__ = [
    "BINDING",
    "EXIT_TAG",
    "IMAGE_PARAMETERS",
    "MAX_USER_DATA_BYTES",
    "image_kind",
    "node_program",
]

EXIT_TAG = "multicloud:exit"
"""Tag a node writes on its own instance when it ends: an exit code, or ``preempted``."""

MAX_USER_DATA_BYTES = 16 * 1024
"""EC2's limit on user-data, before base64 encoding."""

IMAGE_PARAMETERS: Mapping[str, str] = {
    # Deep Learning Base OSS Nvidia Driver GPU AMI: G4dn, G5, G6, Gr6, G6e, P4d, P4de, P5,
    # P5e, P5en, P6 (the open kernel modules need Turing or newer).
    "nvidia": "/aws/service/deeplearning/ami/x86_64/"
    "base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    # Deep Learning Base Proprietary Nvidia Driver AMI (Amazon Linux 2): P3, P3dn (V100), G3.
    # The path follows the DLAMI naming rule (/aws/service/deeplearning/ami/<arch>/<name
    # without "deep", "learning", "ami">/latest/ami-id); see docs/providers/aws.md.
    "nvidia-proprietary": "/aws/service/deeplearning/ami/x86_64/"
    "base-proprietary-nvidia-driver-amazon-linux-2/latest/ami-id",
    # Deep Learning Base Neuron AMI (Ubuntu 24.04): Neuron driver, EFA and tools for
    # containers on Inf2, Trn1, Trn1n, Trn2 (the Neuron DLAMI user guide's SSM table).
    "neuron": "/aws/service/neuron/dlami/base/ubuntu-24.04/latest/image_id",
}
"""Image kind → the public SSM parameter naming its current AMI in every region."""

_PROPRIETARY_DRIVER = frozenset({"V100", "V100-32GB", "K80", "M60"})
"""NVIDIA accelerators older than Turing: the open-source kernel modules do not drive them."""


def image_kind(accelerator: str) -> str:
    """Return which image an accelerator needs: ``nvidia``, ``nvidia-proprietary`` or ``neuron``.

    Args:
        accelerator: Canonical accelerator name.

    Returns:
        The key of :data:`IMAGE_PARAMETERS`.
    """
    if family_of(accelerator) == "neuron":
        return "neuron"
    return "nvidia-proprietary" if accelerator in _PROPRIETARY_DRIVER else "nvidia"


_IMDS = "http://169.254.169.254/latest"

BINDING = Binding(
    cloud="aws",
    prelude="\n".join(
        [
            f"IMDS={_IMDS}",
            # A fresh IMDSv2 token per read: a job may outlive any token's TTL (6 h at most).
            "md() {",
            "  local token",
            '  token=$(curl -sf -X PUT "$IMDS/api/token" '
            "-H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1",
            '  curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"',
            "}",
            "IID=$(md instance-id)",
            "REGION=$(md placement/region)",
        ]
    ),
    rank="md ami-launch-index",
    master=(
        'aws ec2 describe-instances --region "$REGION" --filters '
        '"Name=reservation-id,Values=$(md reservation-id)" Name=launch-index,Values=0 '
        "--query 'Reservations[].Instances[].PrivateIpAddress' --output text"
    ),
    secret=(
        'aws secretsmanager get-secret-value --region "$REGION" --secret-id "$1" '
        "--query SecretString --output text 2>/dev/null || "
        'aws ssm get-parameter --region "$REGION" --name "$1" --with-decryption '
        "--query Parameter.Value --output text"
    ),
    reclaimed="md spot/instance-action >/dev/null",
    report=(
        'aws ec2 create-tags --region "$REGION" --resources "$IID" '
        f'--tags "Key={EXIT_TAG},Value=$1"'
    ),
)
"""The AWS side of the node contract."""

def node_program(spec: LaunchSpec, offer: Offer, request_id: str, *, rdma: bool) -> str:
    """Render the user-data every node of the gang boots.

    Args:
        spec: The launch.
        offer: The planned offer (accelerator and count per node).
        request_id: The launch's idempotency key.
        rdma: The nodes get EFA devices (``/dev/infiniband``): EFA interfaces are attached.

    Returns:
        The node program.

    Raises:
        InvalidRequestError: If it exceeds EC2's user-data limit.
    """
    shape = NodeShape.of(offer, rdma=rdma)
    program = render_node_program(spec, offer, request_id, BINDING, shape=shape)
    size = len(program.encode())
    if size > MAX_USER_DATA_BYTES:
        raise InvalidRequestError(
            f"the node program is {size} bytes, over EC2's {MAX_USER_DATA_BYTES}-byte user-data "
            "limit; move large environment values into secrets or the image",
            provider=offer.provider,
        )
    return program
