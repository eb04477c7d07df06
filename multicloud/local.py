"""The ``local`` provider: runs a job's command for real on the local Ray cluster.

Used by the demo and the examples so that something actually runs. Each workload is a
**detached, named Ray actor** that holds the requested CPUs and runs ``run.command`` in a
subprocess. Detached, because the workload must outlive whatever launched it — the scheduler
actor or the Ray task that called :meth:`LocalProvider.launch` may be killed at any moment,
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

Ray must already be initialised in the calling process (the scheduler's actor and tasks
are). Without it, ``launch``, ``terminate`` and ``owned`` — and ``status`` when a workload's
files cannot answer alone — raise :class:`InvalidRequestError`: it is a deployment mistake
that no retry fixes, so the job fails with a message saying what to do instead of being
retried forever. ``offers`` and ``check`` still work, without live counts.

Limits: the files must be visible where the provider runs, so this is for single-machine
Ray clusters (or a ``logs_dir`` on a shared filesystem); actors prefer the launching node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from multicloud.errors import CapacityError, InvalidRequestError, TransientError, error_scope
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
    handle_extra,
)

__all__ = [
    "ACCELERATOR",
    "GONE_MESSAGE",
    "INSTANCE_TYPE",
    "LOG_TAIL_BYTES",
    "REGION",
    "LocalProvider",
]

ACCELERATOR = "CPU"
REGION = "local"
INSTANCE_TYPE = "local"
LOG_TAIL_BYTES = 1 << 20
"""How much of a workload's output :meth:`LocalProvider.logs` returns (the tail)."""

GONE_MESSAGE = "the local workload is gone (Ray restarted?)"

_SIDECAR_FORMAT = 1
_TERM_GRACE_S = 5.0
_STOP_RPC_SLACK_S = 10.0
# Exit code the shell gives a command it cannot run; used when the argv cannot be exec'd.
_EXIT_NOT_RUNNABLE = 127


# ---------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class _Files:
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


def _tmp_name(path: Path) -> Path:
    # Unique per process and thread, so concurrent writers never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, whole."""
    tmp = _tmp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists; readers never see it half written.

    Args:
        path: The file.
        text: Its content.

    Returns:
        True if this call created it, False if it already existed.
    """
    tmp = _tmp_name(path)
    tmp.write_text(text)
    try:
        # link() fails if the target exists: an atomic create-if-absent with full content.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _proc_start_time(pid: int) -> str | None:
    """Return a process's start time from ``/proc`` (Linux), to recognise a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) is in parentheses and may contain spaces.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _kill_group(pid: int, start: str | None, sig: int) -> None:
    """Signal the process group led by ``pid``, unless ``pid`` now names another process.

    While any member of the group lives, Linux does not hand out its id as a new pid, so the
    only risk is a dead, reaped leader whose pid was reused by a new session leader; its
    start time differs from the one recorded.

    Args:
        pid: Leader pid (= process group id, as the command runs in its own session).
        start: The leader's recorded start time, if known.
        sig: Signal to send.
    """
    now = _proc_start_time(pid)
    if start is not None and now is not None and now != start:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _exit_status(files: _Files) -> WorkloadStatus | None:
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


# ---------------------------------------------------------------------------- the actor


def _exit_this_actor() -> None:
    """End the current actor from any thread, releasing its CPUs."""
    import ray

    try:
        # exit_actor() only works from inside a method on the main thread; the watcher is
        # a background thread, so the actor asks the GCS to kill it instead.
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:
        os._exit(0)


