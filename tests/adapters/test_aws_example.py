"""examples/aws_plan.py runs with no credentials (sim fallback) and with the real adapter.

The real-adapter run points boto3 at the moto server through the SDK's own
``AWS_ENDPOINT_URL`` setting, from a separate process, as a user's shell would.
"""

from __future__ import annotations

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
