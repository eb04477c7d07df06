"""What the chaos soak (``bench/chaos.py``) runs and hurts: its PostgreSQL, its clouds' faults,
the lease it watches, and a second scheduler.

Everything here is local and loopback only: a PostgreSQL instance of the soak's own
(``initdb``/``pg_ctl`` in a temp dir, on a free 127.0.0.1 port) so that it can be restarted
without touching the machine's shared one; the simulated clouds' journal, where faults are
re-armed; the store's lease row, sampled on a thread of its own; a second scheduler on a
second local Ray cluster of its own, as another machine would run it.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from multicloud.models import Fleet
from multicloud.sim import SimState
from multicloud.sim.faults import fault_key
from multicloud.store import lease as lease_rows
from multicloud.store.engine import engine_url
from multicloud.testing.invariants import Violation

__all__ = [
    "CloudFaults",
    "LeaseWatch",
    "Postgres",
    "SecondScheduler",
    "free_port",
    "missing_postgres",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path is None:
        raise RuntimeError("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
    return Path(on_path).parent


def missing_postgres() -> str | None:
    """Why the soak's own PostgreSQL cannot run here (None: it can)."""
    try:
        _pg_bin()
    except RuntimeError as exc:
        return str(exc)
    return None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class Postgres:
    """A PostgreSQL instance of the soak's own, on 127.0.0.1, in ``root``.

    Run as the ``postgres`` user when this process is root (``initdb`` refuses root).
    ``fsync`` is off: the soak kills the server's processes, never the machine, so the
    operating system keeps every commit.

    Args:
        root: Its directory (data, socket, log).
    """

    def __init__(self, root: Path) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "server.log"
        self._as: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")

    def _ctl(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}\n{proc.stderr}")

    def start(self) -> None:
        """Create the cluster (first time) and start the server; wait until it accepts."""
        if not self.data.exists():
            self._ctl(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--no-sync",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c max_connections=200"
        )
        self._ctl(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "start",
        )

    def url(self, database: str) -> str:
        """The store URL of a database of this instance."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database; return its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self, mode: str) -> None:
        """Restart the server (``fast``: a clean stop; ``immediate``: as a crash would)."""
        self._ctl(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "restart",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                  "-c fsync=off -c max_connections=200", "-l", str(self.log))

    def drop_connections(self, database: str) -> int:
        """Terminate every backend connected to ``database`` (but this one); return how many."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    def stop(self) -> None:
        """Stop the server at once (whatever it was doing)."""
        if self.data.exists():
            subprocess.run(
                [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                 "stop"],
                capture_output=True, timeout=60, check=False,
            )


class CloudFaults:
    """The simulated clouds' injected faults, re-armed at random moments once they fired.

    Each fleet provider lists one fault of each kind, each firing once (``times: 1``);
    this counts every firing (read from the clouds' journal) and re-arms the fault a
    random few seconds later, until :meth:`stop_arming`.

    Args:
        sim_path: The clouds' journal.
        fleet: The fleet (its providers' faults).
        rng: The soak's random source.
    """

    def __init__(self, sim_path: str, fleet: Fleet, rng: random.Random) -> None:
        self.state = SimState.open(sim_path)
        self.kinds = {
            fault_key(name, i): fault.kind.value
            for name, provider in fleet.providers.items()
            for i, fault in enumerate(provider.faults)
        }
        self.rng = rng
        self.fired: Counter[str] = Counter()
        self.armed = set(self.kinds)
        self.rearm_at: dict[str, float] = {}
        self.arming = True

    def poll(self, now: float) -> None:
        """Count faults that fired since the last poll; re-arm those whose time came."""
        with self.state.transaction() as state:
            for key, kind in self.kinds.items():
                if key in self.armed and state.fault_uses.get(key, 0) >= 1:
                    self.fired[kind] += 1
                    self.armed.discard(key)
                    self.rearm_at[key] = now + self.rng.uniform(0.5, 4.0)
            if not self.arming:
                return
            for key, at in list(self.rearm_at.items()):
                if at <= now:
                    state.rearm_fault(key)
                    self.armed.add(key)
                    del self.rearm_at[key]

    def stop_arming(self) -> None:
        """Re-arm nothing more (what is armed may still fire, and is counted)."""
        self.arming = False

    def close(self) -> None:
        """Close the journal."""
        self.state.close()


