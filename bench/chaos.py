"""Chaos soak: the service under a seeded mix of faults; writes bench/results/chaos.json.

The service runs as ``multicloud start`` runs it — a local Ray cluster (loopback, token
auth), the scheduler actor, simulated clouds — on a PostgreSQL store of the soak's own
(``bench/chaos_rig.py``). A stream of training jobs is submitted through the client (with
client keys, so a resend after a fault is safe) and some are cancelled, while faults are
injected at random (seeded) moments:

- ``actor_kill``: the scheduler actor killed from outside (Ray restarts it);
- ``cluster_restart``: the whole Ray cluster stopped and the service started again;
- ``pg_restart``: the store's PostgreSQL restarted (``fast`` or ``immediate``: a crash);
- ``store_connection_drop``: the scheduler's store connections terminated
  (``pg_terminate_backend``);
- ``second_scheduler``: a second scheduler started against the same store from a second
  Ray cluster, as a standby; the first paused (SIGSTOP) until the second took the lease,
  then resumed (SIGCONT) and must find itself replaced; the second's machine then dies
  (its cluster killed) and the first takes the lease back once it runs out;
- ``capacity``, ``quota``, ``transient``, ``preemption``: the simulated clouds' faults,
  each re-armed a few seconds after it fired.

The invariants (``multicloud.testing.invariants``: no job lost, none launched twice for
one attempt, no orphan, every job terminal with its reasons, the lease never held by two)
are checked every few seconds and after every fault, and once more at the end, when no
fault is injected any more and every job has finished. The run fails (exit 1) on any
violation.

Run: ``.venv/bin/python -m bench.chaos [--minutes 10] [--seed 7] [--out PATH]``
(under ``flock /tmp/mc-heavy.lock`` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"
NAMESPACE = "multicloud"
SERVICE_FAULTS = {
    # kind: weight (how often it is drawn; the slow ones less often)
    "store_connection_drop": 0.35,
    "actor_kill": 0.35,
    "pg_restart": 0.15,
    "cluster_restart": 0.07,
    "second_scheduler": 0.08,
}
CLOUD_FAULTS = ("capacity", "quota", "transient", "preemption")
SETTINGS = {
    "lease_ttl_s": 4.0,
    "lease_renew_s": 0.5,
    "lease_poll_s": 0.25,
    "status_interval_s": 0.2,
    "replan_interval_s": 0.3,
    "sweep_interval_s": 2.0,
    "retry_backoff_s": 0.1,
    "blocked_ttl_s": 2.0,
}
CLOUDS = {"aws": ["us-east-1", "us-west-2"], "gcp": ["us-central1", "us-east4"],
          "azure": ["eastus", "westus3"]}


def fleet_doc(rng: random.Random) -> dict[str, Any]:
    """Three simulated clouds, two regions each, 4 nodes per region, spot markets, and one
    fault of each kind per cloud (in a random order: the first armed one that applies fires)."""
    providers = {}
    for cloud, regions in CLOUDS.items():
        kinds = ["capacity", "quota", "transient"]
        rng.shuffle(kinds)
        providers[cloud] = {
            "adapter": "sim",
            "offers": [
                {"region": region, "instance_type": "h100x8", "accelerator": "H100",
                 "count": 8, "price": 90.0 + 5 * k + 3 * len(cloud),
                 "spot_price": 40.0 + 2 * k, "capacity": 4}
                for k, region in enumerate(regions)
            ],
            "faults": [
                *({"kind": kind} for kind in kinds),
                {"kind": "preemption", "after_hours": 0.6},
            ],
        }
    # One simulated hour is one second: jobs run 1-6 s, preemptions come 0.6 s in.
    return {"providers": providers, "time_scale": 1.0}


def job_doc(rng: random.Random, n: int) -> dict[str, Any]:
    """A training job of 1-2 nodes of 8 H100, 1-6 hours, on any market."""
    return {
        "name": f"chaos-{n}",
        "kind": "training",
        "priority": rng.randint(0, 5),
        "resources": {"accelerator": "H100", "count": 8, "nodes": rng.choice([1, 1, 2])},
        "market": rng.choice(["on-demand", "any", "spot"]),
        "duration_hours": round(rng.uniform(1.0, 6.0), 2),
    }


class NoRecovery(Exception):
    """The service did not come back from a fault (the run stops there)."""


class Soak:
    """One run: the rig, the stream, the faults, the checks.

    Args:
        args: The command line.
        root: The run's temp dir.
    """

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        from multicloud.testing.invariants import Submitted

        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.client: Any = None
        self.submitted = Submitted()
        self.pending: list[tuple[list[str], list[dict[str, Any]]]] = []
        self.faults: Counter[str] = Counter()
        self.recovery: dict[str, list[float]] = {}
        self.errors: Counter[str] = Counter()
        self.violations: dict[tuple[str, str], Any] = {}
        self.checks = 0
        self.quiet_since = time.time()
        self.jobs_made = 0
        self.cancels_sent = 0
        self.kinds = [k for k in SERVICE_FAULTS if args.second_scheduler or k != "second_scheduler"]
        # What close() stops, as far as setup() got.
        self.started: list[Any] = []

    def setup(self) -> None:
        """Start the store's PostgreSQL, the service, and the watchers."""
        from bench.chaos_rig import CloudFaults, LeaseWatch, Postgres, SecondScheduler
        from multicloud.models import Fleet
        from multicloud.service.config import ServiceConfig
        from multicloud.testing.invariants import Invariants

        self.pg = Postgres(self.root / "pg")
        self.started.append(self.pg.stop)
        self.pg.start()
        self.store_url = self.pg.create_database("chaos")
        self.fleet = Fleet.model_validate(fleet_doc(self.rng))
        self.config = ServiceConfig.build(
            self.fleet,
            fleet_source="bench/chaos.py",
            store_url=self.store_url,
            sim_state=str(self.root / "sim.jsonl"),
            local_logs=str(self.root / "logs"),
            settings=SETTINGS,
        )
        self.started.append(self._stop_service)
        self.start_service()
        self.clouds = CloudFaults(self.config.sim_state, self.fleet, self.rng)
        self.started.append(self.clouds.close)
        self.lease = LeaseWatch(self.store_url)
        self.started.append(self.lease.stop)
        self.second = SecondScheduler(self.root, self.config.model_dump_json())
        self.started.append(self.second.kill)
        self.invariants = Invariants(
            self.store_url, [self.config.sim_state], grace_s=30.0, lease_check=self.lease.check
        )
        self.started.append(self.invariants.close)

    # ------------------------------------------------------------------ the service

    def start_service(self) -> None:
        """Start (or start again) the cluster and the scheduler, as ``multicloud start``."""
        from multicloud.service.client import connect
        from multicloud.service.control import start

        start(self.config, namespace=NAMESPACE, num_cpus=2)
        self.client = connect(namespace=NAMESPACE)

    def actor(self) -> Any:
        """The scheduler actor's handle."""
        import ray

        return ray.get_actor("scheduler", namespace=NAMESPACE)

    def healthy(self, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until the scheduler answers as the active one; return its ``ping``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info: dict[str, Any] = self.client.ping()
                if info.get("role", "active") == "active":
                    return info
            except Exception as exc:  # restarting: ask again
                self.errors[f"ping: {type(exc).__name__}"] += 1
            if time.monotonic() > deadline:
                raise NoRecovery(f"no active scheduler {timeout:.0f} s after the fault; "
                                 f"its last answers: {dict(self.errors.most_common(3))}")
            time.sleep(0.25)

    # ------------------------------------------------------------------ the stream

    def submit(self) -> None:
        """Queue a batch of new jobs; send every queued batch not yet acknowledged."""
        batch = self.rng.randint(1, self.args.batch)
        keys, docs = [], []
        for _ in range(batch):
            self.jobs_made += 1
            keys.append(f"chaos/{self.args.seed}/{self.jobs_made}")
            docs.append(job_doc(self.rng, self.jobs_made))
        self.pending.append((keys, docs))
        self.flush()

    def flush(self) -> None:
        """Send the queued batches (same keys each time: a resend returns the same ids)."""
        while self.pending:
            keys, docs = self.pending[0]
            try:
                ids = self.client.submit_many(docs, client_keys=keys)
            except Exception as exc:  # a fault is under way: resend later
                self.errors[f"submit: {type(exc).__name__}"] += 1
                return
            self.submitted.ids.update(zip(keys, ids, strict=True))
            self.pending.pop(0)

    def cancel(self) -> None:
        """Cancel a random job the service acknowledged."""
        if not self.submitted.ids:
            return
        job_id = self.rng.choice(sorted(self.submitted.ids.values()))
        self.cancels_sent += 1
        try:
            if self.client.cancel(job_id) == "cancelled":
                self.submitted.cancelled.add(job_id)
        except Exception as exc:
            self.errors[f"cancel: {type(exc).__name__}"] += 1

    # ------------------------------------------------------------------ the faults

    def inject(self, kind: str) -> None:
        """Inject one service fault and wait until the service is back."""
        started = time.monotonic()
        # A fault method returns False when there was nothing to hurt (not counted).
        if getattr(self, f"_{kind}")() is False:
            self.errors[f"{kind}: nothing to inject"] += 1
            return
        self.healthy()
        self.recovery.setdefault(kind, []).append(round(time.monotonic() - started, 2))
        self.faults[kind] += 1
        self.quiet_since = time.time()
        self.flush()
        self.check()

    def _actor_kill(self) -> None:
        import ray

        ray.kill(self.actor(), no_restart=False)

    def _cluster_restart(self) -> None:
        import ray

        from multicloud.service.runtime import stop_local_ray

        ray.shutdown()
        stop_local_ray(timeout=2)
        self.start_service()

    def _pg_restart(self) -> None:
        self.pg.restart(self.rng.choice(["fast", "immediate"]))

    def _store_connection_drop(self) -> bool:
        # The scheduler keeps pooled connections open; between two of its transactions
        # there may be none for a moment.
        for _ in range(20):
            if self.pg.drop_connections("chaos"):
                return True
            time.sleep(0.1)
        return False

    def _second_scheduler(self) -> bool:
        second = self.second
        second.start(timeout=300)
        try:
            if not second.wait_standby(timeout=240):
                # Its cluster did not come up here: nothing was done to the service.
                return False
            pid = int(self.healthy()["pid"])
            os.kill(pid, signal.SIGSTOP)
            try:
                info_b = second.wait_active(timeout=120)
            finally:
                os.kill(pid, signal.SIGCONT)
            if info_b is None:
                self._violate("no-takeover", "second scheduler",
                              "the holder was paused, the standby never took the lease")
                return True
            self._check_replaced(timeout=60)
            # Let the second one schedule for a while, then its machine dies.
            time.sleep(self.rng.uniform(1.0, 4.0))
            return True
        finally:
            second.kill()

    def _check_replaced(self, timeout: float) -> None:
        """The resumed first scheduler must say it is a standby, its last write before
        the takeover."""
        from multicloud.store import Store

        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                info = self.client.ping()
                if info["role"] == "standby":
                    break
            except Exception as exc:
                self.errors[f"ping: {type(exc).__name__}"] += 1
            time.sleep(0.2)
        else:
            self._violate("stale-holder", "first scheduler",
                          "resumed after a takeover, it still says it is active")
            return
        with Store.open(self.store_url) as store:
            taken = store.lease.read()
        last = info.get("last_write_at")
        stale = taken.started_at is not None and last is not None and (
            datetime.fromisoformat(last) >= taken.started_at
        )
        if stale:
            self._violate("stale-write", f"epoch {taken.epoch}",
                          f"the replaced scheduler wrote at {last}, after the takeover at "
                          f"{taken.started_at}")

    def _violate(self, invariant: str, subject: str, detail: str) -> None:
        from multicloud.testing.invariants import Violation

        self.violations.setdefault((invariant, subject), Violation(invariant, subject, detail))

    # ------------------------------------------------------------------ checks

    def check(self, *, final: bool = False) -> None:
        """Check the invariants; keep every violation found (once each)."""
        self.checks += 1
        for v in self.invariants.check(self.submitted, final=final, quiet_since=self.quiet_since):
            self.violations.setdefault((v.invariant, v.subject), v)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        """Run the soak; return its figures."""
        begun = time.monotonic()
        try:
            return self._run(begun)
        except NoRecovery as why:
            return self.aborted(begun, why)

    def _run(self, begun: float) -> dict[str, Any]:
        args = self.args
        end = begun + args.minutes * 60
        kinds = self.kinds
        # Every kind once first (in a random order), then drawn by weight.
        queue = self.rng.sample(kinds, len(kinds))
        next_fault = begun + self.rng.expovariate(1 / args.fault_every)
        next_submit = next_cancel = next_check = next_poll = begun
        # The first fault of each kind goes in even if the run's time is up (short runs).
        while time.monotonic() < end or queue:
            now = time.monotonic()
            if now >= next_submit:
                self.submit()
                next_submit = now + self.rng.expovariate(1 / args.submit_every)
            if now >= next_cancel:
                self.cancel()
                next_cancel = now + self.rng.expovariate(1 / args.cancel_every)
            if now >= next_poll:
                self.clouds.poll(time.time())
                next_poll = now + 0.5
            if now >= next_fault:
                kind = queue.pop(0) if queue else self.rng.choices(
                    kinds, weights=[SERVICE_FAULTS[k] for k in kinds]
                )[0]
                print(f"{time.monotonic() - begun:7.1f}s fault {kind}", flush=True)
                self.inject(kind)
                next_fault = time.monotonic() + self.rng.expovariate(1 / args.fault_every)
            if now >= next_check:
                self.check()
                next_check = now + 5.0
            self.flush()
            time.sleep(0.1)
        soak_s = time.monotonic() - begun
        return self.settle(soak_s)

    def aborted(self, begun: float, why: NoRecovery) -> dict[str, Any]:
        """The figures of a run the service did not survive, with its logs kept."""
        self._violate("no-recovery", "scheduler", str(why))
        kept = Path(tempfile.gettempdir()) / f"mc-chaos-failed-{int(time.time())}"
        from multicloud.service.runtime import cluster_record

        kept.mkdir(parents=True, exist_ok=True)
        record = cluster_record()
        try:
            if record is not None:
                logs = Path(str(record["temp_dir"])) / "session_latest" / "logs"
                shutil.copytree(logs, kept / "ray-logs", dirs_exist_ok=True)
            shutil.copy(self.pg.log, kept / "postgresql.log")
        except OSError as exc:  # what could be kept is kept
            print(f"keeping the logs: {exc}", file=sys.stderr)
        figures = self.figures(time.monotonic() - begun, {})
        figures["aborted"] = f"{why}; logs kept in {kept}"
        return figures

    def settle(self, soak_s: float) -> dict[str, Any]:
        """No more faults: resend what is queued, wait for every job, check at the end."""
        self.clouds.stop_arming()
        deadline = time.monotonic() + self.args.settle_timeout
        while self.pending and time.monotonic() < deadline:
            self.flush()
            time.sleep(0.5)
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.clouds.poll(time.time())
            try:
                states = self.client.states(list(self.submitted.ids.values()))
            except Exception as exc:
                self.errors[f"states: {type(exc).__name__}"] += 1
                time.sleep(1)
                continue
            if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
                break
            time.sleep(1)
        # Two sweeps' time, for the last terminations to land.
        time.sleep(2 * SETTINGS["sweep_interval_s"] + 1)
        self.clouds.poll(time.time())
        self.check(final=True)
        return self.figures(soak_s, states)

    def figures(self, soak_s: float, states: dict[str, str]) -> dict[str, Any]:
        """The run's figures, as written to the results file."""
        from multicloud.store import Store

        faults = Counter(self.faults)
        for kind in CLOUD_FAULTS:
            faults[kind] = self.clouds.fired[kind]
        with Store.open(self.store_url) as store:
            jobs = store.list_jobs()
            # Why each failed job failed: its last event's reason (the invariants only ask
            # that one is there; the figures show which).
            failed = Counter(
                store.events(j.id)[-1].reason for j in jobs if j.state.value == "failed"
            )
        outcomes = Counter(a.outcome for j in jobs for a in j.attempts)
        return {
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
            "seed": self.args.seed,
            "minutes": self.args.minutes,
            "soak_s": round(soak_s, 1),
            "fault_kinds": [*self.kinds, *CLOUD_FAULTS],
            "faults": dict(sorted(faults.items())),
            "faults_total": sum(faults.values()),
            "recovery_s": {
                k: {"max": max(v), "median": sorted(v)[len(v) // 2]}
                for k, v in sorted(self.recovery.items())
            },
            "jobs": {
                "submitted": len(self.submitted.ids),
                "cancels_sent": self.cancels_sent,
                "cancelled_by_request": len(self.submitted.cancelled),
                "final_states": dict(Counter(states.values())),
                "in_store": len(jobs),
                "failed_reasons": dict(failed.most_common()),
            },
            "attempts": dict(outcomes.most_common()),
            "lease": {"samples": self.lease.samples, "epochs": len(self.lease.epochs)},
            "invariant_checks": self.checks,
            "client_errors_retried": dict(self.errors.most_common()),
            "violations": [vars(v) for v in self.violations.values()],
            "violation_count": len(self.violations),
        }

    def _stop_service(self) -> None:
        import ray

        from multicloud.service.control import stop

        try:
            stop(namespace=NAMESPACE)
        finally:
            ray.shutdown()

    def close(self) -> None:
        """Stop everything the run started, the last started first."""
        for stop in reversed(self.started):
            try:
                stop()
            except Exception as exc:  # stop the rest whatever this one did
                print(f"stopping {stop}: {exc}", file=sys.stderr)


def _commit() -> str:
    """The code measured: the git commit, with ``+changes`` if the tree differs from it."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; write the figures; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-every", type=float, default=4.0,
                        help="mean seconds between service faults")
    parser.add_argument("--submit-every", type=float, default=1.5,
                        help="mean seconds between submitted batches")
    parser.add_argument("--batch", type=int, default=3, help="jobs per batch at most")
    parser.add_argument("--cancel-every", type=float, default=6.0,
                        help="mean seconds between cancellations")
    parser.add_argument("--no-second-scheduler", dest="second_scheduler",
                        action="store_false")
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from bench.chaos_rig import missing_postgres

    if missing := missing_postgres():
        print(f"cannot run the soak: {missing}", file=sys.stderr)
        return 3
    root = Path(tempfile.mkdtemp(prefix="mc-chaos-", dir="/tmp"))
    root.chmod(0o755)  # the soak's PostgreSQL runs as its own user and lives in here
    os.environ["MULTICLOUD_HOME"] = str(root / "home")
    for name in [n for n in os.environ if n.startswith("RAY_")]:
        del os.environ[name]
    soak = Soak(args, root)
    try:
        soak.setup()
        figures = soak.run()
    finally:
        soak.close()
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("faults", "faults_total", "jobs",
                                              "violation_count")}, indent=2))
    return 1 if figures["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
