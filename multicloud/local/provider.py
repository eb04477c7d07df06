"""``LocalProvider``: runs a job's command for real on the local Ray cluster."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from multicloud.errors import CapacityError, InvalidRequestError, error_scope
from multicloud.local import runner
from multicloud.local.cluster import check_cpus, named_actors, require_ray, stop_actor
from multicloud.local.files import (
    ACCELERATOR,
    GONE_MESSAGE,
    INSTANCE_TYPE,
    LOG_TAIL_BYTES,
    REGION,
    Files,
    create_exclusive,
    exit_status,
    kill_group,
    read_json,
)
from multicloud.local.rules import (
    argv_of,
    check_launch,
    check_sidecar,
    command_env,
    matches,
    ray_errors,
    spec_digest,
)
from multicloud.local.workloads import owned_workload, read_tail, sidecar_doc
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
    handle_extra,
)

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
            check_cpus(self.fleet_name, self.cpus)

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
        if not (matches(self._regions, REGION) and matches(request.regions, REGION)):
            return []
        import ray

        capacity = self.slots
        if ray.is_initialized():
            with ray_errors(self.fleet_name):
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
        check_launch(self.fleet_name, offer, spec)
        argv = argv_of(spec.command)
        if argv is None:
            raise InvalidRequestError(
                f"job {spec.job_id} has no command to run", provider=self.fleet_name
            )
        env = command_env(self.fleet_name, spec)
        cpus = spec.cpus if spec.cpus is not None else self.cpus
        if cpus <= 0:
            raise InvalidRequestError(
                f"cpus must be positive, got {cpus}", provider=self.fleet_name
            )
        ray = require_ray(self.fleet_name, "launching")

        handle_id = self._handle_id(request_id)
        files = Files(self.logs_dir, handle_id)
        digest = spec_digest(spec)
        handle = self._handle(handle_id, request_id, spec, files.root)
        check_sidecar(self.fleet_name, files, request_id, digest)
        # A workload that has started (even if it has since finished or died) is never
        # started again: the same request id must not run twice.
        if files.started.exists() or files.exit.exists() or files.terminated.exists():
            return handle
        with ray_errors(self.fleet_name):
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
            check_cpus(self.fleet_name, cpus)
            install = spec.install_id if spec.install_id != "default" else self.install_id
            sidecar = sidecar_doc(
                self.fleet_name,
                handle_id,
                request_id,
                spec,
                install_id=install,
                digest=digest,
                cpus=cpus,
            )
            if not create_exclusive(files.sidecar, json.dumps(sidecar, sort_keys=True)):
                # A concurrent launch of the same key got there first; it must agree.
                check_sidecar(self.fleet_name, files, request_id, digest)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            runner.runner_actor_class().options(
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
        pending: list[tuple[Handle, Files]] = []
        for handle in handles:
            if handle.id in out:
                continue
            files = self._files_of(handle)
            out[handle.id] = exit_status(files)
            if out[handle.id] is None:
                pending.append((handle, files))
        if pending:
            require_ray(self.fleet_name, "asking for the status of running workloads")
            with ray_errors(self.fleet_name):
                live = named_actors()
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
                final = exit_status(files)
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
        create_exclusive(
            files.terminated,
            json.dumps({"request_id": request_id, "at": time.time()}) + "\n",
        )
        import ray

        if ray.is_initialized():
            ns = str(handle_extra(handle).get("namespace", self.namespace))
            with ray_errors(self.fleet_name):
                stop_actor(handle.id, ns, started=files.started.exists())
        pid_doc = read_json(files.pid)
        if pid_doc is not None and isinstance(pid_doc.get("pid"), int):
            start = pid_doc.get("start")
            kill_group(pid_doc["pid"], start if isinstance(start, str) else None, signal.SIGKILL)

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
        require_ray(self.fleet_name, "listing workloads")
        with ray_errors(self.fleet_name):
            live = self._live_ids()
        out: list[OwnedWorkload] = []
        for handle_id in sorted(live):
            files = Files(self.logs_dir, handle_id)
            if exit_status(files) is not None:
                continue
            found = owned_workload(files, self.fleet_name, install_id, self._extra(files.root))
            if found is not None:
                out.append(found)
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
        return read_tail(self._files_of(handle).log, limit)

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

    def _files_of(self, handle: Handle) -> Files:
        root = handle_extra(handle).get("logs_dir")
        return Files(Path(root) if root else self.logs_dir, handle.id)

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

    def _live_ids(self) -> set[str]:
        return {
            name for ns, name in named_actors() if ns == self.namespace and self._is_own_id(name)
        }

    def _holds_slot(self, handle_id: str) -> bool:
        # An actor between writing .exit and exiting, or being killed after terminate(),
        # no longer counts against the slots.
        return exit_status(Files(self.logs_dir, handle_id)) is None
