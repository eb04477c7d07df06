"""Progress of a long plan: the planner's log lines and ``multicloud plan``'s status line."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from rich.console import Console

from multicloud.cli.progress import LOGGER, StatusLine, progress
from multicloud.models import Contracts
from multicloud.planner import Policy, Snapshot, milp, plan
from multicloud.testing.builders import job, offer


def contended(*accelerators: str) -> Snapshot:
    """Per accelerator, two tiers of gangs on two small pools: one group each."""
    offers, jobs = [], []
    for acc in accelerators:
        offers += [
            offer("aws", instance_type=f"a-{acc}", accelerator=acc, price=10, capacity=6),
            offer("gcp", instance_type=f"b-{acc}", accelerator=acc, price=11, capacity=5),
        ]
        jobs += [
            job(f"hi-{acc.lower()}-{i}", accelerator=acc, nodes=3, priority=1) for i in range(4)
        ]
        jobs += [
            job(f"lo-{acc.lower()}-{i}", accelerator=acc, nodes=2, priority=0) for i in range(4)
        ]
    return Snapshot(
        jobs=jobs,
        offers=offers,
        contracts=Contracts(),
        now=datetime(2026, 11, 23, tzinfo=timezone.utc),
    )


def planner_lines(caplog: pytest.LogCaptureFixture, snap: Snapshot, policy: Policy) -> list[str]:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        plan(snap, policy)
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_large_group_logs_each_step_in_order(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milp, "STEPS_FROM", 1)  # this group counts as large
    lines = planner_lines(caplog, contended("A100"), Policy(force_optimizer=True, workers=1))
    assert lines == [
        "searching 8 jobs in 1 group",
        "group 1/1, 8 jobs: placing priority 1 (tier 1/2)",
        "group 1/1, 8 jobs: placing priority 0 (tier 2/2)",
        "group 1/1, 8 jobs: lowering the cost",
    ]


def test_a_small_group_logs_only_that_it_is_searched(caplog: pytest.LogCaptureFixture) -> None:
    lines = planner_lines(caplog, contended("A100"), Policy(force_optimizer=True, workers=1))
    assert lines == ["searching 8 jobs in 1 group"]


def test_groups_on_two_threads_are_counted_once_each(caplog: pytest.LogCaptureFixture) -> None:
    lines = planner_lines(
        caplog, contended("A100", "H100"), Policy(force_optimizer=True, workers=2)
    )
    assert lines == [
        "searching 16 jobs in 2 groups",
        "1 of 2 groups searched",
        "2 of 2 groups searched",
    ]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Console, io.StringIO]]:
    # rich draws no live line for TERM=dumb or TTY_INTERACTIVE=0: not this test's subject.
    monkeypatch.setenv("TERM", "xterm")
    for name in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    out = io.StringIO()
    yield Console(file=out, force_terminal=True, force_interactive=True, width=100), out


def logger_state() -> tuple[int, bool]:
    logger = logging.getLogger(LOGGER)
    return logger.level, logger.propagate


def status_lines() -> list[logging.Handler]:
    return [h for h in logging.getLogger(LOGGER).handlers if isinstance(h, StatusLine)]


def test_the_status_line_shows_the_planner_log_on_a_terminal(
    terminal: tuple[Console, io.StringIO],
) -> None:
    err, out = terminal
    logger = logging.getLogger(LOGGER)
    before = logger_state()
    threads = set(threading.enumerate())
    with progress(20_000, err) as shown:
        assert logger.isEnabledFor(logging.INFO)
        logger.info("group 1/1, %s jobs: lowering the cost", "9,563")
        assert shown is not None and shown.status is not None
    assert "planning 20,000 jobs: group 1/1, 9,563 jobs: lowering the cost" in out.getvalue()
    # Gone afterwards: no handler, the level and propagation as they were, and no thread
    # left (the command line ends its process at once only when none is alive).
    assert not status_lines()
    assert logger_state() == before
    assert set(threading.enumerate()) <= threads


def test_the_status_line_is_one_line_cut_to_a_narrow_terminal(
    terminal: tuple[Console, io.StringIO],
) -> None:
    _, out = terminal
    err = Console(file=out, force_terminal=True, force_interactive=True, width=40)
    with progress(20_000, err):
        logging.getLogger(LOGGER).info("group 1/1, 9,563 jobs: placing priority 0 (tier 4/4)")
    drawn = out.getvalue()
    assert "planning 20,000 jobs: group 1/1, 9,56…" in drawn
    assert drawn.count("\n") == 1  # the line's own end when it is erased: no wrapped rows


def test_a_plan_that_logs_nothing_starts_no_status_line(
    terminal: tuple[Console, io.StringIO],
) -> None:
    err, out = terminal
    with progress(3, err) as shown:
        # Room for every job: the walk's plan is the plan, nothing is searched.
        plan(
            Snapshot(
                jobs=[job("a", accelerator="A100", nodes=2)],
                offers=[offer("aws", instance_type="a", accelerator="A100", capacity=8)],
                contracts=Contracts(),
                now=datetime(2026, 11, 23, tzinfo=timezone.utc),
            ),
            Policy(workers=1),
        )
    assert shown is not None and shown.status is None
    assert out.getvalue() == ""


def test_the_lines_reach_no_other_handler_unless_the_application_asked(
    terminal: tuple[Console, io.StringIO], caplog: pytest.LogCaptureFixture
) -> None:
    err, _ = terminal
    logger = logging.getLogger(LOGGER)
    with caplog.at_level(logging.WARNING), progress(3, err):
        logger.info("for the status line only")
    assert not [r for r in caplog.records if r.name == LOGGER]
    # An application that logs the planner at INFO keeps getting the lines.
    with caplog.at_level(logging.INFO, logger=LOGGER), progress(3, err):
        logger.info("for the application too")
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "for the application too"
    ]


def test_the_status_line_is_removed_when_planning_fails(
    terminal: tuple[Console, io.StringIO],
) -> None:
    err, _ = terminal
    logger = logging.getLogger(LOGGER)
    before = logger_state()
    with pytest.raises(RuntimeError), progress(3, err):
        logger.info("started")
        raise RuntimeError("boom")
    assert not status_lines()
    assert logger_state() == before


def test_a_pipe_gets_no_status_line(capsys: pytest.CaptureFixture[str]) -> None:
    # capsys's stderr is no terminal: nothing is attached, nothing shown.
    with progress(5) as shown:
        assert shown is None and not status_lines()
        logging.getLogger(LOGGER).info("not shown")
    assert capsys.readouterr().err == ""
