"""The ``local`` provider: runs a job's command for real on the local Ray cluster.

Used by the demo and the examples so that something actually runs. Each workload is a
**detached, named Ray actor** that holds the requested CPUs and runs ``run.command`` in a
subprocess. Detached, because the workload must outlive whatever launched it — the scheduler
actor or the launcher that called :meth:`LocalProvider.launch` may be killed at any moment,
just as a cloud VM outlives the process that asked for it.

Everything the provider needs to answer ``status`` after a restart lives in small files in
``logs_dir`` (default ``$MULTICLOUD_HOME/local``), named after the handle id:

- ``ID.json``: the sidecar (job, attempt, install id, request id, spec digest, handle
  fields), written before the actor is created, so a launch re-sent after a crash can tell
  "same launch" from "another launch under a reused key". It never holds secret values.
- ``ID.started``: created exclusively by the actor just before it starts the command; the
  guard that makes sure one request id never runs two processes, whatever races happen.
- ``ID.pid``: pid and start time of the command's process group (to kill it without Ray).
- ``ID.log``: the command's stdout and stderr.
- ``ID.exit``: the exit code, written atomically when the command ends, *before* the actor
  exits, so a finished workload is never mistaken for a lost one.
- ``ID.terminated``: written by :meth:`LocalProvider.terminate` before it kills anything.

Ray must already be initialised in the calling process (the scheduler's actor and launchers
are). Without it, ``launch``, ``terminate`` and ``owned`` — and ``status`` when a workload's
files cannot answer alone — raise :class:`InvalidRequestError`: it is a deployment mistake
that no retry fixes, so the job fails with a message saying what to do instead of being
retried forever. ``offers`` and ``check`` still work, without live counts.

Limits: the files must be visible where the provider runs, so this is for single-machine
Ray clusters (or a ``logs_dir`` on a shared filesystem); actors prefer the launching node.
"""

from __future__ import annotations

from multicloud.local.files import (
    ACCELERATOR,
    GONE_MESSAGE,
    INSTANCE_TYPE,
    LOG_TAIL_BYTES,
    REGION,
)
from multicloud.local.provider import LocalProvider

__all__ = [
    "ACCELERATOR",
    "GONE_MESSAGE",
    "INSTANCE_TYPE",
    "LOG_TAIL_BYTES",
    "REGION",
    "LocalProvider",
]
