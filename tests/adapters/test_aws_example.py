"""examples/aws_plan.py runs with no credentials (sim fallback) and with the real adapter.

The real-adapter run points boto3 at the moto server through the SDK's own
``AWS_ENDPOINT_URL`` setting, from a separate process, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from multicloud_aws.testing import serve

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "aws_plan.py"


def run(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "us-east-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_without_credentials_it_falls_back_to_sim() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    out = run(env)
    assert "no AWS credentials" in out and "sim provider" in out
    assert "finetune-8b" in out and "p5" in out


def test_with_credentials_it_plans_on_the_real_adapter() -> None:
    with serve() as fake:
        env = {**os.environ, **fake.env}
        out = run(env)
    assert "real AWS adapter" in out and "NOTE" not in out
    # Live offerings drop the catalog's Local Zone row that the sim fallback would pick.
    assert "use1-atl2-az1" not in out and "finetune-8b" in out


_OPTIONS_ONLY = """
import json, socket, sys
real_connect = socket.socket.connect

def loopback_only(sock, address):
    # Instance metadata (169.254.169.254) or a real endpoint would mean the options fell short.
    if isinstance(address, tuple) and address[0] != "127.0.0.1":
        raise OSError(f"refused non-loopback connection to {address}")
    return real_connect(sock, address)

socket.socket.connect = loopback_only
from multicloud import providers
from multicloud.provider import ResourceRequest
aws = providers.load("aws", regions=["us-east-1"], **json.loads(sys.argv[1]))
print(len(aws.offers(ResourceRequest(accelerators=("H100",)))))
"""


def test_fleet_options_alone_reach_the_fake_from_another_process() -> None:
    # What a Ray launch task gets: the fleet entry, no AWS variables, no ~/.aws.
    with serve(set_env=False) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HOME"] = os.devnull
        done = subprocess.run(
            [sys.executable, "-c", _OPTIONS_ONLY, json.dumps(fake.options)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 0
    assert fake.options["credentials_file"] and fake.options["profile"]
