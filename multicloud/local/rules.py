"""What a local launch must satisfy, and small helpers of the local provider."""

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
from collections.abc import Iterator, Sequence

from multicloud.errors import InvalidRequestError, TransientError
from multicloud.local.files import INSTANCE_TYPE, REGION, Files, read_json
from multicloud.provider import (
    LaunchSpec,
    MarketKind,
    Offer,
)

# ---------------------------------------------------------------------------- helpers


def matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def spec_digest(spec: LaunchSpec) -> str:
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def argv_of(command: str | tuple[str, ...] | None) -> list[str] | None:
    if isinstance(command, str):
        return ["/bin/sh", "-c", command] if command.strip() else None
    if command:
        return [str(part) for part in command]
    return None


@contextlib.contextmanager
def ray_errors(provider: str) -> Iterator[None]:
    """Turn Ray's own failures (GCS unreachable, timeouts) into retryable errors."""
    from ray.exceptions import RayError

    try:
        yield
    except (RayError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"Ray call failed: {exc}", provider=provider) from exc


def check_launch(fleet_name: str, offer: Offer, spec: LaunchSpec) -> None:
    """Refuse a launch the local provider cannot run (InvalidRequestError)."""
    if (offer.provider, offer.region, offer.instance_type) != (
        fleet_name,
        REGION,
        INSTANCE_TYPE,
    ):
        raise InvalidRequestError(
            f"{fleet_name} has no offer {offer.instance_type} in "
            f"{offer.zone or offer.region} (only {INSTANCE_TYPE} in {REGION})",
            provider=fleet_name,
        )
    if spec.market is not MarketKind.ON_DEMAND:
        raise InvalidRequestError(
            f"the local provider has no {spec.market.value} market",
            provider=fleet_name,
        )
    if spec.nodes != 1:
        raise InvalidRequestError(
            f"the local provider runs one node per workload, {spec.nodes} asked",
            provider=fleet_name,
        )


def command_env(fleet_name: str, spec: LaunchSpec) -> dict[str, str]:
    """The command's environment: job ids, env, secrets resolved on this host by name."""
    env = {"MULTICLOUD_JOB_ID": spec.job_id, "MULTICLOUD_ATTEMPT": str(spec.attempt)}
    if spec.checkpoint:
        env["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
    env.update(spec.env)
    missing = [name for name in spec.secrets if name not in os.environ]
    if missing:
        # Names only: a secret's value never appears in an error, a log or a file.
        raise InvalidRequestError(
            f"secret(s) not set in the environment: {', '.join(missing)}",
            provider=fleet_name,
        )
    env.update({name: os.environ[name] for name in spec.secrets})
    return env


def check_sidecar(fleet_name: str, files: Files, request_id: str, digest: str) -> None:
    """Refuse a request id already used for another launch (InvalidRequestError)."""
    if not files.sidecar.exists():
        return
    doc = read_json(files.sidecar)
    if doc is None:
        raise InvalidRequestError(f"unreadable sidecar {files.sidecar}", provider=fleet_name)
    if (doc.get("request_id"), doc.get("spec_digest")) != (request_id, digest):
        raise InvalidRequestError(
            f"request id {request_id!r} was already used for another launch",
            provider=fleet_name,
        )
