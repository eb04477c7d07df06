"""The files a local workload leaves behind, and how to read and act on them.

See :mod:`multicloud.local` for what each file is for."""

import contextlib
import dataclasses
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from multicloud.provider import (
    WorkloadState,
    WorkloadStatus,
)

ACCELERATOR = "CPU"
REGION = "local"
INSTANCE_TYPE = "local"
LOG_TAIL_BYTES = 1 << 20
"""How much of a workload's output :meth:`LocalProvider.logs` returns (the tail)."""

GONE_MESSAGE = "the local workload is gone (Ray restarted?)"

SIDECAR_FORMAT = 1
TERM_GRACE_S = 5.0
STOP_RPC_SLACK_S = 10.0
# Exit code the shell gives a command it cannot run; used when the argv cannot be exec'd.
EXIT_NOT_RUNNABLE = 127

# ---------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class Files:
    """The files of one workload in a logs directory."""

    root: Path
    handle_id: str

    def _path(self, suffix: str) -> Path:
        return self.root / f"{self.handle_id}{suffix}"

    @property
    def sidecar(self) -> Path:
        return self._path(".json")

    @property
    def started(self) -> Path:
        return self._path(".started")

    @property
    def pid(self) -> Path:
        return self._path(".pid")

    @property
    def log(self) -> Path:
        return self._path(".log")

    @property
    def exit(self) -> Path:
        return self._path(".exit")

    @property
    def terminated(self) -> Path:
        return self._path(".terminated")


def tmp_name(path: Path) -> Path:
    # Unique per process and thread, so concurrent writers never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, whole."""
    tmp = tmp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists; readers never see it half written.

    Args:
        path: The file.
        text: Its content.

    Returns:
        True if this call created it, False if it already existed.
    """
    tmp = tmp_name(path)
    tmp.write_text(text)
    try:
        # link() fails if the target exists: an atomic create-if-absent with full content.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def proc_start_time(pid: int) -> str | None:
    """Return a process's start time from ``/proc`` (Linux), to recognise a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) is in parentheses and may contain spaces.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def kill_group(pid: int, start: str | None, sig: int) -> None:
    """Signal the process group led by ``pid``, unless ``pid`` now names another process.

    While any member of the group lives, Linux does not hand out its id as a new pid, so the
    only risk is a dead, reaped leader whose pid was reused by a new session leader; its
    start time differs from the one recorded.

    Args:
        pid: Leader pid (= process group id, as the command runs in its own session).
        start: The leader's recorded start time, if known.
        sig: Signal to send.
    """
    now = proc_start_time(pid)
    if start is not None and now is not None and now != start:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def exit_status(files: Files) -> WorkloadStatus | None:
    """Return the final status a workload's files record, or None while it has none."""
    if files.terminated.exists():
        return WorkloadStatus(WorkloadState.TERMINATED, "terminated")
    try:
        text = files.exit.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:
        return WorkloadStatus(WorkloadState.FAILED, f"unreadable exit file: {text[:40]!r}")
    if code == 0:
        return WorkloadStatus(WorkloadState.SUCCEEDED, "exited with code 0", exit_code=0)
    if code < 0:
        # subprocess reports death by signal N as -N.
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return WorkloadStatus(WorkloadState.FAILED, f"killed by {name}", exit_code=code)
    return WorkloadStatus(WorkloadState.FAILED, f"exited with code {code}", exit_code=code)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
