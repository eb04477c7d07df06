"""What a simulated cloud remembers (``SimState``), in memory or journaled on disk."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multicloud.sim.journal import (
    SHARED_REPLICAS,
    STATE_FORMAT,
    Journal,
    Rewound,
)
from multicloud.sim.workload import HeldIndex, SimWorkload

__all__ = ["SimState"]


@dataclass
class SimState:
    """What one simulated cloud remembers: its workloads and how often each fault fired.

    ``SimState()`` lives in memory; ``SimState.open(path)`` is a replica of an append-only
    journal that any number of processes on one machine share, so the simulated cloud keeps
    its state, like a real one, while schedulers and workers die and restart.

    All access goes through ``with state.transaction():``; changes are made with
    ``add_workload``, ``mark_terminated`` and ``use_fault`` (never by writing to the
    attributes), each of which becomes one journal record.

    Attributes:
        workloads: Workloads by handle id, including finished and terminated ones.
        fault_uses: How many times each injected fault has fired, by fault key.
    """

    workloads: dict[str, SimWorkload] = field(default_factory=dict)
    fault_uses: dict[str, int] = field(default_factory=dict)
    # Providers sharing a state may be driven from several threads (launch and read pools).
    lock: threading.RLock = field(
        default_factory=threading.RLock, init=False, repr=False, compare=False
    )
    _journal: Journal | None = field(default=None, init=False, repr=False, compare=False)
    _owner: int | None = field(default=None, init=False, repr=False, compare=False)
    _pending: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    _index: HeldIndex = field(default_factory=HeldIndex, init=False, repr=False, compare=False)
    # Workloads that may still be live, in launch order: a run that ended never comes
    # back, so the sweep's listing walks these instead of every workload ever launched.
    _maybe_live: dict[str, None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _live_seen: float = field(default=-math.inf, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.rebuild(self.workloads.values())
        self._maybe_live = dict.fromkeys(self.workloads)

    # -- opening and sharing ------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, shared: bool = False) -> SimState:
        """Open the state journaled at ``path``, creating the file and its directories.

        Args:
            path: The journal; ``path + ".lock"`` next to it serialises access.
            shared: Return this process's existing replica of the journal when there is
                one (the last few opened with ``shared=True`` are kept), sparing a replay of
                the whole file; otherwise always read a new replica.

        Returns:
            A replica holding everything the journal records.

        Raises:
            ValueError: If the file exists but is not a sim journal, or a record is malformed.
            OSError: If the file cannot be opened.
        """
        resolved = Path(path).expanduser().resolve()
        if not shared:
            return cls._replica(resolved)
        key = str(resolved)
        with _SHARED_LOCK:
            state = _SHARED.get(key)
            if state is None:
                state = _SHARED[key] = cls._replica(resolved)
                while len(_SHARED) > SHARED_REPLICAS:
                    _SHARED.popitem(last=False)
            else:
                _SHARED.move_to_end(key)
            return state

    @classmethod
    def _replica(cls, path: Path) -> SimState:
        state = cls()
        state._journal = Journal(path)
        try:
            with state.transaction():
                pass
        except BaseException:
            state.close()
            raise
        return state

    @property
    def path(self) -> Path | None:
        """The journal file, or None for a state held only in memory."""
        return self._journal.path if self._journal is not None else None

    def close(self) -> None:
        """Close the journal's files; the replica can no longer start transactions.

        A no-op for an in-memory state. Unreferenced replicas close their files anyway.
        """
        if self._journal is None:
            return
        with self.lock:
            self._journal.close()
        with _SHARED_LOCK:
            key = str(self._journal.path)
            if _SHARED.get(key) is self:
                del _SHARED[key]

    def __reduce__(self) -> tuple[Callable[[str], SimState], tuple[str]]:
        # Pickling a journaled state hands over the journal, not a copy: the receiving
        # process (a Ray worker, say) joins the same simulated cloud.
        if self._journal is None:
            raise TypeError(
                "an in-memory SimState cannot cross processes; share SimState.open(path)"
            )
        return _open_shared, (str(self._journal.path),)

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SimState]:
        """Hold the state exclusively, up to date with every process sharing its journal.

        On entry: the in-process lock, then for a journal the exclusive file lock and the
        records other processes appended since. On exit: this transaction's changes are
        appended in one write — also when the body raised, because the replica already
        holds them (a launch that fails on an injected fault has still used it up).
        Nested transactions join the outer one.

        Yields:
            The state itself.

        Raises:
            ValueError: If the journal holds a malformed record or was closed.
            OSError: If the journal cannot be read or written.
        """
        me = threading.get_ident()
        with self.lock:
            if self._owner == me:
                yield self
                return
            journal = self._journal
            if journal is not None:
                journal.lock()
            try:
                if journal is not None:
                    self._catch_up(journal)
                self._owner = me
                try:
                    yield self
                finally:
                    self._owner = None
                    if journal is not None and self._pending:
                        self._commit(journal)
            finally:
                if journal is not None:
                    journal.unlock()

    def _catch_up(self, journal: Journal) -> None:
        try:
            try:
                pos, lines = journal.read_new()
            except Rewound:
                # Someone truncated the journal: what this replica read may be gone too.
                self._forget()
                pos, lines = journal.read_new()
            for line in lines:
                self._replay(journal, pos, line)
                pos += len(line) + 1
        except BaseException:
            # A replica that applied part of what it read is neither old nor new; start over
            # on the next transaction (which will meet the same error if the file is bad).
            self._forget()
            raise

    def _replay(self, journal: Journal, pos: int, line: bytes) -> None:
        try:
            record = json.loads(line)
            op = record["op"]
            if op == "add":
                self._put(SimWorkload(**record["workload"]))
            elif op == "terminate":
                self._end(str(record["id"]), float(record["at"]))
            elif op == "fault":
                self.fault_uses[str(record["key"])] = int(record["uses"])
            else:
                raise ValueError(f"unknown operation {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{journal.path}: bad record at byte {pos}: {exc!r}") from exc

    def _commit(self, journal: Journal) -> None:
        data = "".join(self._pending).encode()
        self._pending.clear()
        before = journal.offset
        try:
            journal.append(data)
        except BaseException:
            # The replica now holds changes the journal lacks: drop any partial record and
            # rebuild the replica from the file on the next transaction.
            with contextlib.suppress(OSError):
                journal.truncate(before)
            self._forget()
            raise

    def _forget(self) -> None:
        self.workloads.clear()
        self._maybe_live.clear()
        self.fault_uses.clear()
        self._pending.clear()
        self._index.rebuild(())
        if self._journal is not None:
            self._journal.offset = 0

    # -- changes ------------------------------------------------------------------------

    def add_workload(self, workload: SimWorkload) -> None:
        """Record a newly launched workload.

        Args:
            workload: The workload; the state keeps it (do not change it afterwards).

        Raises:
            RuntimeError: Outside a transaction.
            ValueError: If a workload with its id exists.
        """
        self._check_transaction()
        if workload.id in self.workloads:
            raise ValueError(f"workload {workload.id} already exists")
        self._put(workload)
        if self._journal is not None:
            self._log({"op": "add", "workload": vars(workload)})

    def mark_terminated(self, handle_id: str, at: float) -> None:
        """Record that a workload was terminated.

        Args:
            handle_id: The workload's id.
            at: Clock reading of the termination.

        Raises:
            RuntimeError: Outside a transaction.
            KeyError: If there is no such workload.
        """
        self._check_transaction()
        self._end(handle_id, at)
        if self._journal is not None:
            self._log({"op": "terminate", "id": handle_id, "at": at})

    def use_fault(self, key: str) -> int:
        """Record one firing of an injected fault.

        Args:
            key: The fault's key.

        Returns:
            How many times it had fired before.

        Raises:
            RuntimeError: Outside a transaction.
        """
        self._check_transaction()
        before = self.fault_uses.get(key, 0)
        self.fault_uses[key] = before + 1
        if self._journal is not None:
            # The new count rather than "+1", so replaying a record twice changes nothing.
            self._log({"op": "fault", "key": key, "uses": before + 1})
        return before

    def rearm_fault(self, key: str) -> None:
        """Let an injected fault fire again, as if it had never fired.

        Chaos runs (``bench/chaos.py``) arm a fleet's faults at moments of their choosing
        from another process; the scheduler's clouds see it at their next transaction.

        Args:
            key: The fault's key (``FLEET_NAME#INDEX``, its place in the fleet entry).

        Raises:
            RuntimeError: Outside a transaction.
        """
        self._check_transaction()
        self.fault_uses[key] = 0
        if self._journal is not None:
            self._log({"op": "fault", "key": key, "uses": 0})

    def held_at(self, now: float) -> dict[str, int]:
        """Return the nodes live pooled workloads hold at clock reading ``now``.

        Args:
            now: Clock reading.

        Returns:
            Nodes held, by pool key; pools holding none are left out.
        """
        with self.lock:
            if now < self._index.seen:
                self._index.rebuild(self.workloads.values())
            return self._index.at(now)

    def _check_transaction(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("SimState changes must be made inside state.transaction()")

    def _put(self, workload: SimWorkload) -> None:
        self.workloads[workload.id] = workload
        self._index.add(workload)
        self._maybe_live[workload.id] = None

    def live_workloads(self, now: float) -> list[SimWorkload]:
        """Return the workloads live at clock reading ``now``, in launch order.

        Args:
            now: Clock reading (inside a transaction).

        Returns:
            Provisioning or running workloads.
        """
        self._check_transaction()
        if now < self._live_seen:
            # The clock went back (a test replaying a scenario): ended runs may be live.
            self._maybe_live = dict.fromkeys(self.workloads)
        self._live_seen = now
        live: list[SimWorkload] = []
        for workload_id in list(self._maybe_live):
            workload = self.workloads[workload_id]
            if workload.live_at(now):
                live.append(workload)
            else:
                del self._maybe_live[workload_id]
        return live

    def _end(self, handle_id: str, at: float) -> None:
        self.workloads[handle_id].terminated_at = at
        self._index.remove(handle_id)

    def _log(self, record: dict[str, Any]) -> None:
        self._pending.append(json.dumps(record, separators=(",", ":")) + "\n")

    # -- snapshots ----------------------------------------------------------------------

    def to_json(self) -> str:
        """Serialise the state.

        Returns:
            A JSON document that ``from_json`` reads back into an equal (in-memory) state.
        """
        with self.transaction():
            doc = {
                "format": STATE_FORMAT,
                "workloads": [dataclasses.asdict(w) for w in self.workloads.values()],
                "fault_uses": dict(self.fault_uses),
            }
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimState:
        """Read a state written by ``to_json``.

        Args:
            text: The JSON document.

        Returns:
            The state, in memory.

        Raises:
            ValueError: If the document is not a sim state of a known format.
        """
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a sim state of format {STATE_FORMAT}")
        try:
            workloads = [SimWorkload(**w) for w in doc.get("workloads", [])]
            fault_uses = {str(k): int(v) for k, v in doc.get("fault_uses", {}).items()}
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed sim state: {exc}") from exc
        return cls(workloads={w.id: w for w in workloads}, fault_uses=fault_uses)


_SHARED: OrderedDict[str, SimState] = OrderedDict()
_SHARED_LOCK = threading.Lock()


def _open_shared(path: str) -> SimState:
    return SimState.open(path, shared=True)
