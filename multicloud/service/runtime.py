"""The Ray cluster under the scheduler: token auth, a local head, connecting, stopping.

``multicloud start`` with no address starts a local Ray head with the ``ray start`` CLI (so
the cluster outlives the command) and records it in ``$MULTICLOUD_HOME/ray/cluster.json``;
later commands connect to it through that record. Token authentication is always on: the
token lives in ``$MULTICLOUD_HOME/ray/auth_token`` (mode 0600) unless ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` names one already.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from multicloud import paths
from multicloud.errors import MulticloudError

__all__ = [
    "RayRuntimeError",
    "auth_env",
    "cluster_record",
    "connect_ray",
    "start_local_ray",
    "stop_local_ray",
]


class RayRuntimeError(MulticloudError):
    """The Ray cluster could not be started, found or reached."""


def _ray_dir() -> Path:
    path = paths.home() / "ray"
    path.mkdir(parents=True, exist_ok=True)
    return path


def auth_env() -> dict[str, str]:
    """Turn Ray token authentication on for this process and its children.

    Returns:
        The variables set (``RAY_AUTH_MODE`` and, unless a token is already given,
        ``RAY_AUTH_TOKEN_PATH``), for commands such as ``ray job submit``.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    env = {"RAY_AUTH_MODE": "token"}
    if os.environ.get("RAY_AUTH_TOKEN"):
        _refresh_ray_auth()
        return env
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if given and Path(given).exists():
        env["RAY_AUTH_TOKEN_PATH"] = given
        _refresh_ray_auth()
        return env
    token = _ray_dir() / "auth_token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    env["RAY_AUTH_TOKEN_PATH"] = str(token)
    _refresh_ray_auth()
    return env


def _refresh_ray_auth() -> None:
    """Make an already imported Ray see the variables just set.

    Ray reads the auth mode and token when it is imported; a program (or test run) that
    imported Ray before calling multicloud would otherwise connect without the token.
    """
    if "ray" not in sys.modules:
        return
    raylet: Any = importlib.import_module("ray._raylet")
    raylet.Config.initialize("")
    raylet.AuthenticationTokenLoader.instance().reset_cache()


# Ray swaps a loopback node address for the machine's own (``ray start
# --node-ip-address=127.0.0.1``, ``ray.init(address="127.0.0.1:PORT")``: services.
# resolve_ip_for_localhost), and its servers then bind that address or all interfaces.
# Telling Ray the cluster is single-node keeps every address it picks on loopback. The
# variable is Ray's own switch for single-node clusters (its default on macOS/Windows).
_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _stay_on_loopback() -> None:
    """Make this process's Ray keep loopback addresses (before or after Ray is imported)."""
    os.environ[_SINGLE_NODE] = "0"
    if "ray" in sys.modules:
        # Read once at import: a program that imported Ray first is told directly.
        constants: Any = importlib.import_module("ray._private.ray_constants")
        constants.ENABLE_RAY_CLUSTER = False


def _started_here(address: str) -> bool:
    """True if ``address`` is the loopback cluster ``start_local_ray`` started (and runs).

    Only that one listens on loopback alone: a cluster started otherwise and reached
    through 127.0.0.1 registered its node under the machine's address, which is where
    Ray must look for it.
    """
    record = cluster_record()
    return record is not None and str(record.get("gcs_address")) == address


def _record_path() -> Path:
    return _ray_dir() / "cluster.json"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def cluster_record() -> dict[str, Any] | None:
    """Return the local cluster an earlier ``start`` left running, if it still runs.

    Returns:
        ``{"gcs_address", "dashboard_url", "temp_dir", "pgid"}`` or None.
    """
    path = _record_path()
    if not path.exists():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _port_open(str(record.get("gcs_address", ""))):
        return None
    return record


