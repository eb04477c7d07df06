"""Two schedulers, two Ray clusters, one PostgreSQL store and one simulated cloud.

Scheduler A runs on the session's cluster; scheduler B on a second local cluster started by
a ``multicloud`` process with a multicloud home of its own, as a second machine would.
B is first refused (exit 3, the holder named), then started with ``--standby``. A is
paused with SIGSTOP (its actor's worker process); B takes the lease over once it expires
and finishes the jobs; A is resumed and must find itself replaced: zero writes accepted
from it after the takeover, zero duplicate launches, nothing orphaned
(``docs/architecture.md``, "One scheduler per store").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from multicloud.models import Fleet
from multicloud.service.client import Client
from multicloud.service.config import ServiceConfig
from multicloud.service.control import start
from multicloud.sim import SimState
from multicloud.store import Store
from multicloud.testing.builders import job, one_offer_fleet_doc

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

HOUR_S = 0.05
FLEET = one_offer_fleet_doc(HOUR_S)
SETTINGS = {
    "lease_ttl_s": 3.0,
    "lease_renew_s": 0.5,
    "lease_poll_s": 0.2,
    "status_interval_s": 0.1,
    "replan_interval_s": 0.2,
    "sweep_interval_s": 1.0,
    "retry_backoff_s": 0.05,
    "blocked_ttl_s": 1.0,
}

# Scheduler B's process: start as a standby on its own local cluster, print the result.
STANDBY = """
import json, sys
from multicloud.service.control import start
from multicloud.service.config import ServiceConfig
config = ServiceConfig.model_validate_json(open(sys.argv[1]).read())
result = start(config, namespace=sys.argv[2], num_cpus=1, standby=True,
               standby_timeout=float(sys.argv[3]),
               on_wait=lambda lease: print("standby", lease.epoch, flush=True))
print(json.dumps(result.info, default=str), flush=True)
"""


def until(what: str, check: Callable[[], Any], timeout: float, pause: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)


def run_b(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``multicloud ARGS`` as scheduler B's machine would."""
    cli = str(Path(sys.executable).parent / "multicloud")
    return subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def b_lease(env: dict[str, str], namespace: str) -> dict[str, Any] | None:
    """B's ``status --json`` lease, once its scheduler answers."""
    proc = run_b(env, "status", "--json", "--namespace", namespace)
    return json.loads(proc.stdout)["lease"] if proc.returncode == 0 else None


def check_workloads(state: SimState, url: str) -> int:
    """One workload per recorded attempt, every one recorded, none left running."""
    with state.transaction():
        workloads = list(state.workloads.values())
    with Store.open(url) as store:
        recorded = {a.request_id for j in store.list_jobs() for a in j.attempts}
    per_attempt = Counter((w.job_id, w.tags["multicloud:attempt"]) for w in workloads)
    assert [k for k, n in per_attempt.items() if n > 1] == [], "an attempt was launched twice"
    assert [w.request_id for w in workloads if w.request_id not in recorded] == []
    assert [w.id for w in workloads if w.live_at(time.time())] == [], "orphans left running"
    return len(workloads)


def test_a_paused_holder_is_replaced_and_fenced(
    cluster: Any, tmp_path: Path, pg_database: str
) -> None:
    namespace = f"mc-lease-{uuid.uuid4().hex[:8]}"
    config = ServiceConfig.build(
        Fleet.model_validate(FLEET),
        store_url=pg_database,
        sim_state=str(tmp_path / "sim.jsonl"),
        local_logs=str(tmp_path / "logs"),
        settings=SETTINGS,
    )
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(FLEET))
    home_b = tmp_path / "home-b"
    env_b = {**os.environ, "MULTICLOUD_HOME": str(home_b)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env_b.pop(name, None)

    a = start(config, address=cluster.address, namespace=namespace)
    client_a = Client(ray.get_actor("scheduler", namespace=namespace))
    pid_a = int(a.info["pid"])
    standby: subprocess.Popen[str] | None = None
    paused = False
    try:
        assert (a.info["role"], a.info["lease_epoch"]) == ("active", 1)

        # B without --standby: refused before it starts anything, the holder named.
        refused = run_b(
            env_b, "start", "--fleet", str(tmp_path / "fleet.yaml"), "--store", pg_database
        )
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert f"pid {pid_a}" in refused.stderr and "--standby" in refused.stderr
        assert not (home_b / "ray" / "cluster.json").exists()

        # B as a standby, on a cluster of its own.
        standby = subprocess.Popen(
            [sys.executable, "-c", STANDBY, str(tmp_path / "config.json"), namespace, "300"],
            env=env_b,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lease = until(
            "B to run as a standby", lambda: b_lease(env_b, namespace), timeout=180, pause=1.0
        )
        assert lease["role"] == "standby" and lease["holder"]["pid"] == pid_a

        ids = client_a.submit_many([job(f"j{i}", duration_hours=40) for i in range(16)])
        until("A to run jobs", lambda: "running" in client_a.states(ids).values(), timeout=60)

        os.kill(pid_a, signal.SIGSTOP)
        paused = True
        out, err = standby.communicate(timeout=120)
        assert standby.returncode == 0, out + err
        info_b = json.loads(out.strip().splitlines()[-1])
        assert (info_b["role"], info_b["lease_epoch"]) == ("active", 2)
        os.kill(pid_a, signal.SIGCONT)
        paused = False

        # A, resumed, finds itself replaced: its cycle stops and it becomes a standby.
        info_a = until(
            "A to notice",
            lambda: (p := client_a.ping())["role"] == "standby" and p,
            timeout=60,
        )
        assert "lease lost" in str(info_a["lease_lost"])
        with Store.open(pg_database) as store:
            taken = store.lease.read()
            until(
                "B to finish every job",
                lambda: set(store.job_states(ids).values()) == {"succeeded"},
                timeout=180,
                pause=0.5,
            )
        assert (taken.epoch, taken.holder.pid if taken.holder else None) == (
            2,
            int(info_b["pid"]),
        )
        # Zero writes accepted from A after the takeover: its last committed fenced write
        # was checked, in the database's time, before B took the lease.
        assert taken.started_at is not None
        assert datetime.fromisoformat(info_a["last_write_at"]) < taken.started_at
        lease_a = client_a.lease()
        assert (lease_a.role, lease_a.epoch, lease_a.scheduler_epoch) == ("standby", 2, None)
        assert check_workloads(SimState.open(config.sim_state), pg_database) >= len(ids)
    finally:
        if paused:
            os.kill(pid_a, signal.SIGCONT)
        if standby is not None and standby.poll() is None:
            standby.kill()
            standby.communicate(timeout=30)
        run_b(env_b, "stop", "--namespace", namespace, timeout=120)
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor("scheduler", namespace=namespace), no_restart=True)
