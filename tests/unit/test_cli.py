"""Tests of the ``multicloud`` command line, the shipped demo, the examples and the README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multicloud.cli import app
from multicloud.demo import DEMO_NOW, demo_paths, single_cloud_baselines, single_cloud_fleet
from multicloud.specs import check_against_fleet, load_fleet, load_jobs, parse_fleet, parse_jobs

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

# Node prices of the small fleet below, so that tests can recompute what the plan bills.
NODE_PRICE = {
    "p5.48xlarge": 98.32,
    "a3-highgpu-8g": 88.0,
    "Standard_ND96isr_H100_v5": 95.0,
    "g6.xlarge": 0.8,
}

FLEET = """\
providers:
  aws:
    adapter: sim
    offers:
      - {region: us-east-1, instance_type: p5.48xlarge, accelerator: H100, count: 8,
         price: 98.32, spot_price: 39.3, capacity: 4}
      - {region: us-east-1, instance_type: g6.xlarge, accelerator: L4, count: 1, price: 0.8}
  gcp:
    adapter: sim
    offers:
      - {region: us-central1, zone: us-central1-a, instance_type: a3-highgpu-8g,
         accelerator: H100, count: 8, price: 88.0, capacity: 2}
  azure:
    adapter: sim
    offers:
      - {region: eastus, instance_type: Standard_ND96isr_H100_v5, accelerator: H100, count: 8,
         price: 95.0, capacity: 2}
contracts:
  rofr: {holders: [azure], tolerance: 0.1}
