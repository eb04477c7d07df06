"""Tests of the provider registry: built-ins, entry points, hints and fleet wiring."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from multicloud import providers
from multicloud.errors import ProviderNotFoundError, SpecError
from multicloud.models import Fleet
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    Offer,
    Provider,
    ResourceRequest,
    WorkloadStatus,
)
from multicloud.sim import SimProvider
from multicloud.testing.clock import FakeClock

FAKE_MODULE = "fake_multicloud_adapter"


class FakeCloud:
    """A minimal adapter standing in for an installed third-party distribution."""

    name: ClassVar[str] = "fakecloud"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(
        self, *, fleet_name: str = "fakecloud", regions: Sequence[str] = (), **options: Any
    ) -> None:
        self.fleet_name = fleet_name
        self.regions = tuple(regions)
        self.options = options

    def check(self) -> None:
        pass

    def offers(self, request: ResourceRequest) -> list[Offer]:
        return []

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        raise NotImplementedError

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        return {}

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        pass


class StrictCloud(FakeCloud):
    """An adapter that takes only named options, so typos can be caught before the call."""

    def __init__(
        self, *, fleet_name: str = "strict", regions: Sequence[str] = (), project: str = ""
    ) -> None:
        super().__init__(fleet_name=fleet_name, regions=regions, project=project)


class NotAProvider:
    def __init__(self, **_: Any) -> None:
        pass


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Register fake adapters in the entry-point group and record which ones get imported."""
    module = types.ModuleType(FAKE_MODULE)
    module.FakeCloud = FakeCloud  # type: ignore[attr-defined]
    module.StrictCloud = StrictCloud  # type: ignore[attr-defined]
    module.NotAProvider = NotAProvider  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    loaded: list[str] = []

    class RecordingEntryPoint(importlib.metadata.EntryPoint):
        def load(self) -> Any:
            loaded.append(self.name)
            return super().load()

    registered = [
        RecordingEntryPoint(n, v, providers.ENTRY_POINT_GROUP)
        for n, v in [
            ("fakecloud", f"{FAKE_MODULE}:FakeCloud"),
            ("strict", f"{FAKE_MODULE}:StrictCloud"),
            ("broken", "no_such_module_for_multicloud:Adapter"),
            ("notaprovider", f"{FAKE_MODULE}:NotAProvider"),
            ("sim", f"{FAKE_MODULE}:FakeCloud"),  # must not shadow the built-in sim
        ]
    ]

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return list(registered) if group == providers.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield loaded


def test_load_sim() -> None:
    sim = providers.load("sim", fleet_name="lab", clock=FakeClock())
    assert isinstance(sim, SimProvider)
    assert isinstance(sim, Provider)
    assert sim.fleet_name == "lab"


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("smi", ["unknown adapter 'smi'", "did you mean 'sim'?"]),
        ("azur", ["did you mean 'azure'?", "pip install multicloud-azure"]),
        ("coreweav", ["did you mean 'coreweave'?"]),
        ("kubernets", ["did you mean 'kubernetes'?", "pip install multicloud-kubernetes"]),
        ("zzzzzz", ["unknown adapter 'zzzzzz'", "known:", "sim"]),
    ],
)
def test_unknown_name(name: str, fragments: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    with pytest.raises(ProviderNotFoundError) as info:
        providers.load(name)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["aws", "gcp", "azure", "coreweave", "kubernetes"])
