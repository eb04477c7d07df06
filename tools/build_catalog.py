"""Build the compact price catalog shipped inside the ``multicloud`` package.

Reads the public price tables in ``shared/data/prices/*.csv`` (see the README there for the
origin and meaning of every file and column), adds a small, clearly separated table of list
prices those files lack, and writes ``multicloud/catalog/data/catalog.json``. The installed
package reads only that JSON, never ``shared/``.

Usage::

    python tools/build_catalog.py [--prices DIR] [--out PATH]

The output is deterministic (sorted rows and keys), so re-running against the same inputs
reproduces the committed file byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Running as `python tools/build_catalog.py` puts tools/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from multicloud.accelerators import canonical  # noqa: E402
from multicloud.catalog import COLUMNS  # noqa: E402
from multicloud.catalog import CatalogRow as Row  # noqa: E402
from multicloud.models import JURISDICTIONS  # noqa: E402

VERSION = "2026.12.06"
DATE = "2026-12-06"
DEFAULT_PRICES = REPO_ROOT.parent / "shared" / "data" / "prices"
DEFAULT_OUT = REPO_ROOT / "multicloud" / "catalog" / "data" / "catalog.json"


LATENCY_MODEL = (
    "Estimates, not measurements: round-trip time between two regions is derived at load "
    "time from the great-circle distance between the approximate metro coordinates in "
    "'regions': rtt_ms = round(2 * distance_km * 1.5 / 200 + 2, 1) (light in fibre ~200 km/ms, "
    "1.5x path inflation, 2 ms floor; the same region gives 2.0)."
)

SOURCES = (
    "skypilot-catalog v8 (github.com/skypilot-org/skypilot-catalog catalogs/v8/{aws,gcp}/vms.csv), "
    "transcribed in shared/data/prices/{aws_gpu,gcp_gpu_tpu}.csv",
    "skypilot-catalog v8 fork coopslarhette/skypilot-catalog catalogs/v8/azure/vms.csv "
    "(US regions), transcribed in shared/data/prices/azure_gpu.csv",
    "CoreWeave list prices, https://www.coreweave.com/pricing read 2026-09-20 via "
    "github.com/api-evangelist/coreweave, transcribed in "
    "shared/data/prices/neocloud_list_prices.csv",
    "AWS EC2 on-demand list prices, https://aws.amazon.com/ec2/pricing/on-demand/ "
    "(supplement table in tools/build_catalog.py)",
    "Google Cloud TPU list prices, https://cloud.google.com/tpu/pricing "
    "(supplement table in tools/build_catalog.py)",
    "skypilot-catalog v8 catalogs/v8/oci/vms.csv (commit 0588751), GPU rows, transcribed in "
    "shared/data/prices/oci_gpu.csv; Oracle prices a shape the same in every region",
)

_SRC_AWS = "skypilot-catalog v8 via shared/data/prices/aws_gpu.csv"
_SRC_GCP = "skypilot-catalog v8 via shared/data/prices/gcp_gpu_tpu.csv"
# The CSV's L4 rows price the GPU alone; saying so in the row keeps the under-count visible.
_SRC_GCP_L4 = "skypilot-catalog v8 via shared/data/prices/gcp_gpu_tpu.csv (L4 only, no g2 host VM)"
_SRC_AZURE = "skypilot-catalog v8 (coopslarhette fork) via shared/data/prices/azure_gpu.csv"
_SRC_CW = "coreweave.com/pricing 2026-09-20 via shared/data/prices/neocloud_list_prices.csv"
_SRC_AWS_PAGE = "aws.amazon.com/ec2/pricing/on-demand (Linux list price)"
_SRC_TPU_PAGE = "cloud.google.com/tpu/pricing (on-demand list price per chip-hour)"
_SRC_OCI = "skypilot-catalog v8 via shared/data/prices/oci_gpu.csv (one global price per shape)"

# GCP's L4 rows are named after the accelerator, not the VM; these are the g2 shapes that
# carry 1/2/4/8 L4 GPUs.
_GCP_L4_SHAPES = {1: "g2-standard-4", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"}

COREWEAVE_REGIONS = ("US-EAST-04", "US-WEST-01", "US-CENTRAL-03")

# Oracle publishes one price list for every region, and the source catalog lists every GPU
# shape in every region: where a shape can really be launched is the tenancy's to say (the
# OCI adapter narrows these rows per availability domain with the Compute API's ListShapes).
# These are OCI's large commercial regions, one row per shape in each.
OCI_REGIONS = (
    "us-ashburn-1",
    "us-phoenix-1",
    "us-chicago-1",
    "us-sanjose-1",
    "ca-toronto-1",
    "sa-saopaulo-1",
    "uk-london-1",
    "eu-frankfurt-1",
    "eu-amsterdam-1",
    "ap-tokyo-1",
    "ap-osaka-1",
    "ap-singapore-1",
    "ap-mumbai-1",
    "ap-sydney-1",
    "me-jeddah-1",
    "af-johannesburg-1",
)

# ---------------------------------------------------------------------------------------------
# Supplements: accelerators the vocabulary names but the transcribed CSVs do not cover.
# Only public on-demand list prices (USD per instance-hour) are used; spot is left null because
# spot prices move too often to state without a dated source. Offers are regional (zone null).
# Trainium2 (trn2) is deliberately absent: no on-demand list price could be stated with
# confidence, and a row without any price is not kept.
# ---------------------------------------------------------------------------------------------

# (instance_type, accelerator, count, on-demand USD/h in us-east-1 and us-west-2)
_AWS_SUPPLEMENT: tuple[tuple[str, str, int, float], ...] = (
    ("g4dn.xlarge", "T4", 1, 0.526),
    ("g4dn.12xlarge", "T4", 4, 3.912),
    ("g4dn.metal", "T4", 8, 7.824),
    ("g5.xlarge", "A10G", 1, 1.006),
    ("g5.12xlarge", "A10G", 4, 5.672),
    ("g5.48xlarge", "A10G", 8, 16.288),
    ("g6.xlarge", "L4", 1, 0.8048),
    ("g6.12xlarge", "L4", 4, 4.6016),
    ("g6.48xlarge", "L4", 8, 13.3504),
    ("g6e.xlarge", "L40S", 1, 1.861),
    ("g6e.12xlarge", "L40S", 4, 10.493),
    ("g6e.48xlarge", "L40S", 8, 30.131),
    ("trn1.2xlarge", "Trainium", 1, 1.34375),
    ("trn1.32xlarge", "Trainium", 16, 21.50),
    ("inf2.xlarge", "Inferentia2", 1, 0.7582),
    ("inf2.48xlarge", "Inferentia2", 12, 12.98112),
)
# AWS charges the same list price for these families in both of these US regions.
_AWS_SUPPLEMENT_REGIONS = ("us-east-1", "us-west-2")

# (slice name, accelerator, chips, on-demand USD per chip-hour in us-central1)
# v5p slice names count TensorCores (2 per chip), so v5p-8 is 4 chips.
_TPU_SUPPLEMENT: tuple[tuple[str, str, int, float], ...] = (
    ("tpu-v5litepod-1", "TPU-v5e", 1, 1.20),
    ("tpu-v5litepod-4", "TPU-v5e", 4, 1.20),
    ("tpu-v5litepod-8", "TPU-v5e", 8, 1.20),
    ("tpu-v5litepod-16", "TPU-v5e", 16, 1.20),
    ("tpu-v5p-8", "TPU-v5p", 4, 4.20),
    ("tpu-v5p-16", "TPU-v5p", 8, 4.20),
    ("tpu-v5p-32", "TPU-v5p", 16, 4.20),
)
_TPU_SUPPLEMENT_REGIONS = ("us-central1",)

# ---------------------------------------------------------------------------------------------
# Region table. Coordinates are approximate metro locations of each cloud region from public
# knowledge (the city or data-centre town the provider names), good enough for the
# great-circle latency estimate and nothing finer. CoreWeave's three region placements are the
# least certain: they stand for an east-coast, a west and a central US site.
# ---------------------------------------------------------------------------------------------

# region: (provider, jurisdiction, lat, lon)
REGIONS: dict[str, tuple[str, str, float, float]] = {
    # AWS
    "us-east-1": ("aws", "US", 39.04, -77.49),  # Northern Virginia (Ashburn)
    "us-east-2": ("aws", "US", 39.96, -83.00),  # Ohio (Columbus)
    "us-west-1": ("aws", "US", 37.35, -121.96),  # Northern California (San Jose)
    "us-west-2": ("aws", "US", 45.84, -119.70),  # Oregon (Boardman)
    "ca-central-1": ("aws", "CA", 45.50, -73.57),  # Montreal
    "eu-central-1": ("aws", "EU", 50.11, 8.68),  # Frankfurt
    "eu-north-1": ("aws", "EU", 59.33, 18.07),  # Stockholm
    "eu-south-2": ("aws", "EU", 41.65, -0.88),  # Aragón (Zaragoza)
    "eu-west-1": ("aws", "EU", 53.35, -6.26),  # Ireland (Dublin)
    "eu-west-2": ("aws", "UK", 51.51, -0.13),  # London
    "me-central-1": ("aws", "AE", 24.45, 54.38),  # UAE
    "ap-northeast-1": ("aws", "JP", 35.68, 139.77),  # Tokyo
    "ap-northeast-2": ("aws", "KR", 37.57, 126.98),  # Seoul
    "ap-south-1": ("aws", "IN", 19.08, 72.88),  # Mumbai
    "ap-southeast-1": ("aws", "SG", 1.35, 103.82),  # Singapore
    "ap-southeast-2": ("aws", "AU", -33.87, 151.21),  # Sydney
    "ap-southeast-3": ("aws", "ID", -6.21, 106.85),  # Jakarta
    # GCP
    "us-central1": ("gcp", "US", 41.26, -95.86),  # Council Bluffs, Iowa
    "us-central2": ("gcp", "US", 36.31, -95.32),  # Pryor, Oklahoma (TPU region)
    "us-east1": ("gcp", "US", 33.20, -80.01),  # Moncks Corner, South Carolina
    "us-east4": ("gcp", "US", 39.04, -77.49),  # Ashburn, Virginia
    "us-east5": ("gcp", "US", 39.96, -83.00),  # Columbus, Ohio
    "us-south1": ("gcp", "US", 32.78, -96.80),  # Dallas
    "us-west1": ("gcp", "US", 45.60, -121.18),  # The Dalles, Oregon
    "us-west2": ("gcp", "US", 34.05, -118.24),  # Los Angeles
    "us-west3": ("gcp", "US", 40.76, -111.89),  # Salt Lake City
    "us-west4": ("gcp", "US", 36.17, -115.14),  # Las Vegas
    "northamerica-northeast1": ("gcp", "CA", 45.50, -73.57),  # Montreal
    "northamerica-northeast2": ("gcp", "CA", 43.65, -79.38),  # Toronto
    "southamerica-east1": ("gcp", "BR", -23.55, -46.63),  # São Paulo
    "southamerica-west1": ("gcp", "CL", -33.45, -70.67),  # Santiago
    "europe-north1": ("gcp", "EU", 60.57, 27.20),  # Hamina, Finland
    "europe-west1": ("gcp", "EU", 50.45, 3.82),  # St. Ghislain, Belgium
    "europe-west2": ("gcp", "UK", 51.51, -0.13),  # London
    "europe-west3": ("gcp", "EU", 50.11, 8.68),  # Frankfurt
    "europe-west4": ("gcp", "EU", 53.44, 6.83),  # Eemshaven, Netherlands
    "europe-west6": ("gcp", "CH", 47.38, 8.54),  # Zurich
    "europe-west9": ("gcp", "EU", 48.86, 2.35),  # Paris
    "me-central2": ("gcp", "SA", 26.43, 50.10),  # Dammam
    "me-west1": ("gcp", "IL", 32.09, 34.78),  # Tel Aviv
    "asia-east1": ("gcp", "TW", 24.05, 120.52),  # Changhua County, Taiwan
    "asia-northeast1": ("gcp", "JP", 35.68, 139.77),  # Tokyo
    "asia-northeast3": ("gcp", "KR", 37.57, 126.98),  # Seoul
    "asia-south1": ("gcp", "IN", 19.08, 72.88),  # Mumbai
    "asia-south2": ("gcp", "IN", 28.61, 77.21),  # Delhi
    "asia-southeast1": ("gcp", "SG", 1.35, 103.70),  # Jurong West, Singapore
    "australia-southeast1": ("gcp", "AU", -33.87, 151.21),  # Sydney
    # Azure
    "eastus": ("azure", "US", 37.37, -79.82),  # Virginia
    "eastus2": ("azure", "US", 36.67, -78.39),  # Virginia (Boydton)
    "centralus": ("azure", "US", 41.59, -93.62),  # Iowa (Des Moines)
    "northcentralus": ("azure", "US", 41.88, -87.63),  # Illinois (Chicago)
    "southcentralus": ("azure", "US", 29.42, -98.49),  # Texas (San Antonio)
    "westus": ("azure", "US", 37.78, -122.42),  # California (San Francisco)
    "westus2": ("azure", "US", 47.23, -119.85),  # Washington (Quincy)
    "westus3": ("azure", "US", 33.45, -112.07),  # Arizona (Phoenix)
    # CoreWeave (placement approximate, see above)
    "US-EAST-04": ("coreweave", "US", 39.04, -77.49),  # Northern Virginia
    "US-WEST-01": ("coreweave", "US", 36.17, -115.14),  # Las Vegas
    "US-CENTRAL-03": ("coreweave", "US", 41.88, -87.63),  # Chicago
    # Oracle Cloud (OCI)
    "us-ashburn-1": ("oci", "US", 39.04, -77.49),  # Ashburn, Virginia
    "us-phoenix-1": ("oci", "US", 33.45, -112.07),  # Phoenix
    "us-chicago-1": ("oci", "US", 41.88, -87.63),  # Chicago
    "us-sanjose-1": ("oci", "US", 37.34, -121.89),  # San Jose
    "ca-toronto-1": ("oci", "CA", 43.65, -79.38),  # Toronto
    "sa-saopaulo-1": ("oci", "BR", -23.55, -46.63),  # São Paulo
    "uk-london-1": ("oci", "UK", 51.51, -0.13),  # London
    "eu-frankfurt-1": ("oci", "EU", 50.11, 8.68),  # Frankfurt
    "eu-amsterdam-1": ("oci", "EU", 52.37, 4.90),  # Amsterdam
    "ap-tokyo-1": ("oci", "JP", 35.68, 139.77),  # Tokyo
    "ap-osaka-1": ("oci", "JP", 34.69, 135.50),  # Osaka
    "ap-singapore-1": ("oci", "SG", 1.35, 103.82),  # Singapore
    "ap-mumbai-1": ("oci", "IN", 19.08, 72.88),  # Mumbai
    "ap-sydney-1": ("oci", "AU", -33.87, 151.21),  # Sydney
    "me-jeddah-1": ("oci", "SA", 21.49, 39.19),  # Jeddah
    "af-johannesburg-1": ("oci", "ZA", -26.20, 28.05),  # Johannesburg
}


def _sort_key(row: Row) -> tuple[str, str, str, str]:
    """Return the key rows are sorted and deduplicated by."""
    return (row.provider, row.region, row.zone or "", row.instance_type)


def _as_list(row: Row) -> list[object]:
    """Return the row as a JSON array in ``COLUMNS`` order."""
    return [getattr(row, name) for name in COLUMNS]


def _price(cell: str | None) -> float | None:
    text = (cell or "").strip()
    return float(text) if text else None


def _canonical_or_none(name: str) -> str | None:
    try:
        return canonical(name)
    except ValueError:
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cloud_rows(path: Path, source: str) -> Iterator[Row]:
    """Yield the usable rows of one of the per-cloud CSVs (aws/gcp/azure)."""
    for rec in _read_csv(path):
        accelerator = _canonical_or_none(rec["accelerator_name"])
        price = _price(rec["price_per_hour"])
        spot = _price(rec["spot_price_per_hour"])
        if accelerator is None or (price is None and spot is None):
            continue
        cloud = rec["cloud"].strip()
        count = int(rec["accelerator_count"])
        instance_type = rec["instance_type"].strip()
        row_source = source
        if rec["price_basis"].strip() == "accelerator_only":
            instance_type = _GCP_L4_SHAPES[count]
            row_source = _SRC_GCP_L4
        if cloud == "azure" and spot is not None and spot == price:
            # The Azure catalog copies on-demand into the spot column where there is no
            # spot offering (shared README); a "spot" market at full price would be a lie.
            spot = None
        yield Row(
            provider=cloud,
            region=rec["region"].strip(),
            zone=rec["availability_zone"].strip() or None,
            instance_type=instance_type,
            accelerator=accelerator,
            count=count,
            price=price,
            spot_price=spot,
            source=row_source,
        )


def _coreweave_instance_type(sku: str, accelerator: str, count: int) -> str:
    family = "hgx-" if "HGX" in sku else ""
    return f"cw-{family}{accelerator.lower()}-{count}x"


def _coreweave_rows(path: Path) -> Iterator[Row]:
    """Yield CoreWeave list prices, one row per CoreWeave region (same price in each)."""
    for rec in _read_csv(path):
        if rec["provider"].strip() != "CoreWeave":
            continue
        accelerator = _canonical_or_none(rec["accelerator_name"])
        price = _price(rec["price_per_hour_instance"])
        spot = _price(rec["spot_price_per_hour_instance"])
        if accelerator is None or (price is None and spot is None):
            continue
        count = int(rec["accelerator_count"])
        instance_type = _coreweave_instance_type(rec["sku"], accelerator, count)
        for region in COREWEAVE_REGIONS:
            yield Row(
                "coreweave", region, None, instance_type, accelerator, count, price, spot, _SRC_CW
            )


def _oci_rows(path: Path) -> Iterator[Row]:
    """Yield Oracle's shapes, one row per OCI region (one global price per shape).

    Shapes whose accelerator the vocabulary does not know yet are skipped, as in every
    other table.
    """
    for rec in _read_csv(path):
        accelerator = _canonical_or_none(rec["accelerator"])
        price = _price(rec["price_per_hour_usd"])
        spot = _price(rec["spot_price_per_hour_usd"])
        if accelerator is None or (price is None and spot is None):
            continue
        count = int(rec["accelerator_count"])
        for region in OCI_REGIONS:
            yield Row(
                "oci", region, None, rec["shape"].strip(), accelerator, count, price, spot, _SRC_OCI
            )


def _supplement_rows() -> Iterator[Row]:
    """Yield the hand-maintained supplement rows (see the tables above)."""
    for region in _AWS_SUPPLEMENT_REGIONS:
        for instance_type, acc, count, price in _AWS_SUPPLEMENT:
            yield Row(
                "aws",
                region,
                None,
                instance_type,
                canonical(acc),
                count,
                price,
                None,
                _SRC_AWS_PAGE,
            )
    for region in _TPU_SUPPLEMENT_REGIONS:
        for instance_type, acc, chips, per_chip in _TPU_SUPPLEMENT:
            yield Row(
                "gcp",
                region,
                None,
                instance_type,
                canonical(acc),
                chips,
                round(per_chip * chips, 6),
                None,
                _SRC_TPU_PAGE,
            )


def collect_rows(prices: Path) -> list[Row]:
    """Read every input and return the deduplicated, sorted catalog rows.

    Args:
        prices: The folder holding the price CSVs.

    Returns:
        Rows sorted by (provider, region, zone, instance_type), one per key; on a repeated
        key the first row read wins (CSV rows before supplements).

    Raises:
        FileNotFoundError: If an expected CSV is missing.
        ValueError: If a row names a region absent from the region table.
    """
    sources: Iterable[Row] = [
        *_cloud_rows(prices / "aws_gpu.csv", _SRC_AWS),
        *_cloud_rows(prices / "gcp_gpu_tpu.csv", _SRC_GCP),
        *_cloud_rows(prices / "azure_gpu.csv", _SRC_AZURE),
        *_coreweave_rows(prices / "neocloud_list_prices.csv"),
        *_oci_rows(prices / "oci_gpu.csv"),
        *_supplement_rows(),
    ]
    unique: dict[tuple[str, str, str, str], Row] = {}
    for row in sources:
        if row.region not in REGIONS:
            raise ValueError(f"region '{row.region}' ({row.provider}) is not in REGIONS")
        if REGIONS[row.region][0] != row.provider:
            raise ValueError(
                f"region '{row.region}' belongs to {REGIONS[row.region][0]}, not {row.provider}"
            )
        unique.setdefault(_sort_key(row), row)
    return [unique[key] for key in sorted(unique)]


def render(rows: list[Row]) -> str:
    """Serialise the catalog deterministically, one row per line for readable diffs.

    Args:
        rows: Sorted catalog rows.

    Returns:
        The JSON text, ending in a newline.

    Raises:
        ValueError: If a region has a jurisdiction outside ``JURISDICTIONS``.
    """
    used = sorted({row.region for row in rows})
    regions: dict[str, dict[str, object]] = {}
    for name in used:
        provider, jurisdiction, lat, lon = REGIONS[name]
        if jurisdiction not in JURISDICTIONS:
            raise ValueError(f"region '{name}' has unknown jurisdiction '{jurisdiction}'")
        regions[name] = {"provider": provider, "jurisdiction": jurisdiction, "lat": lat, "lon": lon}

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    head = {
        "version": VERSION,
        "date": DATE,
        "sources": list(SOURCES),
        "latency_model": LATENCY_MODEL,
        "columns": list(COLUMNS),
    }
    lines = ["{"]
    lines.extend(f"{dump(key)}:{dump(value)}," for key, value in head.items())
    lines.append('"rows":[')
    lines.append(",\n".join(dump(_as_list(row)) for row in rows))
    lines.append("],")
    lines.append('"regions":{')
    lines.append(",\n".join(f"{dump(name)}:{dump(info)}" for name, info in regions.items()))
    lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build the catalog JSON and print a per-provider summary.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--prices",
        type=Path,
        default=DEFAULT_PRICES,
        help="folder with the price CSVs (default: ../shared/data/prices)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output JSON path (default: multicloud/catalog/data/catalog.json)",
    )
    args = parser.parse_args(argv)

    rows = collect_rows(args.prices)
    text = render(rows)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    # newline="" keeps "\n" on every platform, so the bytes match the committed file.
    with out.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)

    per_provider = Counter(row.provider for row in rows)
    print(f"wrote {out} ({len(rows)} rows, {len(text.encode())} bytes)")
    for provider, n in sorted(per_provider.items()):
        print(f"  {provider:10s} {n:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
