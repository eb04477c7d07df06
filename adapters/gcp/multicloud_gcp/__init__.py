"""Google Cloud adapter for multicloud: GPU VMs on Compute Engine and TPU VMs.

Registered in the ``multicloud.providers`` entry-point group as ``gcp``::

    import multicloud.providers
    provider = multicloud.providers.load("gcp", regions=["us-central1"], project="my-project")

See docs/providers/gcp.md.
"""

from __future__ import annotations

from multicloud_gcp.provider import GCPProvider

__all__ = ["GCPProvider", "__version__"]

__version__ = "0.1.0"
