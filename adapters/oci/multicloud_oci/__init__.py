"""multicloud adapter for Oracle Cloud Infrastructure GPU shapes (docs/providers/oci.md)."""

from __future__ import annotations

from multicloud_oci.provider import OCIProvider

__all__ = ["OCIProvider"]
