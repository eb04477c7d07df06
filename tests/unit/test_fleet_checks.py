"""Cross-file checks: typos that would otherwise be dropped silently get a clear error."""

from __future__ import annotations

import pytest

from multicloud.errors import SpecError
from multicloud.fleet import plan_fleet
from multicloud.specs import check_against_fleet, parse_fleet, parse_jobs

FLEET = """
providers:
  aws: {adapter: sim, catalog: builtin}
contracts:
  reservations:
    - {name: blk, provider: aws, region: us-east-1, instance_type: %s, nodes: 2}
"""


@pytest.mark.parametrize(
    ("instance_type", "error"),
    [
        ("p5.48xlarge", None),
        ("p5.48xlarg", "did you mean 'p5.48xlarge'?"),
    ],
)
def test_reservation_instance_type_must_exist(instance_type: str, error: str | None) -> None:
    fleet = parse_fleet(FLEET % instance_type, "fleet.yaml")
    jobs = parse_jobs("name: a\nresources: {accelerator: H100, count: 8}\n")
    if error is None:
        plan = plan_fleet(jobs, fleet)
        assert plan.placements[0].offer.reservation == "blk"
        return
    with pytest.raises(SpecError) as exc:
        plan_fleet(jobs, fleet)
    assert "contracts.reservations[0].instance_type" in exc.value.render()
    assert error in exc.value.render()


@pytest.mark.parametrize(
    ("region", "error"),
    [("us-east-1", None), ("us-east-11", "unknown region 'us-east-11'")],
)
def test_regions_near_must_be_known(region: str, error: str | None) -> None:
    fleet = parse_fleet("providers: {aws: {adapter: sim, catalog: builtin}}\n")
    jobs = parse_jobs(
        "name: s\nkind: inference\nresources: {accelerator: L4}\n"
        f"serving: {{replicas: 1, regions_near: [{region}], max_latency_ms: 50}}\n"
    )
    if error is None:
        check_against_fleet(jobs, fleet, "jobs.yaml")
        return
    with pytest.raises(SpecError, match=error) as exc:
        check_against_fleet(jobs, fleet, "jobs.yaml")
    assert "job 's'.serving.regions_near[0]" in exc.value.render()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: a\nresources: {accelerator: H100}\nplacement: {regions: ['']}\n",
         "placement.regions"),
        ("name: a\nresources: {accelerator: H100}\nplacement: {regions: ['us-*', ' ']}\n",
         "placement.regions"),
        ("name: a\nresources: {accelerator: H100}\nplacement: {regions: ['us east']}\n",
         "placement.regions"),
    ],
)
def test_a_region_glob_that_can_never_match_is_refused(text: str, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_jobs(text, "jobs.yaml")
    assert f"jobs.yaml: {field}" in exc.value.render()
    assert "region glob" in exc.value.render()


def test_an_empty_provider_region_glob_is_refused() -> None:
    with pytest.raises(SpecError, match="region glob cannot be empty") as exc:
        parse_fleet("providers: {aws: {adapter: sim, catalog: builtin, regions: ['']}}\n", "f.yaml")
    assert "providers.aws.regions" in exc.value.render()
