"""The collector pause used while large trees are built (multicloud.gcpause)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from multicloud import gcpause


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave the collector as the test found it (enabled, nothing frozen)."""
    was_enabled, was_frozen = gc.isenabled(), gc.get_freeze_count()
    try:
        yield
    finally:
        if not was_frozen:
            gc.unfreeze()
        (gc.enable if was_enabled else gc.disable)()


@pytest.mark.usefixtures("collector")
@pytest.mark.parametrize(
    ("enabled_before", "enabled_after"),
    [(True, True), (False, False)],
    ids=["enabled stays enabled", "disabled on purpose stays disabled"],
)
def test_block_runs_paused_and_restores(enabled_before: bool, enabled_after: bool) -> None:
    (gc.enable if enabled_before else gc.disable)()
    with gcpause.paused():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled_after


@pytest.mark.usefixtures("collector")
def test_what_another_part_froze_stays_frozen() -> None:
    # The scheduler actor freezes its start-up heap; a submission's pause must not thaw it.
    kept = [[] for _ in range(100)]
    gc.enable()
    gc.freeze()
    assert gc.get_freeze_count() > 0
    with gcpause.paused():
        built = [{} for _ in range(100)]
    # Frozen objects may die meanwhile (reference counting still frees them), so the
    # count may shrink; ``unfreeze`` would have emptied it.
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()
    del kept, built


@pytest.mark.usefixtures("collector")
def test_nothing_left_frozen_when_nothing_was() -> None:
    gc.enable()
    if gc.get_freeze_count():
        pytest.skip("something in this process froze objects before the test")
    with gcpause.paused():
        built = [{} for _ in range(100)]
    assert gc.get_freeze_count() == 0
    del built
