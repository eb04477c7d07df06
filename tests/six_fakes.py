"""The six providers' fakes together, for the tests that run a fleet over all of them.

AWS (moto), GCP, Azure, CoreWeave, OCI and a generic Kubernetes cluster running Kueue, each
the in-package fake of its adapter on 127.0.0.1, reached through the adapter's real SDK
client. ``tests/adapters/test_six_providers.py`` runs the scheduler over them in-process,
``tests/ray/test_six_providers_service.py`` the service on Ray (the fakes stay in the test's
process, the adapters run in other processes and reach them through the fleet's options).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from multicloud_aws.testing import FakeAWS
from multicloud_aws.testing import serve as serve_aws
from multicloud_azure.testing import FakeArm
from multicloud_azure.testing import serve as serve_azure
from multicloud_coreweave.testing import FakeKube
from multicloud_coreweave.testing import serve as serve_coreweave
from multicloud_gcp.testing import FakeGCP
from multicloud_gcp.testing import serve as serve_gcp
from multicloud_kubernetes.testing import FakeKube as FakeGPUCluster
from multicloud_kubernetes.testing import serve as serve_kubernetes
from multicloud_oci.testing import FakeOCI
from multicloud_oci.testing import serve as serve_oci

from multicloud.testing.fakecloud import FakeCloud

CLOUDS = ("aws", "gcp", "azure", "coreweave", "oci", "kubernetes")

# Regions each provider may use: one per provider keeps the adapters' live reads (one call
# per region and service) to a handful, and pins where every job must land.
REGIONS: dict[str, list[str]] = {
    "aws": ["us-east-1"],
    "gcp": ["us-central1"],
    "azure": ["eastus"],
    "coreweave": ["US-EAST-04"],
    "oci": ["us-ashburn-1"],
    "kubernetes": ["us-east-1"],
}

# The lab's own H100 nodes, at $38 a node-hour: below every cloud's list price for 8×H100
# (GCP's a3-highgpu-8g is $43/h), so an H100 gang free to go anywhere goes to the cluster.
LAB_PRICE_CARD = {"H100": 38.0}


@dataclass
class Clouds:
    """The six fakes, serving on 127.0.0.1; attribute names are the fleet's provider names."""

    aws: FakeAWS
    gcp: FakeGCP
    azure: FakeArm
    coreweave: FakeKube
    oci: FakeOCI
    kubernetes: FakeGPUCluster

    def fake(self, provider: str) -> FakeCloud:
        """Return the fake behind a fleet provider."""
        found: FakeCloud = getattr(self, provider)
        return found

    def fleet_doc(self) -> dict[str, Any]:
        """One fleet document of the six real adapters, pointed at the fakes."""
        options: dict[str, dict[str, Any]] = {
            "aws": self.aws.options,
            "gcp": self.gcp.options,
            "azure": self.azure.options,
            # Pending pods count as "no capacity" at once rather than after a minute.
            "coreweave": {**self.coreweave.options, "unschedulable_grace_s": 0.0},
            "oci": self.oci.options,
            # Submitted through Kueue's LocalQueue: multicloud picks the cluster, Kueue admits.
            "kubernetes": {
                **self.kubernetes.options,
                "price_card": LAB_PRICE_CARD,
                "local_queue": "team",
                "unschedulable_grace_s": 0.0,
            },
        }
        return {
            "providers": {
                name: {"adapter": name, "regions": REGIONS[name], "options": options[name]}
                for name in CLOUDS
            }
        }


@contextlib.contextmanager
def serve_six(*, coreweave_nodes: int = 2) -> Iterator[Clouds]:
    """Serve the six fakes for the duration of the block.

    CoreWeave gets ``coreweave_nodes`` 8×H100 nodes in US-EAST-04; the lab's cluster two
    8×H100 nodes in us-east-1 and a Kueue ClusterQueue ``gpus`` whose quota is one 2-node
    gang, behind the LocalQueue ``team`` the fleet entry submits through.

    Args:
        coreweave_nodes: CoreWeave's H100 nodes (one per CoreWeave job to run at once).

    Yields:
        The fakes.
    """
    with contextlib.ExitStack() as stack:
        clouds = Clouds(
            aws=stack.enter_context(serve_aws()),
            gcp=stack.enter_context(serve_gcp()),
            azure=stack.enter_context(serve_azure()),
            coreweave=stack.enter_context(serve_coreweave()),
            oci=stack.enter_context(serve_oci()),
            kubernetes=stack.enter_context(serve_kubernetes(kueue="v1beta2")),
        )
        clouds.coreweave.add_nodes(
            coreweave_nodes, gpu_class="H100_NVLINK_80GB", region="US-EAST-04"
        )
        clouds.kubernetes.add_nodes(2, region="us-east-1")
        clouds.kubernetes.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16"})
        clouds.kubernetes.kueue.add_local_queue("team", "gpus")
        yield clouds