"""

JOB_A = """\
name: train-a
resources: {accelerator: H100, count: 8, nodes: 2}
duration_hours: 3
"""
JOB_B = """\
name: notebook-b
resources: {accelerator: L4}
duration_hours: 2.5
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def without_cloud_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the first-party adapters `./dev setup` installs, as on a core-only install."""
    from multicloud import providers as registry

    installed = registry._entry_points()
    monkeypatch.setattr(
        registry,
        "_entry_points",
        lambda: {n: ep for n, ep in installed.items() if n not in registry.INSTALL_HINTS},
    )


def run(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def plan_json(tmp_path: Path, jobs_text: str, fleet_text: str = FLEET) -> dict[str, Any]:
    jobs = write(tmp_path, "jobs.yaml", jobs_text)
    fleet = write(tmp_path, "fleet.yaml", fleet_text)
    result = run("plan", jobs, "--fleet", fleet, "--json")
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


# ---- plan ------------------------------------------------------------------------------------


def test_plan_json_is_exactly_the_plan_document(tmp_path: Path) -> None:
    doc = plan_json(tmp_path, JOB_A + "---\n" + JOB_B)
    assert set(doc) == {"placements", "unplaced", "audit", "total_cost", "stats"}
    durations = {"train-a": 3.0, "notebook-b": 2.5}
    assert {p["job"] for p in doc["placements"]} == set(durations)
    for p in doc["placements"]:
        assert {
            "job", "provider", "region", "zone", "instance_type", "accelerator", "nodes",
            "market", "price_per_hour", "cost", "rofr",
        } <= set(p)
        node_price = NODE_PRICE[p["instance_type"]]
        if p["rofr"] is not None and p["rofr"]["outcome"] == "accepted":
            audit = [e for e in doc["audit"] if e["job"] == p["job"]]
            node_price = audit[-1]["billed_price_per_hour"] / (p["nodes"] // p["replicas"])
        assert p["price_per_hour"] == pytest.approx(p["nodes"] * node_price, abs=1e-3)
        assert p["cost"] == pytest.approx(p["price_per_hour"] * durations[p["job"]], abs=1e-3)
    assert doc["total_cost"] == pytest.approx(sum(p["cost"] for p in doc["placements"]), abs=1e-3)


def test_plan_json_shows_the_rofr_answer(tmp_path: Path) -> None:
    # gcp is cheapest (2 × $88 = $176/h); azure's $190/h is within 10%: azure accepts.
    doc = plan_json(tmp_path, JOB_A)
    (placement,) = doc["placements"]
    assert placement["provider"] == "azure"
    assert placement["rofr"] == {
        "holder": "azure",
        "outcome": "accepted",
        "reason": placement["rofr"]["reason"],
        "outside_price_per_hour": 176.0,
    }
    (entry,) = doc["audit"]
    assert (entry["job"], entry["holder"], entry["answer"]) == ("train-a", "azure", "accepted")


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("single job", JOB_A),
        ("multi-document", JOB_A + "---\n" + JOB_B),
        ("jobs list", "jobs:\n" + "".join(
            "  - " + doc.replace("\n", "\n    ").rstrip() + "\n" for doc in (JOB_A, JOB_B)
        )),
    ],
)
def test_plan_accepts_every_job_file_form(tmp_path: Path, form: str, text: str) -> None:
    doc = plan_json(tmp_path, text)
    names = {p["job"] for p in doc["placements"]} | {u["job"] for u in doc["unplaced"]}
    expected = {"train-a"} if form == "single job" else {"train-a", "notebook-b"}
    assert names == expected


def test_plan_human_output_has_tables_and_explain(tmp_path: Path) -> None:
    jobs = write(tmp_path, "jobs.yaml", JOB_A + "---\n" + JOB_B)
    fleet = write(tmp_path, "fleet.yaml", FLEET)
    result = run("plan", jobs, "--fleet", fleet, "--explain")
    assert result.exit_code == 0, result.stderr
    for text in ("Placements", "ROFR audit", "Total cost", "train-a", "notebook-b", "Why",
                 "ROFR: azure accepted"):
        assert text in result.stdout


def test_plan_defaults_to_the_demo_fleet(tmp_path: Path) -> None:
    jobs = write(tmp_path, "jobs.yaml", JOB_B)
    result = run("plan", jobs, "--json", "--now", "2026-12-01T09:00:00Z")
    assert result.exit_code == 0, result.stderr
    (placement,) = json.loads(result.stdout)["placements"]
    assert placement["provider"] in {"aws", "gcp", "azure", "coreweave", "oci"}


@pytest.mark.parametrize(
    ("placement", "reason"),
    [
        ("{providers: [oci, azure]}", "price: own"),  # OCI's H100 is cheaper than Azure's
        ("{residency: [UK]}", "constraint: placement.residency"),  # only OCI has UK H100s
    ],
)
def test_the_demo_fleet_places_an_h100_gang_on_oci_when_it_is_cheapest(
    tmp_path: Path, placement: str, reason: str
) -> None:
    jobs = write(
        tmp_path,
        "jobs.yaml",
        "name: pretrain\nresources: {accelerator: H100, count: 8, nodes: 2}\n"
        f"duration_hours: 10\nplacement: {placement}\n",
    )
    result = run("plan", jobs, "--json", "--now", "2026-12-01T09:00:00Z")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    (placed,) = plan["placements"]
    assert (placed["provider"], placed["instance_type"]) == ("oci", "BM.GPU.H100.8")
    # The ROFR holder was offered the job with OCI's price as the outside offer, like any other.
    (line,) = plan["audit"]
    assert line["holder"] == "azure" and line["answer"] == "declined"
    assert line["outside_price_per_hour"] == placed["price_per_hour"]
    assert line["reason"].startswith(reason)



@pytest.mark.parametrize(
    ("case", "jobs_text", "fleet_text", "expected"),
    [
        (
            "unknown field with did-you-mean",
            "name: a\nresources: {acelerator: H100}\n",
            FLEET,
            ["jobs.yaml", "resources.acelerator", "did you mean 'accelerator'"],
        ),
        (
            "wrong type",
            "name: a\nresources: {accelerator: H100}\nduration_hours: soon\n",
            FLEET,
            ["jobs.yaml", "duration_hours", "valid number"],
        ),
        (
            "negative count",
            "name: a\nresources: {accelerator: H100, count: -1}\n",
            FLEET,
            ["jobs.yaml", "resources.count", "greater than or equal to 1"],
        ),
        (
            "unknown accelerator",
            "name: a\nresources: {accelerator: H10O}\n",
            FLEET,
            ["jobs.yaml", "resources.accelerator", "did you mean 'H100'"],
        ),
        (
            "unknown provider in placement",
            "name: a\nresources: {accelerator: H100}\nplacement: {providers: [awz]}\n",
            FLEET,
            ["jobs.yaml", "placement.providers[0]", "did you mean 'aws'"],
        ),
        (
            "invalid YAML",
            "name: a\nresources: {accelerator: H100\n",
            FLEET,
            ["jobs.yaml", "line", "not valid YAML"],
        ),
        (
            "unknown adapter in fleet",
            JOB_A,
            "providers:\n  x:\n    adapter: sin\n",
            ["fleet.yaml", "providers.x.adapter", "did you mean 'sim'"],
        ),
        (
            "adapter not installed",
            JOB_A,
            "providers:\n  aws: {}\n",
            ["fleet.yaml", "providers.aws", "pip install multicloud-aws"],
        ),
        (
            "unknown fleet field",
            JOB_A,
            "providers:\n  aws: {adapter: sim, catalog: builtin, capacty: {}}\n",
            ["fleet.yaml", "providers.aws.capacty", "did you mean 'capacity'"],
        ),
        (
            "unknown ROFR holder",
            JOB_A,
            FLEET.replace("holders: [azure]", "holders: [azur]"),
            ["fleet.yaml", "contracts.rofr.holders[0]", "did you mean 'azure'"],
        ),
        (
            "sim cloud not in catalog",
            JOB_A,
            "providers:\n  mycloud: {adapter: sim, catalog: builtin}\n",
            ["fleet.yaml", "providers.mycloud", "unknown cloud 'mycloud'"],
        ),
    ],
)
@pytest.mark.usefixtures("without_cloud_adapters")
def test_bad_input_exits_2_with_one_clear_message(
    tmp_path: Path, case: str, jobs_text: str, fleet_text: str, expected: list[str]
) -> None:
    jobs = write(tmp_path, "jobs.yaml", jobs_text)
    fleet = write(tmp_path, "fleet.yaml", fleet_text)
    result = run("plan", jobs, "--fleet", fleet)
    assert result.exit_code == 2, (case, result.output)
    assert result.stdout == ""
    assert result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, (case, result.stderr)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["plan", "{tmp}/missing.yaml", "--fleet", "{tmp}/fleet.yaml"],
            "missing.yaml: file not found",
        ),
        (["plan", "{tmp}/jobs.yaml", "--fleet", "{tmp}/nope.yaml"], "nope.yaml: file not found"),
        (["plan", "{tmp}/jobs.yaml", "--fleet", "{tmp}/fleet.yaml", "--now", "soon"], "--now"),
        (["offers", "--accelerator", "H10O"], "did you mean 'H100'"),
        (["offers", "--provider", "azur"], "did you mean 'azure'"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    write(tmp_path, "jobs.yaml", JOB_A)
    write(tmp_path, "fleet.yaml", FLEET)
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert "Traceback" not in result.output


# ---- offers ----------------------------------------------------------------------------------


def offers_json(*args: str) -> list[dict[str, Any]]:
    result = run("offers", "--json", *args)
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def _order_key(row: dict[str, Any]) -> tuple[bool, float, float]:
    # Recomputed from the prices: the JSON's per-accelerator price is rounded for display.
    inf = float("inf")
    per = row["price"] / row["count"] if row["price"] is not None else inf
    spot = row["spot_price"] / row["count"] if row["spot_price"] is not None else inf
    return (row["price"] is None, per, spot)


@pytest.mark.parametrize(
    ("args", "check"),
    [
        ((), lambda r: True),
        (("--accelerator", "H100"), lambda r: r["accelerator"] == "H100"),
        (("--accelerator", "h100-sxm"), lambda r: r["accelerator"] == "H100"),
        (("--accelerator", "A100-80GB", "--provider", "gcp"),
         lambda r: r["accelerator"] == "A100-80GB" and r["provider"] == "gcp"),
        (("--provider", "coreweave", "--region", "us-east*"),
         lambda r: r["provider"] == "coreweave" and r["region"] == "US-EAST-04"),
        (("--region", "europe-*"), lambda r: r["region"].startswith("europe-")),
    ],
)
def test_offers_filter_and_order(args: tuple[str, ...], check: Any) -> None:
    rows = offers_json(*args)
    assert rows
    assert all(check(r) for r in rows)
    keys = [_order_key(r) for r in rows]
    assert keys == sorted(keys)
    for r in rows:
        if r["price"] is not None:
            per = r["price"] / r["count"]
            assert r["price_per_accelerator_hour"] == pytest.approx(per, abs=1e-4)


def test_offers_json_fields_and_limit() -> None:
    rows = offers_json("--limit", "3")
    assert len(rows) == 3
    assert set(rows[0]) == {
        "provider", "region", "zone", "instance_type", "accelerator", "count", "price",
        "spot_price", "price_per_accelerator_hour",
    }


def test_offers_rows_without_on_demand_price_come_last() -> None:
    rows = offers_json("--accelerator", "H200", "--provider", "aws")
    priced = [r["price"] is not None for r in rows]
    assert True in priced and False in priced
    assert priced == sorted(priced, reverse=True)


def test_offers_table() -> None:
    result = run("offers", "--accelerator", "H100", "--limit", "5")
    assert result.exit_code == 0
    assert "cheapest per accelerator-hour first" in result.stdout
    assert "$/accel-h" in result.stdout


# ---- schema, providers, version -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields"),
    [("job", {"name", "resources", "placement", "serving"}), ("fleet", {"providers", "contracts"})],
)
def test_schema_is_json_schema(kind: str, fields: set[str]) -> None:
    result = run("schema", kind)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert fields <= set(doc["properties"])


def test_schema_rejects_unknown_kind() -> None:
    result = run("schema", "jobs")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("without_cloud_adapters")
def test_providers_lists_sim() -> None:
    result = run("providers", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["sim"]["installed"] is True
    assert rows["aws"]["installed"] is False
    assert "pip install multicloud-aws" in rows["aws"]["install"]
    table = run("providers")
    assert table.exit_code == 0 and "sim" in table.stdout


def test_providers_lists_installed_cloud_adapters() -> None:
    from multicloud import providers as registry

    installed = sorted(set(registry._entry_points()) & set(registry.INSTALL_HINTS))
    if not installed:
        pytest.skip("no first-party cloud adapter installed (run ./dev setup)")
    rows = {r["name"]: r for r in json.loads(run("providers", "--json").stdout)}
    for name in installed:
        assert rows[name]["installed"] is True, rows[name]


def test_version() -> None:
    from multicloud import __version__

    result = run("version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


# ---- demo ------------------------------------------------------------------------------------


def test_demo_plan_only_prints_plan_audit_and_baseline() -> None:
    result = run("demo", "--plan-only")
    assert result.exit_code == 0, result.stderr
    for text in ("Placements", "ROFR audit", "single-cloud baseline", "aws only",
                 "coreweave only", "not comparable"):
        assert text in result.stdout


def test_demo_json_baselines_cover_every_cloud() -> None:
    result = run("demo", "--plan-only", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [b["provider"] for b in doc["baselines"]] == [
        "aws", "gcp", "azure", "coreweave", "oci"
    ]
    assert doc["plan"]["audit"]
    placed = {p["job"] for p in doc["plan"]["placements"]}
    # The point of the demo: more jobs fit on five clouds than on any one of them.
    assert all(b["placed"] < len(placed) for b in doc["baselines"])


def test_demo_workload_is_realistic() -> None:
    jobs_path, fleet_path = demo_paths()
    jobs = load_jobs(jobs_path)
    fleet = load_fleet(fleet_path)
    check_against_fleet(jobs, fleet, str(jobs_path))
    kinds = [j.kind.value for j in jobs]
    assert kinds.count("training") >= 4 and kinds.count("inference") >= 3
    assert any(j.placement.residency for j in jobs)
    assert any(j.market.value in ("spot", "any") for j in jobs)
    assert fleet.contracts.rofr is not None and fleet.contracts.rofr.holders == ("azure",)
    assert fleet.contracts.reservations and fleet.contracts.commitments


def test_single_cloud_fleet_keeps_own_contracts_and_drops_rofr() -> None:
    _, fleet_path = demo_paths()
    fleet = load_fleet(fleet_path)
    aws = single_cloud_fleet(fleet, "aws")
    assert list(aws.providers) == ["aws"]
    assert aws.contracts.rofr is None
    assert {r.provider for r in aws.contracts.reservations} == {"aws"}
    assert single_cloud_fleet(fleet, "gcp").contracts.reservations == ()
    with pytest.raises(KeyError):
        single_cloud_fleet(fleet, "oracle")


def test_baselines_plan_only_their_cloud() -> None:
    jobs_path, fleet_path = demo_paths()
    for b in single_cloud_baselines(load_jobs(jobs_path), load_fleet(fleet_path), now=DEMO_NOW):
        assert {a.offer.provider for a in b.plan.placements} <= {b.provider}
        assert b.plan.audit == ()


# ---- examples and the console script --------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [("plan_fleet.py", "Spend by cloud"), ("rofr_what_if.py", "tolerance 10%")],
)
def test_examples_run(script: str, expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / script)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout


def test_console_script_smoke() -> None:
    script = Path(sys.executable).with_name("multicloud")
    if not script.exists():
        pytest.skip("console script not installed (run ./dev setup)")
    proc = subprocess.run(
        [str(script), "version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("multicloud ")


# ---- the process's end --------------------------------------------------------------------
# ``multicloud plan`` ends its own process once printed (app.leave): nothing lost, nothing
# skipped. Each case runs the command line as the ``multicloud`` script does (``main()``),
# in a process of its own, with an exit handler registered first (it must still run) and,
# where said, another thread still running (the process must then wait for it).

EXIT_DRIVER = """
import atexit, sys, threading, time
atexit.register(lambda: sys.stderr.write("exit handler ran\\n"))
# rich only for the verbs that print tables: plan --json, its errors included, never loads it
atexit.register(lambda: sys.stderr.write(f"rich loaded: {'rich' in sys.modules}\\n"))
done = threading.Event()
if sys.argv[1] == "thread":
    # a thread still working when the command is done (it waits for the command to
    # return, at most 60 s; a fixed sleep raced a slow machine's plan): exit waits for it
    def late() -> None:
        done.wait(60)
        sys.stderr.write("thread finished\\n")
    threading.Thread(target=late).start()
