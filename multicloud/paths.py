"""Where multicloud keeps its files on this machine.

Everything lives under one directory, ``$MULTICLOUD_HOME`` (default ``~/.multicloud``), so
tests and several installs on one machine can be kept apart by setting one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "local_logs_dir", "sim_state_path"]


def home() -> Path:
    """Return the multicloud home directory (created if missing).

    Returns:
        ``$MULTICLOUD_HOME`` or ``~/.multicloud``.
    """
    root = Path(os.environ.get("MULTICLOUD_HOME") or Path.home() / ".multicloud").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def local_logs_dir() -> Path:
    """Return the directory holding the ``local`` provider's workload logs (created)."""
    path = home() / "local"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sim_state_path(name: str = "default") -> Path:
    """Return the journal file of a persisted simulated cloud.

    Args:
        name: Which simulated cloud (one per store, so tests do not share clouds).

    Returns:
        ``$MULTICLOUD_HOME/sim/NAME.jsonl`` (the directory is created).
    """
    path = home() / "sim"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}.jsonl"
