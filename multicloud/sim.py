"""The simulated cloud: the "mocked adapter" of DESIGN.md §4.

``SimProvider`` implements the Provider protocol over offers written inline in the fleet file
or taken from the shipped catalog. It models what the scheduler has to cope with on a real
cloud — finite capacity, a provisioning delay, spot preemptions and injected capacity, quota
and transient errors — deterministically, so tests, examples, the demo and the benchmarks
can rely on it.

Everything the simulated cloud remembers lives in a ``SimState`` of plain data, so that two
providers can share one cloud and a restarted scheduler can find its workloads again. A state
opened on a journal file (``SimState.open`` or ``SimProvider(state_path=...)``) is shared by
every process on the machine and outlives them all, like a real cloud.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import hashlib
import heapq
import json
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    QuotaError,
    TransientError,
    error_scope,
)
from multicloud.models import Fault, FaultKind, InlineOffer
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
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

PROVISIONING_FRACTION = 0.02
"""Share of a workload's run spent provisioning before it reports RUNNING."""

_STATE_FORMAT = 1

TAG_JOB = "multicloud:job"
TAG_ATTEMPT = "multicloud:attempt"
TAG_INSTALL = "multicloud:install"


@dataclass
class SimWorkload:
    """One workload launched on the simulated cloud.

    Attributes:
        id: Handle id.
        provider: Fleet provider name that launched it.
        request_id: Idempotency key it was launched with.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes held.
        market: Market value (``MarketKind.value``).
        job_id: Owning job.
        pool: Key of the capacity pool it draws from (``Offer.key`` without reservation).
        pooled: False when it runs on a reservation and so holds no public capacity.
        spec_digest: Digest of the LaunchSpec, to refuse a reused key with another spec.
        launched_at: Clock reading at launch.
        duration_s: Wall seconds the workload runs before succeeding.
        preempt_after_s: Wall seconds after launch at which it is preempted, if ever.
        terminated_at: Clock reading at termination, if terminated.
        tags: Resource tags (job, attempt, install id).
    """

    id: str
    provider: str
    request_id: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: str
    job_id: str
    pool: str
    pooled: bool
    spec_digest: str
    launched_at: float
    duration_s: float
    preempt_after_s: float | None = None
    terminated_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def state_at(self, now: float) -> WorkloadState:
        """Return the workload's state at clock reading ``now``.

        Args:
            now: Clock reading.

        Returns:
            The state the simulated cloud reports.
        """
        if self.terminated_at is not None:
            return WorkloadState.TERMINATED
        elapsed = now - self.launched_at
        # Preemption is only scheduled when it falls before the end of the run, so checking
        # it first never hides a success.
        if self.preempt_after_s is not None and elapsed >= self.preempt_after_s:
            return WorkloadState.PREEMPTED
        if elapsed >= self.duration_s:
            return WorkloadState.SUCCEEDED
        if elapsed < max(0.0, PROVISIONING_FRACTION * self.duration_s):
            return WorkloadState.PROVISIONING
        return WorkloadState.RUNNING

    def live_at(self, now: float) -> bool:
        """Return True while the workload holds capacity (provisioning or running)."""
        return self.state_at(now) in (WorkloadState.PROVISIONING, WorkloadState.RUNNING)

    def ends_at(self) -> float:
        """Return the clock reading at which the run ends, unless terminated before."""
        end = self.duration_s
        if self.preempt_after_s is not None:
            end = min(end, self.preempt_after_s)
        return self.launched_at + end

    def handle(self) -> Handle:
        """Return the handle the scheduler holds for this workload."""
        return Handle(
            provider=self.provider,
            id=self.id,
            request_id=self.request_id,
            region=self.region,
            zone=self.zone,
            instance_type=self.instance_type,
            nodes=self.nodes,
            market=MarketKind(self.market),
            job_id=self.job_id,
        )


_JOURNAL_HEADER = (
    json.dumps({"format": _STATE_FORMAT, "op": "sim-journal"}, separators=(",", ":")) + "\n"
).encode()
"""First line of every journal; a file starting otherwise is refused, not truncated."""

