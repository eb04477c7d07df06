"""The detached Ray actor that runs one local workload's command."""

import functools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from multicloud.local.files import (
    EXIT_NOT_RUNNABLE,
    Files,
    create_exclusive,
    kill_group,
    proc_start_time,
    write_atomic,
)

# ---------------------------------------------------------------------------- the actor


def exit_this_actor() -> None:
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
        self._files = Files(Path(logs_dir), handle_id)
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()
        if not create_exclusive(self._files.started, f"{time.time()}\n"):
            # An earlier incarnation already ran (or runs) this workload: never twice.
            self._done.set()
            threading.Thread(target=exit_this_actor, daemon=True).start()
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
            self._finish(EXIT_NOT_RUNNABLE)
            return
        pid = self._proc.pid
        write_atomic(
            self._files.pid, json.dumps({"pid": pid, "start": proc_start_time(pid)}) + "\n"
        )
        if self._files.terminated.exists():
            # terminate() wrote its marker while we were starting; it may not have seen
            # the pid file yet, so stop the group here too.
            kill_group(pid, None, signal.SIGKILL)
        threading.Thread(target=self._watch, daemon=True).start()

    def _finish(self, code: int) -> None:
        write_atomic(self._files.exit, f"{code}\n")
        self._done.set()
        threading.Thread(target=exit_this_actor, daemon=True).start()

    def _watch(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        # Background processes the command left behind go with it, as they would with a
        # VM that is shut down when its job ends.
        kill_group(self._proc.pid, None, signal.SIGKILL)
        # The exit file comes first: once the actor is gone, status() must find it.
        write_atomic(self._files.exit, f"{code}\n")
        self._done.set()
        exit_this_actor()

    def stop(self, grace_s: float) -> None:
        """Stop the command's process group: SIGTERM, then SIGKILL after ``grace_s``.

        Args:
            grace_s: Seconds the command gets to exit after SIGTERM.
        """
        proc = self._proc
        if proc is None or self._done.is_set():
            return
        kill_group(proc.pid, None, signal.SIGTERM)
        if not self._done.wait(grace_s):
            kill_group(proc.pid, None, signal.SIGKILL)
            self._done.wait(grace_s)


@functools.cache
def runner_actor_class() -> Any:
    import ray

    # Built once: ray.remote() pickles and exports the class on first use.
    return ray.remote(max_restarts=0)(_Runner)