sys.argv = ["multicloud", *sys.argv[2:]]
from multicloud.cli import main
try:
    main()
finally:
    # only where the command returns: an ended process never gets here
    sys.stderr.write("main returned\\n")
    done.set()
"""

EXIT_CASES = {
    # name: (driver mode, jobs text, extra arguments, exit status, stderr lines expected);
    # "main returned" only where the process exits as usual (bad input, another thread)
    "json": (
        "plain",
        JOB_A + "---\n" + JOB_B,
        ["--json"],
        0,
        ["exit handler ran", "rich loaded: False"],
    ),
    "table": ("plain", JOB_A, ["--explain"], 0, ["exit handler ran", "rich loaded: True"]),
    "bad input": (
        "plain",
        "name: a\nresources: {acelerator: H100}\n",
        ["--json"],
        2,
        [
            "error: ",
            "unknown field 'acelerator'; did you mean 'accelerator'?",
            "main returned",
            "rich loaded: False",
        ],
    ),
    "another thread": (
        "thread",
        JOB_A,
        ["--json"],
        0,
        ["thread finished", "exit handler ran", "main returned"],
    ),
}


def run_main(
    tmp_path: Path, mode: str, jobs: str, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(jobs, encoding="utf-8")
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(FLEET, encoding="utf-8")
    args = ["plan", str(jobs_file), "--fleet", str(fleet_file), "--now", "2026-12-01T09:00Z"]
    return subprocess.run(
        [sys.executable, "-c", EXIT_DRIVER, mode, *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "jobs", "extra", "status", "lines"), EXIT_CASES.values(), ids=EXIT_CASES.keys()
)
def test_the_process_ends_as_an_exit_would(
    tmp_path: Path, mode: str, jobs: str, extra: list[str], status: int, lines: list[str]
) -> None:
    proc = run_main(tmp_path, mode, jobs, extra)
    assert proc.returncode == status, proc.stderr
    for line in lines:
        assert line in proc.stderr
    assert ("main returned" in proc.stderr) == ("main returned" in lines)
    if status != 0:
        assert proc.stdout == ""
        return
    # All of the output, the same as the command prints when it does not end the process.
    inline = runner.invoke(
        app,
        [
            "plan",
            str(tmp_path / "jobs.yaml"),
            "--fleet",
            str(tmp_path / "fleet.yaml"),
            "--now",
            "2026-12-01T09:00Z",
            *extra,
        ],
    )
    assert inline.exit_code == 0
    if "--json" in extra:
        assert json.loads(proc.stdout) == json.loads(inline.stdout)
    else:
        assert "Total cost" in proc.stdout and "Total cost" in inline.stdout


def _many_jobs(n: int) -> str:
    """``n`` small jobs: a plan whose JSON is past a pipe's buffer (64 KiB)."""
    return "---\n".join(
        f"name: nb-{k}\nresources: {{accelerator: L4}}\nduration_hours: 2.5\n" for k in range(n)
    )


