"""The simulated cloud: the "mocked adapter" every test, example and benchmark runs on.

``SimProvider`` implements the Provider protocol over offers written inline in the fleet file
or taken from the shipped catalog. It models what the scheduler has to cope with on a real
cloud — finite capacity, a provisioning delay, spot preemptions and injected capacity, quota
and transient errors — deterministically, so tests, examples, the demo and the benchmarks
can rely on it.

Everything the simulated cloud remembers lives in a ``SimState`` of plain data, so that two
providers can share one cloud and a restarted scheduler can find its workloads again. A state
opened on a journal file (``SimState.open`` or ``SimProvider(state_path=...)``) is shared by
every process on the machine and outlives them all, like a real cloud.

Split by concern: ``workload`` (one workload, the held-capacity index), ``journal`` (the
shared file), ``state`` (``SimState``), ``faults`` (injected errors and preemptions) and
``provider`` (``SimProvider``).
"""

from __future__ import annotations

from multicloud.sim.provider import SimProvider
from multicloud.sim.state import SimState
from multicloud.sim.workload import (
    PROVISIONING_FRACTION,
    TAG_ATTEMPT,
    TAG_INSTALL,
    TAG_JOB,
    SimWorkload,
)

__all__ = [
    "PROVISIONING_FRACTION",
    "TAG_ATTEMPT",
    "TAG_INSTALL",
    "TAG_JOB",
    "SimProvider",
    "SimState",
    "SimWorkload",
]
