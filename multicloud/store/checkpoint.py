"""Copying a SQLite store's WAL back into its database file, on a thread of its own."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sqlalchemy.engine import Engine

__all__ = ["Checkpointer"]


class Checkpointer:
    """Copies a SQLite store's WAL back into the database file, off the hot path.

    A WAL is only started again from its beginning by the first writer after a checkpoint
    that copied every frame in it. Under a steady stream of commits a checkpoint that runs
    beside the writers never gets there (a writer always adds frames meanwhile), and the
    WAL grew by gigabytes in a minute of 1,000 submissions/s: every commit then wrote
    fresh pages of the file, the kernel's write-back throttled the writers, and
    submit → placed drifted up during the run. So each round copies the bulk beside the
    writers (a passive checkpoint never blocks them), then the few frames committed
    meanwhile with this process's writers held back: the WAL is then copied whole, and
    the next commit starts it again from its beginning.

    Args:
        engine: The store's engine.
        write_lock: The lock this process's writers hold (``Database``).
        interval: Seconds between checkpoints.
    """

    def __init__(
        self,
        engine: Engine,
        write_lock: contextlib.AbstractContextManager[Any],
        interval: float = 1.0,
    ) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint()
            except Exception:  # a checkpoint is retried next interval; nothing depends on it
                continue

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database file, as far as readers let it.

        Returns:
            SQLite's answer to the last step: (busy, frames in the WAL, frames copied).
        """
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            with self._write_lock:
                row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(row[0]), int(row[1]), int(row[2])

    def stop(self) -> None:
        """Stop the thread and run one last checkpoint."""
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.checkpoint()
