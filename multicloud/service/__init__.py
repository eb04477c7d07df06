"""The scheduler service on Ray (DESIGN.md §6): the cycle, the actor, the client.

``multicloud.service.scheduler`` is the cycle and imports nothing from Ray; the actor,
runtime and client modules are the Ray shell around it.
"""

from __future__ import annotations

from multicloud.service.client import Client, ServiceNotRunningError, connect, start, stop
from multicloud.service.config import ServiceConfig

__all__ = ["Client", "ServiceConfig", "ServiceNotRunningError", "connect", "start", "stop"]
