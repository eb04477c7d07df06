"""The fake Kubernetes API server itself: the selectors and lifecycle the adapter tests rely on."""

from __future__ import annotations

import threading
import urllib.request

import pytest
from multicloud_coreweave.testing import (
    field_selector_matches,
    label_selector_matches,
    serve,
)

LABELS = {"app": "web", "tier": "gpu", "multicloud.io/install": "a"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app=web,tier=cpu", False),
        ("tier in (gpu, cpu)", True),
        ("tier notin (gpu)", False),
        ("multicloud.io/install in (a,b),app=web", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert label_selector_matches(selector, LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("status.phase!=Succeeded,status.phase!=Failed", True),
        ("status.phase=Running", True),
        ("status.phase=Pending", False),
        ("spec.nodeName=n1", True),
    ],
)
def test_field_selectors(selector: str, expected: bool) -> None:
    pod = {"status": {"phase": "Running"}, "spec": {"nodeName": "n1"}}
    assert field_selector_matches(selector, pod) is expected


def test_server_requires_the_token_and_stops() -> None:
    before = threading.active_count()
    with serve() as kube:
        with pytest.raises(urllib.request.HTTPError) as err:
            urllib.request.urlopen(f"{kube.url}/api/v1/nodes", timeout=5)
        assert err.value.code == 401
        url = kube.url
    # The server thread is gone and the port is closed.
    assert threading.active_count() == before
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/version", timeout=2)
