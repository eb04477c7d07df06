"""The scheduler service on Ray: the cycle, the actor, the client (``docs/architecture.md``).

``multicloud.service.scheduler`` is the cycle and imports nothing from Ray; ``effects`` is
its only way to the adapters; ``views`` is what ``status``, ``explain`` and ``audit``
show; the actor, runtime and client modules are the Ray shell around them.
"""

from __future__ import annotations

from multicloud.service.client import Client, ServiceNotRunningError, connect
from multicloud.service.config import ServiceConfig
from multicloud.service.control import start, stop

__all__ = ["Client", "ServiceConfig", "ServiceNotRunningError", "connect", "start", "stop"]
