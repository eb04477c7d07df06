"""Azure adapter for multicloud: ND/NC GPU VMs through Azure Resource Manager.

Registered in the ``multicloud.providers`` entry-point group as ``azure``; see
``docs/providers/azure.md``. The fake Azure Resource Manager its tests use is
``multicloud_azure.testing``.
"""

from __future__ import annotations

from multicloud_azure.arm import StaticTokenCredential
from multicloud_azure.provider import AzureProvider

__all__ = ["AzureProvider", "StaticTokenCredential"]
