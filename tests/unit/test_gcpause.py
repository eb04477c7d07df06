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


@pytest.fixture
def thresholds() -> Iterator[None]:
    """Leave the collector's thresholds and switch as the test found them."""
    saved, was_enabled = gc.get_threshold(), gc.isenabled()
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        (gc.enable if was_enabled else gc.disable)()


@pytest.mark.usefixtures("thresholds")
@pytest.mark.parametrize(
    ("allocated", "young_collections_before", "enabled", "collected"),
    [
        (50, 0, True, None),
        (2_000, 0, True, 0),
        (2_000, 10, True, 1),
        (2_000, 0, False, None),
    ],
    ids=["not due yet", "young due", "middle due too", "disabled on purpose"],
)
def test_idle_collections_collect_what_is_due(
    allocated: int, young_collections_before: int, enabled: bool, collected: int | None
) -> None:
    collections = gcpause.IdleCollections(young=1_000, backstop=1_000_000)
    assert gc.get_threshold()[0] == 1_000_000
    gc.enable()
    gc.collect()
    for _ in range(young_collections_before):
        gc.collect(0)
    kept = [[] for _ in range(allocated)]
    (gc.enable if enabled else gc.disable)()
    assert collections() == collected
    if collected is not None:
        assert gc.get_count()[0] < 1_000
    del kept


@pytest.mark.parametrize(("young", "backstop"), [(0, 10), (20, 10)])
def test_idle_collections_refuse_thresholds_out_of_order(young: int, backstop: int) -> None:
    with pytest.raises(ValueError, match="young <= backstop"):
        gcpause.IdleCollections(young, backstop)


@pytest.mark.usefixtures("thresholds")
@pytest.mark.parametrize(
    ("seconds_since_start", "collected"),
    [(10.0, 1), (60.0, 2), (600.0, 2)],
    ids=["full held back for a minute", "full due after a minute", "full due long after"],
)
def test_idle_collections_space_full_collections(
    seconds_since_start: float, collected: int
) -> None:
    now = [100.0]
    collections = gcpause.IdleCollections(
        young=1_000, backstop=1_000_000, full_every_s=60.0, clock=lambda: now[0]
    )
    gc.enable()
    gc.collect()
    # A full collection is due: as many middle collections as its threshold, and as many
    # young ones as the middle's since the last middle.
    every1, every2 = gc.get_threshold()[1:]
    for _ in range(every2):
        gc.collect(1)
    for _ in range(every1):
        gc.collect(0)
    kept = [[] for _ in range(2_000)]
    now[0] += seconds_since_start
    assert collections() == collected
    del kept


def test_idle_collections_refuse_a_negative_spacing() -> None:
    with pytest.raises(ValueError, match="full_every_s"):
        gcpause.IdleCollections(10, 20, full_every_s=-1.0)
