"""examples/azure_plan.py: the real adapter against the fake ARM, and the sim fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "azure_plan.py"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--fake"], {}, "on the real Azure adapter (fake ARM)"),
        ([], {}, "AZURE_SUBSCRIPTION_ID, AZURE_SUBNET_ID, AZURE_IDENTITY_ID not set"),
        # A fleet entry without a usable identity is refused, naming the option.
        (
            [],
            {"AZURE_SUBSCRIPTION_ID": "s", "AZURE_SUBNET_ID": "/x", "AZURE_IDENTITY_ID": "bad"},
            "providers.azure.options.identity_id",
        ),
    ],
    ids=["fake", "no-entry", "bad-identity"],
)
def test_the_example_plans(args: list[str], env: dict[str, str], says: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert says in done.stdout
    assert "Planned 3 jobs" in done.stdout
