"""The adapter kit: what every cloud adapter shares, so that an adapter keeps only its cloud.

* :mod:`~multicloud.adapterkit.errors` — one error boundary in rule-table style with one
  HTTP fallback.
* :mod:`~multicloud.adapterkit.identity` — region matching, resource names from the request
  id, the spec digest and the "same request id, other spec" refusal, ownership labels in each
  cloud's key style with one parser for the orphan sweep.
* :mod:`~multicloud.adapterkit.checks` — launchability checks (offer, market, nodes, env).
* :mod:`~multicloud.adapterkit.node` — the node contract: the node program VMs boot;
  :mod:`~multicloud.adapterkit.pod` its pod side for Kubernetes;
  :mod:`~multicloud.adapterkit.ending` how a node's or a gang's end is read.

See docs/architecture.md ("Adapters") and docs/node-contract.md.
"""

from __future__ import annotations

from multicloud.adapterkit.checks import check_launch
from multicloud.adapterkit.errors import ErrorBoundary, Failure, Rule, codes
from multicloud.adapterkit.identity import (
    AWS_TAGS,
    AZURE_TAGS,
    GCP_LABELS,
    KUBERNETES_LABELS,
    OCI_TAGS,
    LabelStyle,
    Ownership,
    refuse_reuse,
    region_matches,
    resource_name,
    spec_digest,
)
from multicloud.adapterkit.node import (
    MASTER_PORT,
    PREEMPTED,
    Binding,
    NodeExit,
    NodeShape,
    contract_env,
    family_of,
    gang_end,
    node_end,
    render_node_program,
    secret_env_name,
)
from multicloud.adapterkit.pod import pod_contract

__all__ = [
    "AWS_TAGS",
    "AZURE_TAGS",
    "GCP_LABELS",
    "KUBERNETES_LABELS",
    "MASTER_PORT",
    "OCI_TAGS",
    "PREEMPTED",
    "Binding",
    "ErrorBoundary",
    "Failure",
    "LabelStyle",
    "NodeExit",
    "NodeShape",
    "Ownership",
    "Rule",
    "check_launch",
    "codes",
    "contract_env",
    "family_of",
    "gang_end",
    "node_end",
    "pod_contract",
    "refuse_reuse",
    "region_matches",
    "render_node_program",
    "resource_name",
    "secret_env_name",
    "spec_digest",
]
