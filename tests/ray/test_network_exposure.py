"""What the local cluster ``multicloud start`` starts listens on: loopback, and nothing else.

The test runs the real commands in a home of its own — ``multicloud start`` (a local Ray
head, the scheduler actor, Prometheus metrics), a submission that runs to the end (so the
workers, launcher actors and a driver exist), ``multicloud status`` — then lists every
listening socket of every process of that cluster (the processes whose command line names
its temp dir, and their descendants) and asserts each is bound to a loopback address. The
README's "What listens where" is this list.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from multicloud.testing.builders import job

pytestmark = pytest.mark.ray

CLI = str(Path(sys.executable).parent / "multicloud")
FLEET = {
    "providers": {
        "sim": {
            "adapter": "sim",
            "offers": [
                {"region": "r1", "instance_type": "h100x8", "accelerator": "H100", "count": 8,
                 "price": 10.0},
            ],
        },
    },
    "time_scale": 0.05,
}
# Prints the addresses Ray registered its nodes under, as a driver connecting the way
# `multicloud` commands do sees them.
NODES = (
    "from multicloud.service.runtime import connect_ray; import ray, json; connect_ray();"
    "print(json.dumps(sorted({n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']})))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    proc = subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _listening(temp_dir: str) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of the cluster's processes."""
    procs: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in proc.info.get("cmdline") or []):
            procs[proc.pid] = proc
            try:
                procs.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.Error:
                continue
    found = []
    for proc in procs.values():
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        found += [(c.laddr.ip, c.laddr.port, name) for c in conns if c.status == "LISTEN"]
    return sorted(found)


def test_the_local_cluster_listens_on_loopback_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(MULTICLOUD_HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    fleet, jobs = tmp_path / "fleet.yaml", tmp_path / "job.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    jobs.write_text(yaml.safe_dump(job("net", duration_hours=1).model_dump(mode="json")))
    metrics = _free_port()
    try:
        _run(env, CLI, "start", "--fleet", str(fleet), "--num-cpus", "1",
             "--metrics-port", str(metrics))
        (job_id,) = _run(env, CLI, "submit", str(jobs)).split()
        _run(env, CLI, "wait", job_id, "--timeout", "120")
        nodes = json.loads(_run(env, sys.executable, "-c", NODES).strip().splitlines()[-1])
        record: dict[str, Any] = json.loads((home / "ray" / "cluster.json").read_text())
        listening = _listening(str(record["temp_dir"]))
    finally:
        subprocess.run([CLI, "stop"], env=env, capture_output=True, timeout=120, check=False)
    # The node is registered under loopback, so nothing needs to reach it elsewhere.
    assert nodes == ["127.0.0.1"]
    # Enough sockets were seen for the list to mean something: GCS, raylet, dashboard,
    # agents, workers, and the scheduler's metrics.
    names = {name for _, _, name in listening}
    assert {"gcs_server", "raylet"} <= names, listening
    assert any(port == metrics for _, port, _ in listening), listening
    exposed = [entry for entry in listening if not _loopback(entry[0])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
