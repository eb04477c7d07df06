"""Tests of the shipped price catalog and its build script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multicloud.accelerators import CANONICAL_NAMES
from multicloud.catalog import Catalog, load_catalog
from multicloud.models import JURISDICTIONS

REPO = Path(__file__).resolve().parents[2]
PRICES = REPO.parent / "shared" / "data" / "prices"
COMMITTED = REPO / "multicloud" / "catalog" / "data" / "catalog.json"


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def test_loads_with_version_and_date(cat: Catalog) -> None:
    assert cat.version
    assert cat.date
    assert len(cat.rows) > 900
    assert load_catalog() is cat  # cached


def test_rows_are_well_formed(cat: Catalog) -> None:
    for row in cat.rows:
        assert row.accelerator in CANONICAL_NAMES, row
        assert row.count > 0, row
        assert row.price is not None or row.spot_price is not None, row
        assert row.price is None or row.price >= 0, row
        assert row.spot_price is None or row.spot_price >= 0, row
        assert row.source, row
        assert cat.jurisdiction(row.region) in JURISDICTIONS, row
        assert cat.regions[row.region].provider == row.provider, row


def test_rows_are_unique_and_sorted(cat: Catalog) -> None:
    keys = [(r.provider, r.region, r.zone or "", r.instance_type) for r in cat.rows]
    assert keys == sorted(set(keys))


@pytest.mark.parametrize(
    ("cloud", "accelerators"),
    [
        ("aws", {"H100", "A10G", "T4", "L4", "L40S", "Trainium"}),
        ("gcp", {"H100", "TPU-v6e", "TPU-v5e", "TPU-v5p", "L4"}),
        ("azure", {"H100", "A100-80GB"}),
        ("coreweave", {"H100", "H200", "B200", "GB200"}),
        ("oci", {"H100", "H200", "B200", "GB200", "A100-80GB", "MI300X", "A10"}),
    ],
)
def test_cloud_has_accelerators(cat: Catalog, cloud: str, accelerators: set[str]) -> None:
    have = {row.accelerator for row in cat.rows if row.provider == cloud}
    assert accelerators <= have


def test_providers(cat: Catalog) -> None:
    assert {"aws", "gcp", "azure", "coreweave", "oci"} <= set(cat.providers())


def test_oci_prices_a_shape_the_same_in_every_region(cat: Catalog) -> None:
    rows = [r for r in cat.rows if r.provider == "oci"]
    regions = {r.region for r in rows}
    assert len(regions) > 10
    by_shape: dict[str, set[tuple[float | None, float | None]]] = {}
    for row in rows:
        by_shape.setdefault(row.instance_type, set()).add((row.price, row.spot_price))
        assert row.zone is None  # the adapter places on an availability domain itself
    assert all(len(prices) == 1 for prices in by_shape.values()), by_shape
    # Every shape is listed in every region: the tenancy narrows them, not the catalog.
    assert {len({r.region for r in rows if r.instance_type == s}) for s in by_shape} == {
        len(regions)
    }
    assert by_shape["BM.GPU.H100.8"] == {(80.0, None)}
    # Preemptible capacity exists for VM shapes only (bare metal has none).
    assert by_shape["VM.GPU3.1"] == {(2.95, 1.475)}
    assert all(s.startswith("VM.") for s, p in by_shape.items() if next(iter(p))[1] is not None)


@pytest.mark.parametrize(
    ("region", "jurisdiction"),
    [
        ("us-east-1", "US"),
        ("eu-west-2", "UK"),
        ("europe-west2", "UK"),
        ("europe-west6", "CH"),
        ("me-west1", "IL"),
        ("me-central-1", "AE"),
        ("me-central2", "SA"),
        ("europe-west4", "EU"),
        ("US-EAST-04", "US"),
        ("us-ashburn-1", "US"),
        ("uk-london-1", "UK"),
        ("me-jeddah-1", "SA"),
        ("af-johannesburg-1", "ZA"),
        ("nowhere-1", None),
    ],
)
def test_jurisdiction(cat: Catalog, region: str, jurisdiction: str | None) -> None:
    assert cat.jurisdiction(region) == jurisdiction


def test_latency_symmetric(cat: Catalog) -> None:
    names = sorted(cat.regions)
    for a in names[::5]:
        for b in names[::7]:
            assert cat.latency_ms(a, b) == cat.latency_ms(b, a)


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        ("us-east-1", "us-east-1", 2.0, 2.0),
        ("us-east-1", "us-east4", 2.0, 3.0),  # both Ashburn
        ("us-east-1", "eastus", 2.0, 10.0),
        ("us-east-1", "eu-west-1", 50.0, 120.0),
        ("us-west-2", "ap-northeast-1", 100.0, 200.0),
        ("europe-west4", "ap-southeast-2", 200.0, 400.0),
    ],
)
def test_latency_ranges(cat: Catalog, a: str, b: str, low: float, high: float) -> None:
    rtt = cat.latency_ms(a, b)
    assert rtt is not None
    assert low <= rtt <= high


def test_latency_unknown_region(cat: Catalog) -> None:
    assert cat.latency_ms("us-east-1", "nowhere-1") is None
    assert cat.latency_ms("nowhere-1", "nowhere-1") is None


def test_offers_fields(cat: Catalog) -> None:
    offers = cat.offers("aws", fleet_name="aws-prod")
    assert len(offers) == sum(1 for r in cat.rows if r.provider == "aws")
    for offer in offers:
        assert offer.provider == "aws-prod"
        assert offer.catalog_version == cat.version
        assert offer.jurisdiction == cat.jurisdiction(offer.region)
        assert offer.capacity is None
    assert {o.provider for o in cat.offers("gcp")} == {"gcp"}


def test_capacity_precedence(cat: Catalog) -> None:
    p5 = [r for r in cat.rows if r.provider == "aws" and r.instance_type == "p5.48xlarge"]
    assert len(p5) >= 3
    zone_row = next(r for r in p5 if r.region == "us-east-1")
    region_row = next(r for r in p5 if r.region == "us-east-1" and r is not zone_row)
    other = next(r for r in p5 if r.region != "us-east-1")
    capacity = {
        "p5.48xlarge": 1,
        "us-east-1/p5.48xlarge": 2,
        f"{zone_row.zone}/p5.48xlarge": 3,
    }
    got = {
        (o.region, o.zone): o.capacity
        for o in cat.offers("aws", capacity=capacity)
        if o.instance_type == "p5.48xlarge"
    }
    assert got[(zone_row.region, zone_row.zone)] == 3
    assert got[(region_row.region, region_row.zone)] == 2
    assert got[(other.region, other.zone)] == 1
    untouched = [
        o for o in cat.offers("aws", capacity=capacity) if o.instance_type == "p4d.24xlarge"
    ]
    assert untouched and all(o.capacity is None for o in untouched)


def test_capacity_region_key_for_zoneless_rows(cat: Catalog) -> None:
    offers = cat.offers("coreweave", capacity={"US-WEST-01/cw-hgx-h100-8x": 4})
    got = {(o.region, o.instance_type): o.capacity for o in offers}
    assert got[("US-WEST-01", "cw-hgx-h100-8x")] == 4
    assert got[("US-EAST-04", "cw-hgx-h100-8x")] is None


@pytest.mark.parametrize(("cloud", "hint"), [("gpc", "gcp"), ("azur", "azure"), ("oracle", None)])
def test_unknown_cloud(cat: Catalog, cloud: str, hint: str | None) -> None:
    with pytest.raises(ValueError, match=f"unknown cloud '{cloud}'") as err:
        cat.offers(cloud)
    if hint:
        assert f"did you mean '{hint}'" in str(err.value)


def test_build_reproduces_committed_json(tmp_path: Path) -> None:
    if not PRICES.is_dir():
        pytest.skip(f"{PRICES} not present")
    out = tmp_path / "catalog.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "build_catalog.py"),
            "--prices",
            str(PRICES),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == COMMITTED.read_bytes()