_SHARED_REPLICAS = 16
"""Journals whose replica ``SimState.open(..., shared=True)`` keeps per process."""


class _Rewound(Exception):
    """The journal is shorter than what this replica already read: it was truncated."""


class _Journal:
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
        self._finalizer: weakref.finalize[..., _Journal] | None = None
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
        self._finalizer = weakref.finalize(self, _close_fds, fd, lock_fd)

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
            _Rewound: If the file is shorter than what was already read.
        """
        start = self.offset
        size = os.fstat(self.fd).st_size
        if size == start:
            if start == 0:
                self.append(_JOURNAL_HEADER)
            return start, []
        if size < start:
            raise _Rewound
        data = self._pread(start, size - start)
        if start == 0:
            head = data[: len(_JOURNAL_HEADER)]
            if head != _JOURNAL_HEADER[: len(head)]:
                raise ValueError(f"{self.path} is not a sim journal of format {_STATE_FORMAT}")
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.ftruncate(self.fd, start + end)
        self.offset = start + end
        if start == 0:
            if end == 0:  # only a torn header: start the journal afresh
                self.append(_JOURNAL_HEADER)
                return self.offset, []
            data, start = data[len(_JOURNAL_HEADER) :], len(_JOURNAL_HEADER)
            end -= len(_JOURNAL_HEADER)
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


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _HeldIndex:
    """Nodes held per pool by live pooled workloads, kept up to date as they change.

    Counting every workload ever launched on each ``offers`` or ``launch`` would make a run
    of ten thousand launches quadratic; instead the index adds a workload's nodes when it is
    launched, subtracts them when it is terminated, and finds runs that ended on their own
    through a heap of end times per pool. Ending is only permanent while the clock moves
    forward, so an earlier reading than the last one seen rebuilds the index.
    """

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.seen = -math.inf
        self._counted: dict[str, SimWorkload] = {}
        self._ends: dict[str, list[tuple[float, str]]] = {}

    def rebuild(self, workloads: Iterable[SimWorkload]) -> None:
        """Forget everything and count ``workloads`` again."""
        self.held.clear()
        self._counted.clear()
        self._ends.clear()
        self.seen = -math.inf
        for workload in workloads:
            self.add(workload)

    def add(self, workload: SimWorkload) -> None:
        """Count a workload, unless it holds no public capacity or was terminated."""
        if not workload.pooled or workload.terminated_at is not None:
            return
        self.remove(workload.id)
        self._counted[workload.id] = workload
        self.held[workload.pool] = self.held.get(workload.pool, 0) + workload.nodes
        heapq.heappush(self._ends.setdefault(workload.pool, []), (workload.ends_at(), workload.id))

    def remove(self, workload_id: str) -> None:
        """Stop counting a workload (its heap entry is skipped when it comes up)."""
        workload = self._counted.pop(workload_id, None)
        if workload is not None:
            self.held[workload.pool] -= workload.nodes

    def at(self, now: float) -> dict[str, int]:
        """Return the nodes held per pool at clock reading ``now`` (not before ``seen``)."""
        self.seen = now
        # End times are sums rounded once, so let entries a hair past `now` through to the
        # exact test of `live_at` rather than miss one that ended by the exact rule.
        horizon = now + 1e-12 * (1.0 + abs(now))
        for ends in self._ends.values():
            keep = []
            while ends and ends[0][0] <= horizon:
                entry = heapq.heappop(ends)
                workload = self._counted.get(entry[1])
                if workload is None:
                    continue
                if workload.live_at(now):
                    keep.append(entry)
                else:
                    self.remove(entry[1])
            for entry in keep:
                heapq.heappush(ends, entry)
        return {pool: nodes for pool, nodes in self.held.items() if nodes}


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
    # Providers sharing a state may be driven from several threads (launches run in tasks).
    lock: threading.RLock = field(
        default_factory=threading.RLock, init=False, repr=False, compare=False
    )
    _journal: _Journal | None = field(default=None, init=False, repr=False, compare=False)
    _owner: int | None = field(default=None, init=False, repr=False, compare=False)
    _pending: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    _index: _HeldIndex = field(default_factory=_HeldIndex, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.rebuild(self.workloads.values())

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
                while len(_SHARED) > _SHARED_REPLICAS:
                    _SHARED.popitem(last=False)
            else:
                _SHARED.move_to_end(key)
            return state

    @classmethod
    def _replica(cls, path: Path) -> SimState:
        state = cls()
        state._journal = _Journal(path)
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

    def _catch_up(self, journal: _Journal) -> None:
        try:
            try:
                pos, lines = journal.read_new()
            except _Rewound:
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

    def _replay(self, journal: _Journal, pos: int, line: bytes) -> None:
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

    def _commit(self, journal: _Journal) -> None:
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
                "format": _STATE_FORMAT,
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
        if not isinstance(doc, dict) or doc.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a sim state of format {_STATE_FORMAT}")
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


def _pool_key(offer: Offer) -> str:
    # Reservation offers draw on the same physical pool; the suffix only separates contracts.
    return f"{offer.provider}/{offer.zone or offer.region}/{offer.instance_type}"


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(LaunchSpec))


def _spec_digest(spec: LaunchSpec) -> str:
    # A shallow dict encodes to the same text as dataclasses.asdict (no field nests a
    # dataclass), without asdict's deep copy, the largest cost of a launch.
    fields = {name: getattr(spec, name) for name in _SPEC_FIELDS}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _jurisdiction_lookup() -> Callable[[str], str | None]:
    try:
        from multicloud.catalog import load_catalog

        return load_catalog().jurisdiction
    except (ImportError, FileNotFoundError):
        # Inline offers work without the catalog; they just carry no jurisdiction.
        return lambda region: None


class SimProvider:
    """A simulated cloud implementing the Provider protocol.

    Args:
        fleet_name: Fleet provider name; stamped on offers and handles.
        offers: Inline offers.
        catalog: ``"builtin"`` to add the shipped catalog's offers of ``cloud``.
        capacity: Nodes per ``instance_type``, ``region/instance_type`` or
            ``zone/instance_type``; used by the catalog and by inline offers without a
            capacity of their own.
        faults: Faults to inject.
        regions: Region globs narrowing the offers (empty = all).
        time_scale: Wall seconds per simulated hour.
        clock: Source of time in seconds. The wall clock by default, because a journaled
            cloud compares readings taken by different processes and before restarts.
        install_id: Install id tagged on workloads when the spec does not carry one.
        cloud: Catalog cloud to simulate (defaults to ``fleet_name``).
        state: Shared cloud state; a fresh in-memory one when neither it nor
            ``state_path`` is given.
        state_path: Journal of a cloud shared across processes and restarts; opened with
            ``SimState.open(state_path, shared=True)``. A path rather than a state so that
            it can be passed to providers built in other processes.

    Raises:
        ValueError: If ``time_scale`` is not positive, ``catalog`` is not ``"builtin"``,
            both ``state`` and ``state_path`` are given, or the journal is not one.
        OSError: If the journal cannot be opened.
    """

    name: ClassVar[str] = "sim"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SPOT,
            Capability.TPU,
            Capability.MULTI_NODE,
            Capability.RESERVED,
            Capability.FAULT_INJECTION,
        }
    )

    def __init__(
        self,
        *,
        fleet_name: str = "sim",
        offers: Sequence[InlineOffer] = (),
        catalog: str | None = None,
        capacity: Mapping[str, int] | None = None,
        faults: Sequence[Fault] = (),
        regions: Sequence[str] = (),
        time_scale: float = 3600.0,
        clock: Callable[[], float] = time.time,
        install_id: str = "default",
        cloud: str | None = None,
        state: SimState | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if catalog not in (None, "builtin"):
            raise ValueError(f"catalog must be 'builtin' or None, got {catalog!r}")
        if state is not None and state_path is not None:
            raise ValueError("give a SimProvider state or state_path, not both")
        if state_path is not None:
            state = SimState.open(state_path, shared=True)
        self.fleet_name = fleet_name
        self.cloud = cloud or fleet_name
        self.time_scale = float(time_scale)
        self.install_id = install_id
        self.state = state if state is not None else SimState()
        self._clock = clock
        self._capacity = dict(capacity or {})
        self._faults = tuple(faults)
        self._regions = tuple(regions)
        self._pools = self._build_pools(offers, catalog)

    # -- construction -------------------------------------------------------------------

    def _build_pools(self, inline: Sequence[InlineOffer], catalog: str | None) -> dict[str, Offer]:
        pools: dict[str, Offer] = {}
        if catalog == "builtin":
            from multicloud.catalog import load_catalog

            for offer in load_catalog().offers(
                self.cloud, fleet_name=self.fleet_name, capacity=self._capacity
            ):
                if offer.provider != self.fleet_name:
                    offer = dataclasses.replace(offer, provider=self.fleet_name)
                pools[_pool_key(offer)] = offer
        if inline:
            jurisdiction = _jurisdiction_lookup()
            for item in inline:
                offer = Offer(
                    provider=self.fleet_name,
                    region=item.region,
                    zone=item.zone,
                    instance_type=item.instance_type,
                    accelerator=item.accelerator,
                    count=item.count,
                    price=item.price,
                    spot_price=item.spot_price,
                    capacity=self._inline_capacity(item),
                    jurisdiction=jurisdiction(item.region),
                    catalog_version="inline",
                )
                # Written out by hand, an inline offer overrides the catalog's for its pool.
                pools[_pool_key(offer)] = offer
        return {k: o for k, o in pools.items() if _matches(self._regions, o.region)}

    def _inline_capacity(self, item: InlineOffer) -> int | None:
        if item.capacity is not None:
            return item.capacity
        for key in (
            f"{item.zone}/{item.instance_type}" if item.zone else None,
            f"{item.region}/{item.instance_type}",
            item.instance_type,
        ):
            if key is not None and key in self._capacity:
                return self._capacity[key]
        return None

    # -- the Provider protocol -------------------------------------------------------------

    def check(self) -> None:
        """Probe the simulated cloud; it is always reachable."""

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the offers matching ``request`` with their free capacity now.

        Args:
            request: Accelerators, minimum accelerators per node and region globs.

        Returns:
            Matching offers, capacity reduced by the nodes live workloads hold.
        """
        wanted = set(request.accelerators)
        with self.state.transaction() as state:
            held = state.held_at(self._clock())
        out = []
        for key, offer in self._pools.items():
            if wanted and offer.accelerator not in wanted:
                continue
            if offer.count < request.count or not _matches(request.regions, offer.region):
                continue
            if offer.capacity is not None:
                offer = dataclasses.replace(
                    offer, capacity=max(0, offer.capacity - held.get(key, 0))
                )
            out.append(offer)
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch ``spec`` on ``offer``; the same ``request_id`` returns the same handle.

        Args:
            offer: An offer this provider made.
            spec: What to launch.
            request_id: Idempotency key.

        Returns:
            The workload's handle.

        Raises:
            InvalidRequestError: If the offer is not this provider's, spot is asked where
                there is no spot market, or ``request_id`` was used for another launch.
            CapacityError: If an injected fault says so or the pool lacks free nodes.
            QuotaError: If an injected quota fault fires.
            TransientError: If an injected transient fault fires.
        """
        handle_id = self._handle_id(request_id)
        pool_key = _pool_key(offer)
        digest = _spec_digest(spec)
        with self.state.transaction() as state:
            now = self._clock()
            known = state.workloads.get(handle_id)
            if known is not None:
                if (known.request_id, known.pool, known.spec_digest) != (
                    request_id,
                    pool_key,
                    digest,
                ):
                    raise InvalidRequestError(
                        f"request id {request_id!r} was already used for another launch",
                        provider=self.fleet_name,
                    )
                return known.handle()

            pool = self._pools.get(pool_key)
            if pool is None:
                raise InvalidRequestError(
                    f"{self.fleet_name} has no offer {offer.instance_type} in "
                    f"{offer.zone or offer.region}",
                    provider=self.fleet_name,
                )
            if spec.market is MarketKind.SPOT and pool.spot_price is None:
                raise InvalidRequestError(
                    f"{pool.instance_type} in {pool.zone or pool.region} has no spot market",
                    provider=self.fleet_name,
                )
            if spec.nodes < 1:
                raise InvalidRequestError(
                    f"nodes must be at least 1, got {spec.nodes}", provider=self.fleet_name
                )
            self._fire_launch_fault(pool)
            pooled = offer.reservation is None
            if pooled and pool.capacity is not None:
                free = pool.capacity - state.held_at(now).get(pool_key, 0)
                if free < spec.nodes:
                    raise CapacityError(
                        f"{pool.instance_type} in {pool.zone or pool.region}: "
                        f"{free} node(s) free, {spec.nodes} asked",
                        provider=self.fleet_name,
                        scope=self._zone_scope(pool),
                    )

            duration_s = spec.duration_hours * self.time_scale
            workload = SimWorkload(
                id=handle_id,
                provider=self.fleet_name,
                request_id=request_id,
                region=pool.region,
                zone=pool.zone,
                instance_type=pool.instance_type,
                nodes=spec.nodes,
                market=spec.market.value,
                job_id=spec.job_id,
                pool=pool_key,
                pooled=pooled,
                spec_digest=digest,
                launched_at=now,
                duration_s=duration_s,
                preempt_after_s=(
                    self._schedule_preemption(pool, duration_s)
                    if spec.market is MarketKind.SPOT
                    else None
                ),
                tags={
                    TAG_JOB: spec.job_id,
                    TAG_ATTEMPT: str(spec.attempt),
                    TAG_INSTALL: (
                        spec.install_id if spec.install_id != "default" else self.install_id
                    ),
                },
            )
            state.add_workload(workload)
            return workload.handle()

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle, keyed by ``Handle.id``.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id; unknown ids report UNKNOWN.
        """
        out: dict[str, WorkloadStatus] = {}
        with self.state.transaction() as cloud:
            now = self._clock()
            for handle in handles:
                workload = cloud.workloads.get(handle.id)
                if workload is None:
                    out[handle.id] = WorkloadStatus(
                        WorkloadState.UNKNOWN, "no such workload in the simulated cloud"
                    )
                    continue
                state = workload.state_at(now)
                out[handle.id] = WorkloadStatus(
                    state,
                    _MESSAGES[state],
                    exit_code=0 if state is WorkloadState.SUCCEEDED else None,
                )
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate a live workload, freeing its capacity; otherwise do nothing.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (termination is naturally
                idempotent here).
        """
        with self.state.transaction() as state:
            now = self._clock()
            workload = state.workloads.get(handle.id)
            # A finished workload keeps its final state; only live ones can be terminated.
            if workload is not None and workload.live_at(now):
                state.mark_terminated(handle.id, now)

    def batch(self) -> contextlib.AbstractContextManager[SimState]:
        """Group calls into one transaction of the shared state (``SupportsBatch``).

        Returns:
            ``state.transaction()``: one lock, one catch-up and one journal write for a
            whole batch of launches or terminations.
        """
        return self.state.transaction()

    # -- the orphan sweep (SupportsSweep) ----------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the live workloads of this fleet provider that ``install_id`` launched.

        Args:
            install_id: Install id the workloads are tagged with.

        Returns:
            Provisioning or running workloads in launch order, with the job and attempt
            they are tagged with; the scheduler's orphan sweep terminates those no live
            attempt owns.
        """
        out = []
        with self.state.transaction() as state:
            now = self._clock()
            for w in state.workloads.values():
                if (
                    w.provider != self.fleet_name
                    or w.tags.get(TAG_INSTALL) != install_id
                    or not w.live_at(now)
                ):
                    continue
                try:
                    attempt = int(w.tags.get(TAG_ATTEMPT, ""))
                except ValueError:
                    # Attempts count from 1, so no live attempt owns a workload whose tag
                    # cannot be read: the sweep ends it, as it should.
                    attempt = 0
                out.append(OwnedWorkload(w.handle(), w.tags.get(TAG_JOB, w.job_id), attempt))
        return out

    # -- sim extras (not part of the protocol) ------------------------------------------

    def list_owned(self, install_id: str | None = None) -> list[Handle]:
        """Return the live workloads of this fleet provider tagged with an install id.

        Args:
            install_id: Install id to look for (defaults to the provider's own).

        Returns:
            Handles of provisioning or running workloads, in launch order.
        """
        wanted = self.install_id if install_id is None else install_id
        return [o.handle for o in self.owned(wanted)]

    def tags(self, handle: Handle) -> dict[str, str]:
        """Return the tags of a workload.

        Args:
            handle: The workload.

        Returns:
            Its tags; empty for an unknown handle.
        """
        with self.state.transaction() as state:
            workload = state.workloads.get(handle.id)
            return dict(workload.tags) if workload is not None else {}

    # -- internals -------------------------------------------------------------------------

    def _handle_id(self, request_id: str) -> str:
        # Hashing keeps the id short and cloud-safe whatever the key looks like, and two keys
        # sharing a long prefix still get different ids.
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:12]
        return f"sim-{self.fleet_name}-{digest}"

    def _zone_scope(self, offer: Offer) -> str:
        return error_scope(self.fleet_name, offer.region, offer.zone)

    def _fault_key(self, index: int) -> str:
        return f"{self.fleet_name}#{index}"

    def _fault_applies(self, fault: Fault, offer: Offer) -> bool:
        if fault.region is not None and fault.region not in (offer.region, offer.zone):
            return False
        return fault.instance_type is None or fault.instance_type == offer.instance_type

    def _take_fault(self, index: int, fault: Fault) -> bool:
        # Only called inside a transaction, so the check and the use cannot be split.
        key = self._fault_key(index)
        if self.state.fault_uses.get(key, 0) >= fault.times:
            return False
        self.state.use_fault(key)
        return True

    def _fire_launch_fault(self, offer: Offer) -> None:
        for index, fault in enumerate(self._faults):
            if fault.kind is FaultKind.PREEMPTION or not self._fault_applies(fault, offer):
                continue
            if not self._take_fault(index, fault):
                continue
            where = offer.zone or offer.region
            if fault.kind is FaultKind.CAPACITY:
                raise CapacityError(
                    f"injected capacity fault: no {offer.instance_type} capacity in {where}",
                    provider=self.fleet_name,
                    scope=self._zone_scope(offer),
                )
            if fault.kind is FaultKind.QUOTA:
                raise QuotaError(
                    f"injected quota fault: {offer.instance_type} quota exhausted in "
                    f"{offer.region}",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, offer.region),
                )
            raise TransientError(
                f"injected transient fault launching {offer.instance_type} in {where}",
                provider=self.fleet_name,
                scope=self._zone_scope(offer),
            )

    def _schedule_preemption(self, offer: Offer, duration_s: float) -> float | None:
        for index, fault in enumerate(self._faults):
            if fault.kind is not FaultKind.PREEMPTION or not self._fault_applies(fault, offer):
                continue
            after = fault.after_hours * self.time_scale
            # A preemption due after the run ends would never be seen; keep it for the next one.
            if after >= duration_s:
                continue
            if self._take_fault(index, fault):
                return after
        return None


_MESSAGES: dict[WorkloadState, str] = {
    WorkloadState.PROVISIONING: "nodes are being provisioned",
    WorkloadState.RUNNING: "running",
    WorkloadState.SUCCEEDED: "finished",
    WorkloadState.PREEMPTED: "spot capacity reclaimed (simulated preemption)",
    WorkloadState.TERMINATED: "terminated",
    WorkloadState.FAILED: "failed",
    WorkloadState.UNKNOWN: "unknown",
}