@pytest.mark.parametrize(
    ("case", "jobs"),
    [
        pytest.param("stdout closed", JOB_A, id="stdout closed"),
        pytest.param("reader stops", _many_jobs(600), id="the reader stops early (| head)"),
    ],
)
def test_nowhere_to_print_is_no_error(tmp_path: Path, case: str, jobs: str) -> None:
    # As with click's echo before: stdout closed prints nothing, a reader that stops
    # early (a broken pipe) ends the command quietly; both exit 0 (found by review: an
    # AttributeError, and exit status 1).
    jobs_file = write(tmp_path, "jobs.yaml", jobs)
    fleet_file = write(tmp_path, "fleet.yaml", FLEET)
    args = ["plan", str(jobs_file), "--fleet", str(fleet_file), "--json"]
    cmd = [sys.executable, "-c", EXIT_DRIVER, "plain", *args]
    if case == "stdout closed":
        proc = subprocess.run(
            ["bash", "-c", 'exec "$0" "$@" >&-', *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        status, err = proc.returncode, proc.stderr
    else:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
            assert child.stdout is not None and child.stderr is not None
            child.stdout.read(100)  # the plan has started, then the reader goes away
            child.stdout.close()
            err = child.stderr.read().decode()
            status = child.wait(timeout=120)
    assert status == 0, err
    assert "Traceback" not in err
    assert "exit handler ran" in err


# ---- README ----------------------------------------------------------------------------------

_EXAMPLE = re.compile(r"<!-- example: (job|fleet) -->\s*```yaml\n(.*?)```", re.DOTALL)


def readme_examples() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {"job": [], "fleet": []}
    for kind, body in _EXAMPLE.findall(text):
        found[kind].append(body)
    return found


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    head = text[: text.index("\n## ")]
    assert "./dev setup && .venv/bin/multicloud demo" in head
    assert "./dev test" in head


def test_readme_yaml_examples_parse_and_plan() -> None:
    examples = readme_examples()
    assert examples["job"] and examples["fleet"]
    jobs = [job for body in examples["job"] for job in parse_jobs(body, "README.md")]
    fleets = [parse_fleet(body, "README.md") for body in examples["fleet"]]
    for fleet in fleets:
        check_against_fleet(jobs, fleet, "README.md")
    # The README's quick start plans its job file against its fleet file: it must work.
    from multicloud.fleet import plan_fleet

    plan = plan_fleet(jobs, fleets[0], now=DEMO_NOW)
    assert plan.placements


def test_readme_cloud_fleet_names_real_options() -> None:
    from multicloud import providers as registry
    from multicloud.errors import ProviderNotFoundError

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (body,) = re.findall(r"<!-- example: cloud-fleet -->\s*```yaml\n(.*?)```", text, re.DOTALL)
    fleet = parse_fleet(body, "README.md")
    assert set(fleet.providers) == {"aws", "gcp", "azure", "coreweave", "oci"}
    for name, cfg in fleet.providers.items():
        try:
            factory = registry.resolve(fleet.adapter_of(name))
        except ProviderNotFoundError as exc:  # a core-only install: nothing to check against
            pytest.skip(f"adapter {name} not installed: {exc}")
        registry._check_options(factory, name, cfg.options)  # raises SpecError on a typo


# ---- service verbs without a service ------------------------------------------------------


def test_start_refuses_a_bad_fleet_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTICLOUD_HOME", str(tmp_path / "home"))
    fleet = write(tmp_path, "fleet.yaml", "providers:\n  aws:\n    adapter: simm\n")
    result = run("start", "--fleet", fleet)
    assert result.exit_code == 2
    assert "fleet.yaml" in result.stderr and "simm" in result.stderr
    assert not (tmp_path / "home" / "ray" / "cluster.json").exists()


def test_service_verbs_say_how_to_start_when_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTICLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = run("status")
    assert result.exit_code == 2
    assert "multicloud start" in result.stderr


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("postgresql://mc:s3cret@db:5432/mc", True),
        ("postgresql+psycopg://mc:s3cret@127.0.0.1/mc", True),
        ("postgresql://mc@db:5432/mc", False),
        ("postgresql://mc@db/mc?passfile=/etc/mc/pgpass", False),
        ("sqlite:////data/mc.db", False),
        ("not a url", False),
    ],
)
def test_store_url_with_a_password_is_warned_about(url: str, warns: bool) -> None:
    from multicloud.service.config import store_password_warning

    warning = store_password_warning(url)
    assert (warning is not None) is warns
    if warning:
        assert "s3cret" not in warning and "PGPASSWORD" in warning


def test_plan_json_reaches_a_test_runners_combined_output(tmp_path: Path) -> None:
    # A test runner's capture has a byte buffer but no file descriptor, and its combined
    # output sees only what goes through the text layer: the JSON must go there (it had
    # gone to the buffer alone, and `result.output` was a lone newline).
    jobs_file = write(tmp_path, "jobs.yaml", JOB_A)
    fleet_file = write(tmp_path, "fleet.yaml", FLEET)
    result = runner.invoke(app, ["plan", str(jobs_file), "--fleet", str(fleet_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["placements"][0]["job"] == "train-a"
