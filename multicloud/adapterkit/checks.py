"""Launchability checks every adapter makes before it calls its cloud.

The scheduler launches exactly the offer it planned; these checks refuse, as an
``InvalidRequestError`` (no fail-over helps), a launch that could never be right: another
fleet entry's offer, a region outside the entry, a market the offer does not sell, a gang the
adapter cannot form, nothing to run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from multicloud.adapterkit.identity import region_matches
from multicloud.errors import InvalidRequestError, error_scope
from multicloud.provider import Capability, LaunchSpec, MarketKind, Offer

__all__ = ["ENV_NAME", "check_launch"]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""What an environment variable name must look like (a shell name)."""


def check_launch(
    offer: Offer,
    spec: LaunchSpec,
    *,
    fleet_name: str,
    capabilities: frozenset[Capability],
    regions: Sequence[str] = (),
    needs_image: bool = False,
) -> None:
    """Refuse a launch that cannot be right, before any cloud call.

    Args:
        offer: The planned offer.
        spec: The launch.
        fleet_name: This adapter's fleet provider name.
        capabilities: This adapter's capabilities (spot, multi-node, reserved).
        regions: The fleet entry's region globs (empty: all).
        needs_image: The cloud runs containers only (Kubernetes): a job needs an image.

    Raises:
        InvalidRequestError: Naming what is wrong.
    """

    def refuse(message: str) -> InvalidRequestError:
        return InvalidRequestError(
            message, provider=fleet_name, scope=error_scope(fleet_name, offer.region)
        )

    where = offer.zone or offer.region
    if offer.provider != fleet_name:
        raise refuse(f"offer {offer.key} belongs to {offer.provider!r}, not {fleet_name!r}")
    if not region_matches(regions, offer.region):
        raise refuse(f"region {offer.region} is outside the regions of {fleet_name}")
    if spec.nodes < 1:
        raise refuse(f"nodes must be at least 1, got {spec.nodes}")
    if spec.nodes > 1 and Capability.MULTI_NODE not in capabilities:
        raise refuse(f"{fleet_name} cannot launch a gang of {spec.nodes} nodes")
    if offer.reservation is not None and Capability.RESERVED not in capabilities:
        raise refuse(f"{fleet_name} has no reservations; offer {offer.key} draws on one")
    if spec.market is MarketKind.SPOT:
        if Capability.SPOT not in capabilities:
            raise refuse(f"{fleet_name} has no spot market")
        if offer.spot_price is None or offer.reservation is not None:
            raise refuse(f"{offer.instance_type} in {where} has no spot market in this offer")
    elif spec.market is MarketKind.RESERVED:
        if offer.reservation is None:
            raise refuse("a reserved launch needs an offer drawn from a reservation")
    elif offer.price is None and offer.reservation is None:
        raise refuse(f"{offer.instance_type} in {where} is not sold on demand")
    if needs_image and not spec.image:
        raise refuse(f"job {spec.job_id} has no container image; {fleet_name} runs containers")
    if spec.image is None and not spec.command:
        raise refuse(f"job {spec.job_id} has neither an image nor a command to run")
    for key in spec.env:
        if not ENV_NAME.match(key):
            raise refuse(f"environment variable name {key!r} is not a shell name")
    for key, value in spec.env.items():
        if "\n" in value or "\r" in value:
            # The node's env file (and the pod's env) hold one line per variable.
            raise refuse(f"environment variable {key} spans lines; put it in a secret or the image")
