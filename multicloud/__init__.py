"""multicloud: a contract-aware scheduler for AI training and inference across clouds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "connect"]

if TYPE_CHECKING:
    from multicloud.service.client import connect


def __getattr__(name: str) -> Any:
    # `multicloud.connect` pulls in Ray (a second to import); only pay for it when used.
    if name == "connect":
        from multicloud.service.client import connect as _connect

        return _connect
    raise AttributeError(f"module 'multicloud' has no attribute {name!r}")
