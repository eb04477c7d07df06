"""One throwaway local Ray cluster for the tests that need one (marked ``ray``).

It is started the way ``multicloud start`` starts one (``ray start --head`` in its own
process group, loopback, token auth on, its own temp dir and multicloud home) and this
process joins it as a driver. It is always stopped at the end, even on failure, and the
stop kills exactly its own processes, so nothing outlives the test run.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """The session's cluster; ``record`` changes if a test restarts it."""

    home: Path
    record: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.record["gcs_address"])

    @property
    def dashboard_url(self) -> str:
        return str(self.record["dashboard_url"])

    def restart(self) -> None:
        """Stop the whole cluster (as a crash would) and start a new one."""
        import ray

        from multicloud.service.runtime import connect_ray, start_local_ray, stop_local_ray

        ray.shutdown()
        stop_local_ray(timeout=5)
        self.record = start_local_ray(num_cpus=2, dashboard_port=free_port())
        os.environ["RAY_ADDRESS"] = self.address
        connect_ray(self.address, "mc-tests")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Start the session's Ray cluster and join it."""
    ray = pytest.importorskip("ray")
    from multicloud.service.runtime import connect_ray, start_local_ray, stop_local_ray

    home = Path(tempfile.mkdtemp(prefix="mc-home-", dir="/tmp"))
    names = ("MULTICLOUD_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["MULTICLOUD_HOME"] = str(home)
    for name in names[1:]:
        os.environ.pop(name, None)
    try:
        # A free dashboard port: 8265 may belong to a developer's own cluster.
        record = start_local_ray(num_cpus=2, dashboard_port=free_port())
        connect_ray(str(record["gcs_address"]), "mc-tests")
        # Ray's state API and subprocesses resolve "auto" by scanning the machine; another
        # cluster on it (a developer's, a benchmark's) must not be picked up instead.
        os.environ["RAY_ADDRESS"] = str(record["gcs_address"])
        yield Cluster(home, record)
    finally:
        ray.shutdown()
        stop_local_ray(timeout=5)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(cluster: Cluster) -> str:
    """The session cluster's temp dir (for tests that only need Ray initialised)."""
    return str(cluster.record["temp_dir"])
