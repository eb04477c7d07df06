"""The custom-data runner, run for real on this machine against the fake ARM.

The runner is what makes a VM report its end; here it resolves secrets from the fake Key Vault
with a token from the fake IMDS, runs the command through a stand-in ``docker`` (which runs the
command directly with the env file), tags its VM with the exit code and deallocates it. The
adapter's ``status`` then reads the result, as it would on Azure.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from multicloud_azure import AzureProvider
from multicloud_azure.testing import FakeArm, serve
from multicloud_azure.workload import WorkloadConfig, config_of, program

from multicloud.provider import LaunchSpec, MarketKind, ResourceRequest, WorkloadState, request_id

# Stands in for `docker run --rm --gpus all --network host --env-file F IMAGE CMD...`.
FAKE_DOCKER = """#!{python}
import os, subprocess, sys
args = sys.argv[1:]
at = args.index("--env-file")
env = dict(os.environ)
with open(args[at + 1]) as f:
    for line in f:
        key, _, value = line.rstrip("\\n").partition("=")
        env[key] = value
sys.exit(subprocess.call(args[at + 3:], env=env))
"""

COMMAND = 'test "$HF_TOKEN" = s3cret && test "$EPOCHS" = 3 && exit "$WANT"'


@pytest.fixture
def fake() -> Iterator[FakeArm]:
    with serve() as arm:
        yield arm


@pytest.fixture
def docker_path(tmp_path: Path) -> str:
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return f"{docker.parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.mark.parametrize(
    ("want", "secret", "state", "exit_code"),
    [
        ("0", "s3cret", WorkloadState.SUCCEEDED, 0),
        ("7", "s3cret", WorkloadState.FAILED, 7),
        # The command sees the wrong secret value: its test fails with 1.
        ("0", "wrong", WorkloadState.FAILED, 1),
        # No such secret in the vault: the runner cannot start the workload.
        ("0", None, WorkloadState.FAILED, 125),
    ],
)
def test_runner_reports_the_exit_code_through_a_tag(
    fake: FakeArm,
    tmp_path: Path,
    docker_path: str,
    want: str,
    secret: str | None,
    state: WorkloadState,
    exit_code: int,
) -> None:
    provider = AzureProvider(regions=["eastus"], key_vault="kv-acme", **fake.options)
    offer = next(
        o
        for o in provider.offers(ResourceRequest(accelerators=("A100-80GB",)))
        if o.instance_type == "Standard_NC24ads_A100_v4"
    )
    spec = LaunchSpec(
        job_id="job-run",
        job_name="run",
        attempt=1,
        nodes=1,
        market=MarketKind.ON_DEMAND,
        image="ghcr.io/acme/train:1",
        command=COMMAND,
        env={"EPOCHS": "3", "WANT": want},
        secrets=("HF_TOKEN",),
    )
    handle = provider.launch(offer, spec, request_id=request_id("job-run", 1, "eastus"))
    if secret is not None:
        fake.set_secret("kv-acme", "HF-TOKEN", secret)
    vm_name = f"{handle.id}-0"
    sent = config_of(
        base64.b64decode(fake.vm_body(vm_name)["properties"]["osProfile"]["customData"]).decode()
    )
    # The VM finds its own resource id in the custom data; no IMDS lookup needed for it.
    assert sent["vm_id"] == fake.vm(vm_name)["id"]
    assert provider.status([handle])[handle.id].state is WorkloadState.RUNNING

    # Same job, same VM; only the endpoints differ, pointing at the fake instead of Azure.
    config = WorkloadConfig(
        key_vault="kv-acme",
        arm_endpoint=fake.base_url,
        imds_endpoint=fake.imds_endpoint,
        vault_url=fake.vault_url,
        vault_resource=fake.base_url,
        poweroff=("false",),
    )
    script = tmp_path / "custom-data.py"
    script.write_text(program(spec, rank=0, head=vm_name, config=config, vm_id=str(sent["vm_id"])))
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PATH": docker_path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr

    status = provider.status([handle])[handle.id]
    assert (status.state, status.exit_code) == (state, exit_code), status.message
    assert fake.count("POST", "vm_deallocate") == 1
