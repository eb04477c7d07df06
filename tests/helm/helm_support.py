"""Running helm on the chart for the tests: finding the binary, rendering, validating.

Not a conftest (the project keeps one per suite root): the chart tests import it by name,
which works because pytest puts this directory on ``sys.path`` for its test modules.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

__all__ = [
    "CHART",
    "KUBE_VERSION",
    "RELEASE",
    "ROOT",
    "SCHEMAS",
    "Rendered",
    "containers",
    "helm",
    "lint",
    "pod_templates",
    "render",
    "render_error",
    "validate_manifest",
]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "multicloud"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "mc"
NAMESPACE = "mc-ns"
# The Kubernetes version the manifests are validated against (the helm binary's client).
KUBE_VERSION = "1.35"


@functools.cache
def helm() -> str:
    """Return the helm binary: ``.venv/bin/helm`` (what ``./dev setup`` installs), else PATH.

    Fails (never skips) when there is none: CI must render the chart.
    """
    beside = ROOT / ".venv" / "bin" / "helm"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("helm")
    if found is None:
        pytest.fail(
            "helm is not installed: run ./dev setup (tools/fetch_helm.py installs the pinned, "
            "checksum-verified helm into .venv/bin)",
            pytrace=False,
        )
    return found


def _run(args: list[str], values: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(values or {}, f)
        path = f.name
    try:
        return subprocess.run(
            [helm(), *args, "-f", path], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        os.unlink(path)


class Rendered:
    """The manifests of one ``helm template`` run.

    Attributes:
        docs: The rendered objects, in order.
        text: The raw YAML stream.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Return the objects of one kind."""
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """Return the only object of a kind (asserting there is exactly one)."""
        found = self.of(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]


def _key(values: dict[str, Any] | None) -> str:
    return json.dumps(values or {}, sort_keys=True)


@functools.cache
def _render_cached(key: str) -> Rendered:
    proc = _run(["template", RELEASE, str(CHART), "--namespace", NAMESPACE], json.loads(key))
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return Rendered(proc.stdout)


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Render the chart with these values (cached: variants are rendered once per session)."""
    return _render_cached(_key(values))


def render_error(values: dict[str, Any]) -> str:
    """Render values the chart must refuse; return helm's error output."""
    proc = _run(["template", RELEASE, str(CHART), "--namespace", NAMESPACE], values)
    assert proc.returncode != 0, "helm template accepted values it should refuse"
    return proc.stderr


def lint(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``helm lint --strict`` with these values."""
    return _run(["lint", "--strict", str(CHART), "--namespace", NAMESPACE], values)


@functools.cache
def _registry() -> tuple[Path, Registry[Any]]:
    """The strict Kubernetes schemas kubernetes-validate bundles, and their shared $defs.

    Loaded once: kubernetes_validate.validate() re-reads the multi-megabyte definitions file
    on every call, which made validation most of this suite's runtime.
    """
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    schema_dir = base / f"v{KUBE_VERSION}.0-local-strict"
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    return schema_dir, Resource.from_contents(definitions) @ Registry()


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The validator of one kind: ours for the CRDs, else kubernetes-validate's schema."""
    schema_dir, registry = _registry()
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        if (props["apiVersion"]["const"], props["kind"]["const"]) == (api_version, kind):
            return jsonschema.Draft202012Validator(schema, registry=registry)
    # The file naming kubernetes-validate uses: rbac.authorization.k8s.io/v1 -> rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir / f"{kind.lower()}-{group_version}.json"
    if not path.exists():
        raise LookupError(f"no schema for {api_version} {kind} (looked for {path.name})")
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(
        schema, registry=Resource.from_contents(schema) @ registry
    )


def validate_manifest(doc: dict[str, Any]) -> None:
    """Validate one object: Kubernetes kinds strictly (unknown fields are errors), CRDs by ours.

    Raises:
        jsonschema.ValidationError: The object is invalid.
        LookupError: A kind we have no schema for.
    """
    _validator(doc["apiVersion"], doc["kind"]).validate(doc)


def pod_templates(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, pod template)`` for the head and each worker group."""
    for rc in rendered.of("RayCluster"):
        yield "head", rc["spec"]["headGroupSpec"]["template"]
        for group in rc["spec"].get("workerGroupSpecs", []):
            yield f"worker {group['groupName']}", group["template"]


def containers(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, container)`` for every container and init container."""
    for where, template in pod_templates(rendered):
        spec = template["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{where}/{c['name']}", c