class LeaseWatch:
    """Samples the store's lease row on a thread; finds a lease held by two.

    A lease taken over by another owner must start no earlier than the expiry last seen
    for the epoch before it (that holder could still have written until then); an epoch
    belongs to one holder; epochs only grow. Takeovers by the same installation (a
    restarted scheduler taking its own lease back) are allowed at once, by design.

    Args:
        store_url: The store.
        every_s: Seconds between samples.
    """

    def __init__(self, store_url: str, every_s: float = 0.1) -> None:
        self._engine = sa.create_engine(engine_url(store_url), poolclass=NullPool)
        self._every = every_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.violations: list[Violation] = []
        self.samples = 0
        self.epochs: dict[int, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._engine.connect() as conn:
                    lease = lease_rows.read(conn)
            except Exception:  # the store is being restarted or cut off: sample again
                continue
            with self._lock:
                self._see(lease)

    def _see(self, lease: Any) -> None:
        self.samples += 1
        if lease.holder is None:
            return
        who = f"{lease.holder.owner} pid {lease.holder.pid}"
        expires = lease.expires_at.timestamp()
        known = self.epochs.get(lease.epoch)
        if known is None:
            earlier = max(self.epochs, default=0)
            if lease.epoch < earlier:
                self._violate(str(lease.epoch), f"epoch went back from {earlier}")
            before = self.epochs.get(earlier)
            started = lease.started_at.timestamp() if lease.started_at else 0.0
            if (
                before is not None
                and before["owner"] != lease.holder.owner
                and started < before["expires"]
            ):
                self._violate(
                    str(lease.epoch),
                    f"{who} took the lease {before['expires'] - started:.2f} s before "
                    f"epoch {earlier} ({before['who']}) expired",
                )
            self.epochs[lease.epoch] = {"who": who, "owner": lease.holder.owner,
                                        "expires": expires}
        elif known["who"] != who:
            self._violate(str(lease.epoch), f"held by {known['who']} and by {who}")
        else:
            known["expires"] = max(known["expires"], expires)

    def _violate(self, subject: str, detail: str) -> None:
        self.violations.append(Violation("lease-held-by-two", subject, detail))

    def check(self) -> list[Violation]:
        """The violations seen so far (the invariant checker's ``lease_check``)."""
        with self._lock:
            return list(self.violations)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._engine.dispose()


# Scheduler B's process: start as a standby on a local cluster of its own; print the result.
_STANDBY = """
import json, sys
from multicloud.service.control import start
from multicloud.service.config import ServiceConfig
config = ServiceConfig.model_validate_json(open(sys.argv[1]).read())
result = start(config, num_cpus=1, standby=True, standby_timeout=float(sys.argv[2]),
               on_wait=lambda lease: print("standby", lease.epoch, flush=True))
print(json.dumps(result.info, default=str), flush=True)
"""
_STOP = "from multicloud.service.runtime import stop_local_ray; stop_local_ray(timeout=2)"


class SecondScheduler:
    """A second scheduler against the same store, on a Ray cluster of its own.

    Started as a standby from a multicloud home of its own (a second machine, in effect);
    stopped by killing its whole cluster, as a machine that dies would be — its lease is
    not released, it runs out.

    Args:
        root: Its directory (home, config).
        config_json: The service config (same store, same clouds).
    """

    def __init__(self, root: Path, config_json: str) -> None:
        self.home = root / "home-b"
        self.config = root / "config-b.json"
        self.config.write_text(config_json)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env["MULTICLOUD_HOME"] = str(self.home)
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float) -> None:
        """Start it as a standby (returns at once; it starts its cluster meanwhile)."""
        with (self.home.parent / "second-scheduler.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _STANDBY, str(self.config), str(timeout)],
                env=self.env, stdout=subprocess.PIPE, stderr=log, text=True,
            )

    def wait_standby(self, timeout: float) -> bool:
        """Wait until it says it waits as a standby."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.startswith("standby"):
                return True
        return False

    def wait_active(self, timeout: float) -> dict[str, Any] | None:
        """Wait until it took the lease; return its ``ping`` (None: it did not)."""
        import json

        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return dict(json.loads(lines[-1])) if self.proc.returncode == 0 and lines else None

    def kill(self) -> None:
        """Kill its process and its whole cluster (no clean stop, no lease release)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)
        subprocess.run([sys.executable, "-c", _STOP], env=self.env, capture_output=True,
                       timeout=120, check=False)
        shutil.rmtree(self.home, ignore_errors=True)
