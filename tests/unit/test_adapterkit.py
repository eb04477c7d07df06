"""The adapter kit's shared pieces: error boundary, identity, ownership labels, checks."""

from __future__ import annotations

import dataclasses

import pytest

from multicloud.adapterkit import (
    AWS_TAGS,
    GCP_LABELS,
    KUBERNETES_LABELS,
    OCI_TAGS,
    ErrorBoundary,
    Failure,
    LabelStyle,
    Ownership,
    Rule,
    check_launch,
    codes,
    refuse_reuse,
    resource_name,
    spec_digest,
)
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
)
from multicloud.provider import Capability, Handle, LaunchSpec, MarketKind
from multicloud.testing.builders import offer

RULES = (
    Rule("stockout", lambda f: f.has("STOCKOUT"), CapacityError, "zone"),
    Rule("quota", lambda f: f.has_prefix("QUOTA"), QuotaError, "region"),
)


class Boom(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


BOUNDARY = ErrorBoundary(
    "cloud", RULES, lambda e: e.failure if isinstance(e, Boom) else None, catch=(Boom,)
)


@pytest.mark.parametrize(
    ("failure", "error", "scope"),
    [
        (Failure(503, codes("STOCKOUT")), CapacityError, "cloud/r1/z1"),
        (Failure(403, codes("QUOTA_EXCEEDED")), QuotaError, "cloud/r1"),
        (Failure(401), AuthError, "cloud"),
        (Failure(403), AuthError, "cloud"),
        (Failure(408), TransientError, "cloud/r1"),
        (Failure(409), TransientError, "cloud/r1"),
        (Failure(429), TransientError, "cloud/r1"),
        (Failure(500), TransientError, "cloud/r1"),
        (Failure(503), TransientError, "cloud/r1"),
        (Failure(400), InvalidRequestError, "cloud/r1"),
        (Failure(404), InvalidRequestError, "cloud/r1"),
        (Failure(None, timeout=True), TransientError, "cloud/r1"),
        (Failure(None, message="???"), TransientError, "cloud/r1"),
    ],
)
def test_one_boundary_own_rules_then_one_http_fallback(
    failure: Failure, error: type[ProviderError], scope: str
) -> None:
    with pytest.raises(ProviderError) as caught, BOUNDARY(region="r1", zone="z1", doing="x"):
        raise Boom(failure)
    assert type(caught.value) is error
    assert caught.value.scope == scope
    assert caught.value.provider == "cloud"
    assert isinstance(caught.value.__cause__, Boom)


def test_the_boundary_lets_other_exceptions_and_provider_errors_through() -> None:
    with pytest.raises(KeyError), BOUNDARY():
        raise KeyError("a bug, not a cloud answer")
    already = QuotaError("q", provider="cloud", scope="cloud/r1")
    with pytest.raises(QuotaError) as caught, BOUNDARY():
        raise already
    assert caught.value is already


def launch_spec(**fields: object) -> LaunchSpec:
    base = LaunchSpec(
        job_id="job-0123456789ab",
        job_name="j",
        attempt=1,
        nodes=1,
        market=MarketKind.ON_DEMAND,
        install_id="mc-0123456789ab",
        image="img:1",
        command="true",
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_names_and_digests_are_deterministic_and_distinct() -> None:
    assert resource_name("aws", "r1") == resource_name("aws", "r1")
    assert resource_name("aws", "r1") != resource_name("aws-2", "r1")
    assert resource_name("aws", "r1").startswith("mc-") and len(resource_name("aws", "r1")) == 23
    o = offer()
    assert spec_digest(launch_spec(), o) == spec_digest(launch_spec(), o)
    assert spec_digest(launch_spec(), o) != spec_digest(launch_spec(command="false"), o)
    assert spec_digest(launch_spec(), o) != spec_digest(launch_spec(), offer(zone="z2"))


def test_a_reused_request_id_with_another_spec_is_refused() -> None:
    refuse_reuse("aws", "r1", "abc", "abc", what="instance i-1")
    with pytest.raises(InvalidRequestError, match="already used"):
        refuse_reuse("aws", "r1", "abc", "def", what="instance i-1")


@pytest.mark.parametrize("style", [AWS_TAGS, GCP_LABELS, KUBERNETES_LABELS])
def test_ownership_round_trips_in_every_style(style: LabelStyle) -> None:
    o = offer(provider="My.Fleet_Entry")
    own = Ownership.of(launch_spec(attempt=3), o, "0123abcd" * 4)
    labels = own.labels(style)
    parsed = Ownership.parse({**labels, "other": "x"}, style)
    assert parsed is not None
    assert parsed.job == "job-0123456789ab" and parsed.attempt == 3
    assert parsed.belongs_to("mc-0123456789ab", "My.Fleet_Entry", style)
    assert not parsed.belongs_to("mc-ffffffffffff", "My.Fleet_Entry", style)
    assert Ownership.parse({k: v for k, v in labels.items() if "job" not in k}, style) is None
    handle = Handle.at(o, launch_spec(), id="h", request_id="r")
    assert parsed.owned(handle).attempt == 3


@pytest.mark.parametrize(
    ("style", "value", "ok"),
    [
        (GCP_LABELS, "My.Fleet_Entry", r"^[a-z0-9_-]{1,63}$"),
        (GCP_LABELS, "x" * 80, r"^[a-z0-9_-]{1,63}$"),
        (KUBERNETES_LABELS, "a b/c", r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"),
        (KUBERNETES_LABELS, "-edge-", r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"),
    ],
)
def test_strict_styles_make_values_valid_and_keep_them_distinct(
    style: LabelStyle, value: str, ok: str
) -> None:
    import re

    assert re.match(ok, style.value(value))
    assert style.value(value) != style.value(value + "!")


CAPS = frozenset({Capability.SPOT, Capability.MULTI_NODE})


@pytest.mark.parametrize(
    ("case", "offer_fields", "spec_fields", "caps", "message"),
    [
        ("another entry's offer", {"provider": "gcp"}, {}, CAPS, "belongs to"),
        ("region outside", {"region": "eu-west-1"}, {}, CAPS, "outside"),
        ("no nodes", {}, {"nodes": 0}, CAPS, "at least 1"),
        ("gang without multi-node", {}, {"nodes": 2}, frozenset(), "cannot launch a gang"),
        ("spot without spot price", {}, {"market": MarketKind.SPOT}, CAPS, "no spot market"),
        ("reserved without reservation", {}, {"market": MarketKind.RESERVED}, CAPS,
         "reservation"),
        ("not sold on demand", {"price": None, "spot_price": 1.0}, {}, CAPS, "on demand"),
        ("nothing to run", {}, {"image": None, "command": None}, CAPS, "neither"),
        ("reservation without reservations", {"reservation": "blk"}, {}, CAPS,
         "has no reservations"),
        ("bad env name", {}, {"env": {"A-B": "1"}}, CAPS, "not a shell name"),
        ("env spans lines", {}, {"env": {"A": "1\n2"}}, CAPS, "spans lines"),
    ],
)
def test_launches_that_cannot_be_right_are_refused(
    case: str,
    offer_fields: dict[str, object],
    spec_fields: dict[str, object],
    caps: frozenset[Capability],
    message: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_launch(
            offer(provider=offer_fields.pop("provider", "aws"), **offer_fields),  # type: ignore[arg-type]
            launch_spec(**spec_fields),
            fleet_name="aws",
            capabilities=caps,
            regions=("us-*",),
        )


def test_a_right_launch_passes() -> None:
    check_launch(
        offer(spot_price=3.0),
        launch_spec(nodes=4, market=MarketKind.SPOT),
        fleet_name="aws",
        capabilities=CAPS,
        regions=("us-*",),
    )


@pytest.mark.parametrize("style", [AWS_TAGS, OCI_TAGS])
def test_tag_styles_keep_values_whole_up_to_their_cloud_limit(style: LabelStyle) -> None:
    assert style.value("Mixed Case/with spaces") == "Mixed Case/with spaces"
    long = "x" * 300
    assert len(style.value(long)) == 256
    assert style.value(long) != style.value(long + "y")