def _temp_dir() -> Path:
    # Ray puts unix sockets under its temp dir; their paths must stay under ~107 bytes,
    # so the dir is short and keyed by the multicloud home rather than inside it.
    digest = hashlib.sha256(str(paths.home()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"mc-ray-{digest}"


def _ray_cli() -> list[str]:
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ray")
    if found is None:
        raise RayRuntimeError("the `ray` command is not installed (pip install 'ray[default]')")
    return [found]


def start_local_ray(
    *, num_cpus: int | None = None, dashboard_port: int | None = None
) -> dict[str, Any]:
    """Start a Ray head on this machine, bound for loopback use, with token auth.

    Args:
        num_cpus: CPUs Ray may schedule (default: the machine's).
        dashboard_port: Dashboard/Jobs API port (default 8265 if free, else any free one).

    Returns:
        The cluster record (also written to ``$MULTICLOUD_HOME/ray/cluster.json``).

    Raises:
        RayRuntimeError: ``ray start`` failed; its output is in the message.
    """
    env = {**os.environ, **auth_env()}
    # The Jobs API runs entrypoints with the head's PATH: make `multicloud` resolvable there.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env[_SINGLE_NODE] = "0"  # every server on loopback (see _stay_on_loopback)
    if dashboard_port is None:
        dashboard_port = 8265 if _bindable(8265) else _free_port()
    gcs_port = _free_port()
    temp_dir = _temp_dir()
    args = [
        *_ray_cli(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--include-dashboard=true",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    # Its own session: `stop` kills exactly this cluster's process group, never another
    # Ray on the machine (which `ray stop` would).
    proc = subprocess.run(
        args, env=env, capture_output=True, text=True, start_new_session=True, timeout=180
    )
    if proc.returncode != 0:
        # Whatever it did start must not outlive the failure.
        _kill_tree(set(_cluster_pids(temp_dir)), timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise RayRuntimeError(f"`ray start` failed:\n{proc.stdout}\n{proc.stderr}")
    gcs_address = f"127.0.0.1:{gcs_port}"
    pids = _cluster_pids(temp_dir)
    record = {
        "gcs_address": gcs_address,
        "dashboard_url": f"http://127.0.0.1:{dashboard_port}",
        "temp_dir": str(temp_dir),
        "pgids": sorted({os.getpgid(p) for p in pids if _alive(p)}),
        "started_at": time.time(),
    }
    _record_path().write_text(json.dumps(record, indent=2))
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _cluster_pids(temp_dir: Path) -> list[int]:
    """Pids of the processes whose command line names this cluster's temp dir."""
    import psutil

    marker = str(temp_dir)
    # Never this process or its ancestors (a shell whose command line names the dir).
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] not in spared and any(marker in part for part in cmdline):
            found.append(int(proc.info["pid"]))
    return found


def stop_local_ray(timeout: float = 15.0) -> bool:
    """Stop the local cluster recorded by :func:`start_local_ray`, and only it.

    Args:
        timeout: Seconds to wait for a graceful exit before killing.

    Returns:
        True if a cluster was stopped.
    """
    import psutil

    path = _record_path()
    if not path.exists():
        return False
    record = json.loads(path.read_text())
    temp_dir = Path(record["temp_dir"])
    roots = set(_cluster_pids(temp_dir))
    for pgid in record.get("pgids", []):
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.info["pid"]) == pgid:
                    roots.add(int(proc.info["pid"]))
            except OSError:
                continue
    killed = _kill_tree(roots, timeout)
    path.unlink(missing_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return killed


def _kill_tree(roots: set[int], timeout: float) -> bool:
    """SIGTERM the processes and their descendants, SIGKILL what is left after ``timeout``."""
    import psutil

    # Workers and detached actors are children of the raylet, in groups of their own.
    victims: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            proc = psutil.Process(pid)
            victims[pid] = proc
            for child in proc.children(recursive=True):
                victims[child.pid] = child
        except psutil.Error:
            continue
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return bool(victims)


def connect_ray(address: str | None = "auto", namespace: str = "multicloud") -> str:
    """Connect this process to a Ray cluster (once), with token auth.

    Args:
        address: ``auto`` (``RAY_ADDRESS``, else the local cluster ``start`` recorded),
            or ``HOST:PORT`` of the GCS.
        namespace: Ray namespace.

    Returns:
        The address connected to.

    Raises:
        RayRuntimeError: No cluster to connect to.
    """
    # Before importing Ray: it reads RAY_AUTH_MODE once, at import.
    auth_env()
    import ray

    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    target = address
    if target in (None, "", "auto"):
        target = os.environ.get("RAY_ADDRESS") or None
        if target is None:
            record = cluster_record()
            if record is None:
                raise RayRuntimeError(
                    "no Ray cluster is running: start one with `multicloud start` "
                    "(or pass --address HOST:PORT)"
                )
            target = str(record["gcs_address"])
    if _started_here(target):
        # Else Ray would dial the machine's address, where that cluster does not listen.
        _stay_on_loopback()
    ray.init(
        address=target,
        namespace=namespace,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    return target
