"""The file side of a journaled simulated cloud: an append-only journal shared by processes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import weakref
from pathlib import Path

__all__ = ["JOURNAL_HEADER", "SHARED_REPLICAS", "STATE_FORMAT", "Journal", "Rewound", "close_fds"]

STATE_FORMAT = 1

JOURNAL_HEADER = (
    json.dumps({"format": STATE_FORMAT, "op": "sim-journal"}, separators=(",", ":")) + "\n"
).encode()
"""First line of every journal; a file starting otherwise is refused, not truncated."""

SHARED_REPLICAS = 16
"""Journals whose replica ``SimState.open(..., shared=True)`` keeps per process."""


class Rewound(Exception):
    """The journal is shorter than what this replica already read: it was truncated."""


class Journal:
    """The file side of a journaled ``SimState``: its descriptors, read offset and lock.

    Every writer appends whole records while holding the exclusive lock, so a reader holding
    the lock sees complete records plus, at most, the torn tail of a writer that died
    mid-write.

    Args:
        path: The journal file (created with its parent directories).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pid = 0
        self.fd = -1
        self.lock_fd = -1
        self._finalizer: weakref.finalize[..., Journal] | None = None
        self.reopen()

    def reopen(self) -> None:
        """Open (or, in a forked child, re-open) the journal and its lock file."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A separate lock file leaves the journal itself free to be truncated or replaced.
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            os.close(lock_fd)
            raise
        self.fd, self.lock_fd, self.pid = fd, lock_fd, os.getpid()
        self._finalizer = weakref.finalize(self, close_fds, fd, lock_fd)

    def close(self) -> None:
        """Close the descriptors; ``lock`` refuses to work afterwards."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self.fd = self.lock_fd = -1

    def lock(self) -> None:
        """Take the exclusive lock, blocking until other processes release it.

        Raises:
            ValueError: If the journal was closed.
        """
        if self._finalizer is None:
            raise ValueError(f"sim journal {self.path} is closed")
        if self.pid != os.getpid():
            # flock belongs to the open file description, which a forked child shares with
            # its parent: without its own descriptors the child would not exclude the parent.
            self.reopen()
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        """Release the exclusive lock."""
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def read_new(self) -> tuple[int, list[bytes]]:
        """Read the records appended since the last call; call with the lock held.

        A torn last line can only come from a writer that died mid-write (writers hold the
        lock), so it is cut off the file before anyone appends after it.

        Returns:
            The byte offset of the first record returned, and the records without their
            newlines (the header line excluded).

        Raises:
            ValueError: If the file does not start with a journal header.
            Rewound: If the file is shorter than what was already read.
        """
        start = self.offset
        size = os.fstat(self.fd).st_size
        if size == start:
            if start == 0:
                self.append(JOURNAL_HEADER)
            return start, []
        if size < start:
            raise Rewound
        data = self._pread(start, size - start)
        if start == 0:
            head = data[: len(JOURNAL_HEADER)]
            if head != JOURNAL_HEADER[: len(head)]:
                raise ValueError(f"{self.path} is not a sim journal of format {STATE_FORMAT}")
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.ftruncate(self.fd, start + end)
        self.offset = start + end
        if start == 0:
            if end == 0:  # only a torn header: start the journal afresh
                self.append(JOURNAL_HEADER)
                return self.offset, []
            data, start = data[len(JOURNAL_HEADER) :], len(JOURNAL_HEADER)
            end -= len(JOURNAL_HEADER)
        return start, data[:end].split(b"\n")[:-1]

    def append(self, data: bytes) -> None:
        """Append records with the lock held; a failure may leave a partial record behind.

        Args:
            data: Whole lines.
        """
        # Without fsync: the simulated cloud must survive its processes being killed, which
        # only needs the bytes in the kernel's page cache; surviving a machine crash is not
        # worth a disk flush per launch (milliseconds, against microseconds without).
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        self.offset += len(data)

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (to drop a partial record); lock held."""
        os.ftruncate(self.fd, size)
        self.offset = min(self.offset, size)

    def _pread(self, offset: int, size: int) -> bytes:
        chunks = []
        while size > 0:
            chunk = os.pread(self.fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
