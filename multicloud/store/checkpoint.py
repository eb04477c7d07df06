"""Copying a SQLite store's WAL back into its database file, on a thread of its own."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sqlalchemy.engine import Engine

__all__ = ["Checkpointer"]

_PASSES = 4
"""Passes beside the writers at most, before the one that holds them back."""
_LAST_FRAMES = 256
"""Frames committed during a pass below which the next pass is the last."""


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
    the next commit starts it again from its beginning. A pass copies and syncs in
    proportion to the frames it finds; the passes beside the writers repeat until few
    came in during one, so the held-back pass is short (p50 22 ms with a whole pass's
    commits to copy, 5 ms so).

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
        # One checkpoint at a time (the thread's, an explicit one): two at once each find
        # the other in the way, and neither leaves the WAL copied whole.
        self._one = threading.Lock()
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
        with self._one, self._engine.connect() as conn:
            # Copying (and syncing) frames costs time in proportion to their number, and
            # writers commit more meanwhile: pass again beside them until few came in
            # during a pass, so that the last pass, which holds them back, is short.
            frames = -1
            for _ in range(_PASSES):
                before, frames = frames, self._pass(conn)[1]
                if before >= 0 and frames - before <= _LAST_FRAMES:
                    break
            with self._write_lock:
                return self._pass(conn)

    @staticmethod
    def _pass(conn: Any) -> tuple[int, int, int]:
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(row[0]), int(row[1]), int(row[2])

    def stop(self) -> None:
        """Stop the thread and run one last checkpoint."""
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.checkpoint()