def test_known_cloud_not_installed_gets_install_hint(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    with pytest.raises(ProviderNotFoundError, match=f"pip install multicloud-{name}"):
        providers.load(name)
    assert providers.available()[name] == f"not installed: pip install multicloud-{name}"


def test_available_lists_builtins_and_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    listed = providers.available()
    assert listed["sim"] == "multicloud.sim:SimProvider"
    assert list(listed) == sorted(listed)
    assert {"aws", "gcp", "azure", "coreweave", "sim"} <= set(listed)


def test_local_is_built_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    assert providers.available()["local"] == "multicloud.local:LocalProvider"
    assert providers.resolve("local").__name__ == "LocalProvider"


def test_entry_point_discovery(fake_entry_points: list[str]) -> None:
    listed = providers.available()
    assert listed["fakecloud"] == f"{FAKE_MODULE}:FakeCloud"
    assert listed["sim"] == "multicloud.sim:SimProvider"
    assert fake_entry_points == []  # listing imports nothing
    adapter = providers.load("fakecloud", fleet_name="x", zone="z1")
    assert isinstance(adapter, FakeCloud)
    assert adapter.options == {"zone": "z1"}
    assert fake_entry_points == ["fakecloud"]  # only the requested one was imported


def test_entry_point_cannot_shadow_builtin(fake_entry_points: list[str]) -> None:
    assert isinstance(providers.load("sim"), SimProvider)
    assert fake_entry_points == []


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("broken", ProviderNotFoundError, "failed to import"),
        ("notaprovider", TypeError, "not a Provider"),
        ("fakeclod", ProviderNotFoundError, "did you mean 'fakecloud'?"),
    ],
)
def test_entry_point_failures(
    fake_entry_points: list[str], name: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        providers.load(name)


# -- from_fleet ---------------------------------------------------------------------------


def fleet_of(entries: dict[str, Any], **fields: Any) -> Fleet:
    return Fleet.model_validate({"providers": entries, **fields})


OFFER = {
    "region": "us-east-1",
    "instance_type": "h100x8",
    "accelerator": "H100",
    "count": 8,
    "price": 30.0,
    "capacity": 2,
}


def test_from_fleet_sim() -> None:
    fleet = fleet_of(
        {
            "lab": {
                "adapter": "sim",
                "regions": ["us-*"],
                "offers": [OFFER, {**OFFER, "region": "eu-west-1"}],
                "faults": [{"kind": "transient"}],
                "options": {"install_id": "inst-9"},
            }
        },
        time_scale=5.0,
    )
    clock = FakeClock()
    sim = providers.from_fleet(fleet, "lab", clock=clock)
    assert isinstance(sim, SimProvider)
    assert (sim.fleet_name, sim.time_scale, sim.install_id) == ("lab", 5.0, "inst-9")
    offers = sim.offers(ResourceRequest())
    assert [(o.provider, o.region, o.capacity) for o in offers] == [("lab", "us-east-1", 2)]


def test_from_fleet_sim_builtin_catalog() -> None:
    fleet = fleet_of(
        {
            "aws": {
                "adapter": "sim",
                "catalog": "builtin",
                "capacity": {"p5.48xlarge": 1},
                "regions": ["us-east-1"],
            }
        }
    )
    sim = providers.from_fleet(fleet, "aws", clock=FakeClock())
    offers = sim.offers(ResourceRequest(accelerators=("H100",)))
    assert offers and {o.region for o in offers} == {"us-east-1"}
    assert all(o.capacity == 1 for o in offers if o.instance_type == "p5.48xlarge")


def test_from_fleet_runtime_overrides_entry() -> None:
    fleet = fleet_of({"lab": {"adapter": "sim", "options": {"install_id": "from-file"}}})
    sim = providers.from_fleet(fleet, "lab", install_id="from-runtime")
    assert isinstance(sim, SimProvider) and sim.install_id == "from-runtime"


@pytest.mark.parametrize(
    ("entry", "paths"),
    [
        ({"offers": [OFFER]}, ["providers.gpu.offers"]),
        ({"catalog": "builtin"}, ["providers.gpu.catalog"]),
        (
            {"capacity": {"x": 1}, "faults": [{"kind": "quota"}]},
            ["providers.gpu.capacity", "providers.gpu.faults"],
        ),
    ],
)
def test_from_fleet_non_sim_rejects_sim_settings(
    fake_entry_points: list[str], entry: dict[str, Any], paths: list[str]
) -> None:
    fleet = fleet_of({"gpu": {"adapter": "fakecloud", **entry}})
    with pytest.raises(SpecError) as info:
        providers.from_fleet(fleet, "gpu")
    assert info.value.source == "fleet"
    assert [p for p, _ in info.value.problems] == paths
    assert "only the sim adapter" in info.value.problems[0][1]
    assert fake_entry_points == []  # rejected before importing anything


def test_from_fleet_non_sim(fake_entry_points: list[str]) -> None:
    fleet = fleet_of(
        {"fakecloud": {"regions": ["eu-*"], "options": {"project": "p1"}}}, time_scale=1.0
    )
    adapter = providers.from_fleet(fleet, "fakecloud", credentials="ref")
    assert isinstance(adapter, FakeCloud)
    assert adapter.fleet_name == "fakecloud"
    assert adapter.regions == ("eu-*",)
    assert adapter.options == {"project": "p1", "credentials": "ref"}  # no time_scale etc.


@pytest.mark.parametrize(
    ("adapter", "options", "path", "hint"),
    [
        ("strict", {"projct": "p"}, "providers.gpu.options.projct", "did you mean 'project'?"),
        ("sim", {"time_scal": 2}, "providers.gpu.options.time_scal", "did you mean 'time_scale'?"),
    ],
)
def test_from_fleet_unknown_option(
    fake_entry_points: list[str], adapter: str, options: dict[str, Any], path: str, hint: str
) -> None:
    fleet = fleet_of({"gpu": {"adapter": adapter, "options": options}})
    with pytest.raises(SpecError) as info:
        providers.from_fleet(fleet, "gpu")
    assert info.value.problems == [(path, f"unknown option; {hint}")]


def test_from_fleet_unknown_entry() -> None:
    fleet = fleet_of({"lab": {"adapter": "sim"}})
    with pytest.raises(ProviderNotFoundError, match="did you mean 'lab'"):
        providers.from_fleet(fleet, "lap")


def test_from_fleet_adapter_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda *, group: [])
    fleet = fleet_of({"prod": {"adapter": "aws", "regions": ["us-east-1"]}})
    with pytest.raises(ProviderNotFoundError, match="pip install multicloud-aws"):
        providers.from_fleet(fleet, "prod")


def test_a_misspelt_adapter_is_named_before_its_settings(
    fake_entry_points: list[str],
) -> None:
    fleet = fleet_of({"gpu": {"adapter": "simm", "offers": [OFFER]}})
    with pytest.raises(ProviderNotFoundError, match="unknown adapter 'simm'; did you mean 'sim'"):
        providers.from_fleet(fleet, "gpu")
    assert fake_entry_points == []