class _Runner:
    """The body of one workload's detached actor: runs the command, records how it ended.

    The command is started from ``__init__`` rather than from a method call, because an
    actor's creation is owned by the GCS once registered, while a method call dies with the
    caller — a launcher killed right after ``launch`` would leave an idle actor behind.

    Args:
        handle_id: The workload's handle id.
        logs_dir: Directory of the workload's files.
        argv: The command.
        env: Variables added to the actor's environment for the command.
    """

    def __init__(self, handle_id: str, logs_dir: str, argv: list[str], env: dict[str, str]) -> None:
        self._files = _Files(Path(logs_dir), handle_id)
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()
        if not _create_exclusive(self._files.started, f"{time.time()}\n"):
            # An earlier incarnation already ran (or runs) this workload: never twice.
            self._done.set()
            threading.Thread(target=_exit_this_actor, daemon=True).start()
            return
        if self._files.terminated.exists():
            # Terminated before it could start.
            self._finish(-int(signal.SIGTERM))
            return
        try:
            with self._files.log.open("ab") as log:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                    # Its own process group, so terminate() reaches everything it forks.
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            with self._files.log.open("ab") as log:
                log.write(f"multicloud local: cannot run {argv[0]!r}: {exc}\n".encode())
            self._finish(_EXIT_NOT_RUNNABLE)
            return
        pid = self._proc.pid
        _write_atomic(
            self._files.pid, json.dumps({"pid": pid, "start": _proc_start_time(pid)}) + "\n"
        )
        if self._files.terminated.exists():
            # terminate() wrote its marker while we were starting; it may not have seen
            # the pid file yet, so stop the group here too.
            _kill_group(pid, None, signal.SIGKILL)
        threading.Thread(target=self._watch, daemon=True).start()

    def _finish(self, code: int) -> None:
        _write_atomic(self._files.exit, f"{code}\n")
        self._done.set()
        threading.Thread(target=_exit_this_actor, daemon=True).start()

    def _watch(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        # Background processes the command left behind go with it, as they would with a
        # VM that is shut down when its job ends.
        _kill_group(self._proc.pid, None, signal.SIGKILL)
        # The exit file comes first: once the actor is gone, status() must find it.
        _write_atomic(self._files.exit, f"{code}\n")
        self._done.set()
        _exit_this_actor()

    def stop(self, grace_s: float) -> None:
        """Stop the command's process group: SIGTERM, then SIGKILL after ``grace_s``.

        Args:
            grace_s: Seconds the command gets to exit after SIGTERM.
        """
        proc = self._proc
        if proc is None or self._done.is_set():
            return
        _kill_group(proc.pid, None, signal.SIGTERM)
        if not self._done.wait(grace_s):
            _kill_group(proc.pid, None, signal.SIGKILL)
            self._done.wait(grace_s)


@functools.cache
def _runner_actor_class() -> Any:
    import ray

    # Built once: ray.remote() pickles and exports the class on first use.
    return ray.remote(max_restarts=0)(_Runner)


# ---------------------------------------------------------------------------- helpers


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _spec_digest(spec: LaunchSpec) -> str:
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _argv(command: str | tuple[str, ...] | None) -> list[str] | None:
    if isinstance(command, str):
        return ["/bin/sh", "-c", command] if command.strip() else None
    if command:
        return [str(part) for part in command]
    return None


@contextlib.contextmanager
def _ray_errors(provider: str) -> Iterator[None]:
    """Turn Ray's own failures (GCS unreachable, timeouts) into retryable errors."""
    from ray.exceptions import RayError

    try:
        yield
    except (RayError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"Ray call failed: {exc}", provider=provider) from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------------------- provider


class LocalProvider:
    """Runs workloads on the local Ray cluster, one detached actor each.

    Args:
        fleet_name: Fleet provider name; stamped on offers and handles.
        regions: Region globs from the fleet entry; the only region is ``local``.
        slots: How many workloads may run at once (the offer's capacity).
        cpus: Ray CPUs each workload holds unless its spec asks for a number.
        price: Price per node-hour of the offer (0: it is your own machine).
        logs_dir: Where workload files live (default ``multicloud.paths.local_logs_dir()``).
        install_id: Install id recorded when the spec does not carry one.
        namespace: Ray namespace of the workload actors.

    Raises:
        ValueError: If ``slots`` is negative, ``cpus`` not positive or ``price`` negative.
    """

    name: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(
        self,
        *,
        fleet_name: str = "local",
        regions: Sequence[str] = (),
        slots: int = 2,
        cpus: float = 1.0,
        price: float = 0.0,
        logs_dir: str | os.PathLike[str] | None = None,
        install_id: str = "default",
        namespace: str = "multicloud",
    ) -> None:
        if slots < 0:
            raise ValueError(f"slots must be >= 0, got {slots}")
        if cpus <= 0:
            raise ValueError(f"cpus must be positive, got {cpus}")
        if price < 0:
            raise ValueError(f"price must be >= 0, got {price}")
        self.fleet_name = fleet_name
        self.slots = int(slots)
        self.cpus = float(cpus)
        self.price = float(price)
        self.install_id = install_id
        self.namespace = namespace
        self._regions = tuple(regions)
        self._logs_dir = Path(logs_dir) if logs_dir is not None else None
        self._prefix = f"local-{fleet_name}-"

    @property
    def logs_dir(self) -> Path:
        """The directory of the workload files (created on first use)."""
        if self._logs_dir is None:
            from multicloud.paths import local_logs_dir

            # Resolved lazily so that building a provider (e.g. to list offers) touches
            # no disk.
            self._logs_dir = local_logs_dir()
        else:
            self._logs_dir.mkdir(parents=True, exist_ok=True)
        return self._logs_dir

    # -- the Provider protocol -------------------------------------------------------------

    def check(self) -> None:
        """Check that the logs directory is writable and, with Ray up, the CPUs suffice.

        Raises:
            InvalidRequestError: If the logs directory cannot be written or the Ray
                cluster has fewer CPUs than one workload needs.
        """
        try:
            root = self.logs_dir
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot create the local logs directory: {exc}", provider=self.fleet_name
            ) from exc
        if not os.access(root, os.W_OK | os.X_OK):
            raise InvalidRequestError(
                f"the local logs directory {root} is not writable", provider=self.fleet_name
            )
        import ray

        if ray.is_initialized():
            self._check_cpus(self.cpus)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the one local offer if it matches ``request``.

        Args:
            request: Accelerators (CPU or any), accelerators per node (at most 1) and
                region globs.

        Returns:
            The local offer with ``slots`` minus the live workloads as capacity (just
            ``slots`` when Ray is not initialised here), or nothing.
        """
        if request.accelerators and ACCELERATOR not in request.accelerators:
            return []
        if request.count > 1:
            return []
        if not (_matches(self._regions, REGION) and _matches(request.regions, REGION)):
            return []
        import ray

        capacity = self.slots
        if ray.is_initialized():
            with _ray_errors(self.fleet_name):
                live = self._live_ids()
            capacity = max(0, self.slots - sum(1 for i in live if self._holds_slot(i)))
        return [self._offer(capacity)]

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Start ``spec.command`` in a detached actor; the same ``request_id``, same handle.

        Args:
            offer: The local offer.
            spec: What to run; ``spec.image`` is ignored (the command runs on this host).
            request_id: Idempotency key.

        Returns:
            The workload's handle.

        Raises:
            InvalidRequestError: If the offer is not this provider's, the spec asks for
                spot, several nodes, no command, more CPUs than the cluster has or a secret
                missing from the environment, ``request_id`` was used for another spec, or
                Ray is not initialised in this process.
            CapacityError: If all slots are taken.
            TransientError: If a Ray call fails.
        """
        self._check_launch(offer, spec)
        argv = _argv(spec.command)
        if argv is None:
            raise InvalidRequestError(
                f"job {spec.job_id} has no command to run", provider=self.fleet_name
            )
        env = self._command_env(spec)
        cpus = spec.cpus if spec.cpus is not None else self.cpus
        if cpus <= 0:
            raise InvalidRequestError(
                f"cpus must be positive, got {cpus}", provider=self.fleet_name
            )
        ray = self._require_ray("launching")

        handle_id = self._handle_id(request_id)
        files = _Files(self.logs_dir, handle_id)
        digest = _spec_digest(spec)
        handle = self._handle(handle_id, request_id, spec, files.root)
        self._check_sidecar(files, request_id, digest)
        # A workload that has started (even if it has since finished or died) is never
        # started again: the same request id must not run twice.
        if files.started.exists() or files.exit.exists() or files.terminated.exists():
            return handle
        with _ray_errors(self.fleet_name):
            live = self._live_ids()
            if handle_id in live:
                return handle
            held = sum(1 for i in live if self._holds_slot(i))
            if held >= self.slots:
                raise CapacityError(
                    f"all {self.slots} local slot(s) are busy",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, REGION),
                )
            self._check_cpus(cpus)
            install = spec.install_id if spec.install_id != "default" else self.install_id
            sidecar = {
                "format": _SIDECAR_FORMAT,
                "provider": self.fleet_name,
                "handle_id": handle_id,
                "request_id": request_id,
                "job_id": spec.job_id,
                "job_name": spec.job_name,
                "attempt": spec.attempt,
                "install_id": install,
                "spec_digest": digest,
                "market": spec.market.value,
                "cpus": cpus,
                "created_at": time.time(),
            }
            if not _create_exclusive(files.sidecar, json.dumps(sidecar, sort_keys=True)):
                # A concurrent launch of the same key got there first; it must agree.
                self._check_sidecar(files, request_id, digest)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            _runner_actor_class().options(
                name=handle_id,
                namespace=self.namespace,
                lifetime="detached",
                # Two launchers racing on one key get one actor; the .started file covers
                # an actor re-created after the first one finished.
                get_if_exists=True,
                num_cpus=cpus,
                # Prefer this node: its disk holds the files status() reads. Soft, so a
                # node without CPUs (a head node) does not leave the actor pending forever.
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=ray.get_runtime_context().get_node_id(), soft=True
                ),
            ).remote(handle_id, str(files.root), argv, env)
        return handle

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle, from its files and one Ray listing.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id: SUCCEEDED / FAILED (with the exit code) or
            TERMINATED from the files; else RUNNING (PROVISIONING before the command
            started) while the actor lives; else UNKNOWN.

        Raises:
            InvalidRequestError: If some handle needs Ray and Ray is not initialised here.
            TransientError: If listing the actors fails.
        """
        out: dict[str, WorkloadStatus | None] = {}
        pending: list[tuple[Handle, _Files]] = []
        for handle in handles:
            if handle.id in out:
                continue
            files = self._files_of(handle)
            out[handle.id] = _exit_status(files)
            if out[handle.id] is None:
                pending.append((handle, files))
        if pending:
            self._require_ray("asking for the status of running workloads")
            with _ray_errors(self.fleet_name):
                live = self._all_named_actors()
            for handle, files in pending:
                ns = str(handle_extra(handle).get("namespace", self.namespace))
                if (ns, handle.id) in live:
                    started = files.pid.exists()
                    out[handle.id] = WorkloadStatus(
                        WorkloadState.RUNNING if started else WorkloadState.PROVISIONING,
                        "running" if started else "waiting for CPUs on the local Ray cluster",
                    )
                    continue
                # Read the files again: the workload may have ended between the first look
                # and the listing (it writes .exit before its actor goes).
                final = _exit_status(files)
                if final is None:
                    message = GONE_MESSAGE if files.sidecar.exists() else "no such workload"
                    final = WorkloadStatus(WorkloadState.UNKNOWN, message)
                out[handle.id] = final
        return {k: v for k, v in out.items() if v is not None}

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Stop a workload; a no-op for an unknown or finished one, safe to repeat.

        Writes the ``.terminated`` marker first (status answers TERMINATED from then on,
        and an actor that has not started its command yet will not), asks the actor to
        stop the command's process group (SIGTERM, SIGKILL after a grace period), kills
        the actor, then kills the process group by its recorded pid in case the actor was
        already gone (a Ray restart leaves the command's children behind).

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (recorded in the marker).

        Raises:
            TransientError: If a Ray call fails.
        """
        files = self._files_of(handle)
        if not files.sidecar.exists():
            return
        if files.exit.exists() and not files.terminated.exists():
            return  # finished by itself: it keeps its final state
        _create_exclusive(
            files.terminated,
            json.dumps({"request_id": request_id, "at": time.time()}) + "\n",
        )
        import ray

        if ray.is_initialized():
            ns = str(handle_extra(handle).get("namespace", self.namespace))
            with _ray_errors(self.fleet_name):
                self._stop_actor(handle.id, ns, started=files.started.exists())
        pid_doc = _read_json(files.pid)
        if pid_doc is not None and isinstance(pid_doc.get("pid"), int):
            start = pid_doc.get("start")
            _kill_group(pid_doc["pid"], start if isinstance(start, str) else None, signal.SIGKILL)

    # -- sweeping (SupportsSweep) -------------------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the live workloads of this fleet provider launched by ``install_id``.

        Args:
            install_id: The install whose workloads to list.

        Returns:
            Workloads whose actor lives and that have neither finished nor been
            terminated, in handle-id order.

        Raises:
            InvalidRequestError: If Ray is not initialised here.
            TransientError: If listing the actors fails.
        """
        self._require_ray("listing workloads")
        with _ray_errors(self.fleet_name):
            live = self._live_ids()
        out: list[OwnedWorkload] = []
        for handle_id in sorted(live):
            files = _Files(self.logs_dir, handle_id)
            doc = _read_json(files.sidecar)
            if doc is None or doc.get("install_id") != install_id:
                continue
            if doc.get("provider") != self.fleet_name or _exit_status(files) is not None:
                continue
            handle = Handle(
                provider=self.fleet_name,
                id=handle_id,
                request_id=str(doc["request_id"]),
                region=REGION,
                zone=None,
                instance_type=INSTANCE_TYPE,
                nodes=1,
                market=MarketKind(doc.get("market", MarketKind.ON_DEMAND.value)),
                job_id=str(doc["job_id"]),
                extra=self._extra(files.root),
            )
            out.append(OwnedWorkload(handle, str(doc["job_id"]), int(doc["attempt"])))
        return out

    # -- local extras (not part of the protocol) --------------------------------------------

    def logs(self, handle: Handle, *, limit: int = LOG_TAIL_BYTES) -> str:
        """Return the output a workload has written so far (its tail).

        Args:
            handle: The workload.
            limit: Most bytes to return, from the end.

        Returns:
            Its stdout and stderr, decoded leniently; empty if it has written nothing.
        """
        path = self._files_of(handle).log
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - limit))
                data = f.read(limit)
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", errors="replace")

    # -- internals -------------------------------------------------------------------------

    def _handle_id(self, request_id: str) -> str:
        # Hashing keeps the id short and name-safe whatever the key looks like.
        return f"{self._prefix}{hashlib.sha256(request_id.encode()).hexdigest()[:12]}"

    def _is_own_id(self, name: str) -> bool:
        # Exact shape, so that fleet "local" does not count fleet "local-b"'s workloads.
        rest = name[len(self._prefix) :]
        return (
            name.startswith(self._prefix)
            and len(rest) == 12
            and all(c in "0123456789abcdef" for c in rest)
        )

    def _extra(self, root: Path) -> tuple[tuple[str, str], ...]:
        # Where to find the workload again even if the provider's settings change.
        return (("logs_dir", str(root)), ("namespace", self.namespace))

    def _files_of(self, handle: Handle) -> _Files:
        root = handle_extra(handle).get("logs_dir")
        return _Files(Path(root) if root else self.logs_dir, handle.id)

    def _offer(self, capacity: int) -> Offer:
        return Offer(
            provider=self.fleet_name,
            region=REGION,
            zone=None,
            instance_type=INSTANCE_TYPE,
            accelerator=ACCELERATOR,
            count=1,
            price=self.price,
            capacity=capacity,
            catalog_version="local",
        )

    def _handle(self, handle_id: str, request_id: str, spec: LaunchSpec, root: Path) -> Handle:
        return Handle(
            provider=self.fleet_name,
            id=handle_id,
            request_id=request_id,
            region=REGION,
            zone=None,
            instance_type=INSTANCE_TYPE,
            nodes=1,
            market=spec.market,
            job_id=spec.job_id,
            extra=self._extra(root),
        )

    def _check_launch(self, offer: Offer, spec: LaunchSpec) -> None:
        if (offer.provider, offer.region, offer.instance_type) != (
            self.fleet_name,
            REGION,
            INSTANCE_TYPE,
        ):
            raise InvalidRequestError(
                f"{self.fleet_name} has no offer {offer.instance_type} in "
                f"{offer.zone or offer.region} (only {INSTANCE_TYPE} in {REGION})",
                provider=self.fleet_name,
            )
        if spec.market is not MarketKind.ON_DEMAND:
            raise InvalidRequestError(
                f"the local provider has no {spec.market.value} market",
                provider=self.fleet_name,
            )
        if spec.nodes != 1:
            raise InvalidRequestError(
                f"the local provider runs one node per workload, {spec.nodes} asked",
                provider=self.fleet_name,
            )

    def _command_env(self, spec: LaunchSpec) -> dict[str, str]:
        env = {"MULTICLOUD_JOB_ID": spec.job_id, "MULTICLOUD_ATTEMPT": str(spec.attempt)}
        if spec.checkpoint:
            env["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
        env.update(spec.env)
        missing = [name for name in spec.secrets if name not in os.environ]
        if missing:
            # Names only: a secret's value never appears in an error, a log or a file.
            raise InvalidRequestError(
                f"secret(s) not set in the environment: {', '.join(missing)}",
                provider=self.fleet_name,
            )
        env.update({name: os.environ[name] for name in spec.secrets})
        return env

    def _check_sidecar(self, files: _Files, request_id: str, digest: str) -> None:
        if not files.sidecar.exists():
            return
        doc = _read_json(files.sidecar)
        if doc is None:
            raise InvalidRequestError(
                f"unreadable sidecar {files.sidecar}", provider=self.fleet_name
            )
        if (doc.get("request_id"), doc.get("spec_digest")) != (request_id, digest):
            raise InvalidRequestError(
                f"request id {request_id!r} was already used for another launch",
                provider=self.fleet_name,
            )

    def _check_cpus(self, cpus: float) -> None:
        import ray

        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        total = float(resources.get("CPU", 0.0))
        if total < cpus:
            # The actor would wait forever for CPUs that do not exist.
            raise InvalidRequestError(
                f"a workload needs {cpus:g} CPU(s); the Ray cluster has {total:g}",
                provider=self.fleet_name,
            )

    def _require_ray(self, doing: str) -> Any:
        import ray

        if not ray.is_initialized():
            raise InvalidRequestError(
                f"the local provider needs Ray initialised in this process before {doing} "
                "(ray.init(); the scheduler's actor and tasks already have it)",
                provider=self.fleet_name,
            )
        return ray

    def _all_named_actors(self) -> set[tuple[str, str]]:
        import ray

        # One GCS round trip for the whole batch (~1 ms), whatever the number of handles.
        return {
            (a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)
        }

    def _live_ids(self) -> set[str]:
        return {
            name
            for ns, name in self._all_named_actors()
            if ns == self.namespace and self._is_own_id(name)
        }

    def _holds_slot(self, handle_id: str) -> bool:
        # An actor between writing .exit and exiting, or being killed after terminate(),
        # no longer counts against the slots.
        return _exit_status(_Files(self.logs_dir, handle_id)) is None

    def _stop_actor(self, handle_id: str, namespace: str, *, started: bool) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            actor = ray.get_actor(handle_id, namespace=namespace)
        except ValueError:
            return  # already gone
        if started:
            # A graceful stop first; only once the command has started (on a pending actor
            # the call would wait for CPUs). stop() runs after __init__, so a command that
            # is starting right now is either stopped here or never started.
            with contextlib.suppress(RayActorError, GetTimeoutError):
                ray.get(
                    actor.stop.remote(_TERM_GRACE_S),
                    timeout=2 * _TERM_GRACE_S + _STOP_RPC_SLACK_S,
                )
        with contextlib.suppress(ValueError):
            ray.kill(actor, no_restart=True)
