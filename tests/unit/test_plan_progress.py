"""Progress of a long plan: the planner's log lines and ``multicloud plan``'s status line."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timezone

import pytest
from rich.console import Console

from multicloud.cli.plan import progress
from multicloud.models import Contracts
from multicloud.planner import Policy, Snapshot, plan
from multicloud.testing.builders import job, offer

LOGGER = "multicloud.planner"


def contended() -> Snapshot:
    """Two tiers of gangs on two small pools: one group the optimiser searches."""
    offers = [
        offer("aws", instance_type="a", accelerator="A100", price=10, capacity=6),
        offer("gcp", instance_type="b", accelerator="A100", price=11, capacity=5),
    ]
    jobs = [job(f"hi{i}", accelerator="A100", nodes=3, priority=1) for i in range(4)]
    jobs += [job(f"lo{i}", accelerator="A100", nodes=2, priority=0) for i in range(4)]
    return Snapshot(
        jobs=jobs,
        offers=offers,
        contracts=Contracts(),
        now=datetime(2026, 11, 23, tzinfo=timezone.utc),
    )


def test_the_optimiser_logs_each_step_in_order(caplog: pytest.LogCaptureFixture) -> None:
    # exact_below=0: searched as a large group is, so every step is logged.
    with caplog.at_level(logging.INFO, logger=LOGGER):
        plan(contended(), Policy(force_optimizer=True, exact_below=0, workers=1))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == [
        "optimising 8 contended jobs in 1 group",
        "group of 8 jobs: placing priority 1 (tier 1 of 2)",
        "group of 8 jobs: placing priority 0 (tier 2 of 2)",
        "group of 8 jobs: lowering the cost",
        "1 of 1 group done",
    ]


def test_a_group_solved_whole_logs_only_that_it_is_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        plan(contended(), Policy(force_optimizer=True, workers=1))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["optimising 8 contended jobs in 1 group", "1 of 1 group done"]


def test_the_status_line_shows_the_planner_log_on_a_terminal() -> None:
    out = io.StringIO()
    err = Console(file=out, force_terminal=True, width=100)
    logger = logging.getLogger(LOGGER)
    level = logger.level
    with progress(20_000, err):
        assert logger.isEnabledFor(logging.INFO)
        logger.info("group of %s jobs: lowering the cost", "9,563")
    text = out.getvalue()
    assert "planning 20,000 jobs" in text
    assert "planning 20,000 jobs: group of 9,563 jobs: lowering the cost" in text
    # Gone afterwards: no handler left behind, the level as it was.
    assert not [h for h in logger.handlers if type(h).__name__ == "_StatusLine"]
    assert logger.level == level


def test_the_status_line_is_removed_when_planning_fails() -> None:
    logger = logging.getLogger(LOGGER)
    err = Console(file=io.StringIO(), force_terminal=True)
    with pytest.raises(RuntimeError), progress(3, err):
        raise RuntimeError("boom")
    assert not [h for h in logger.handlers if type(h).__name__ == "_StatusLine"]


def test_a_pipe_gets_no_status_line(capsys: pytest.CaptureFixture[str]) -> None:
    # capsys's stderr is no terminal: nothing is shown, nothing is attached.
    logger = logging.getLogger(LOGGER)
    with progress(5):
        assert not [h for h in logger.handlers if type(h).__name__ == "_StatusLine"]
        logger.info("not shown")
    assert capsys.readouterr().err == ""
