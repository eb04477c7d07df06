"""A local workload's sidecar, written at launch and read back for sweeps, and its output.

The sidecar is the record a local workload leaves next to its files: who launched it, for
which job attempt, under which spec. The orphan sweep reads it back (docs/architecture.md,
"Adapters": ``owned``); ``logs`` reads the tail of the workload's output.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from multicloud.local.files import INSTANCE_TYPE, REGION, SIDECAR_FORMAT, Files, read_json
from multicloud.provider import Handle, LaunchSpec, MarketKind, OwnedWorkload

__all__ = ["owned_workload", "read_tail", "sidecar_doc"]


def sidecar_doc(
    fleet_name: str,
    handle_id: str,
    request_id: str,
    spec: LaunchSpec,
    *,
    install_id: str,
    digest: str,
    cpus: float,
) -> dict[str, Any]:
    """Return the sidecar a launch writes before its actor starts.

    Args:
        fleet_name: Fleet provider name.
        handle_id: The workload's handle id (its actor's name).
        request_id: The launch's idempotency key.
        spec: The launch.
        install_id: The install that launched it (tagged for the orphan sweep).
        digest: The spec's digest (a second launch under the key must match it).
        cpus: Ray CPUs the workload holds.

    Returns:
        The sidecar document.
    """
    return {
        "format": SIDECAR_FORMAT,
        "provider": fleet_name,
        "handle_id": handle_id,
        "request_id": request_id,
        "job_id": spec.job_id,
        "job_name": spec.job_name,
        "attempt": spec.attempt,
        "install_id": install_id,
        "spec_digest": digest,
        "market": spec.market.value,
        "cpus": cpus,
        "created_at": time.time(),
    }


def owned_workload(
    files: Files, fleet_name: str, install_id: str, extra: tuple[tuple[str, str], ...]
) -> OwnedWorkload | None:
    """Read a workload's sidecar back as what the orphan sweep needs.

    Args:
        files: The workload's files.
        fleet_name: Fleet provider name; another provider's workload is not ours.
        install_id: The install whose workloads are wanted.
        extra: The handle's adapter data (where its files are, its namespace).

    Returns:
        The workload with its job and attempt tags; None when its sidecar is missing,
        belongs to another install or provider.
    """
    doc = read_json(files.sidecar)
    if doc is None or doc.get("install_id") != install_id or doc.get("provider") != fleet_name:
        return None
    handle = Handle(
        provider=fleet_name,
        id=files.handle_id,
        request_id=str(doc["request_id"]),
        region=REGION,
        zone=None,
        instance_type=INSTANCE_TYPE,
        nodes=1,
        market=MarketKind(doc.get("market", MarketKind.ON_DEMAND.value)),
        job_id=str(doc["job_id"]),
        extra=extra,
    )
    return OwnedWorkload(handle, str(doc["job_id"]), int(doc["attempt"]))


def read_tail(path: Path, limit: int) -> str:
    """Return the last ``limit`` bytes of a file, decoded leniently ("" when missing).

    Args:
        path: The file.
        limit: Most bytes to return, from the end.

    Returns:
        The text.
    """
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")
