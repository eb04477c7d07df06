"""``multicloud plan``'s status line: the optimiser's steps on a terminal while it plans."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from multicloud.cli.app import console

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

LOGGER = "multicloud.planner"


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no such method, or closed
        return False


class StatusLine(logging.Handler):
    """Shows each planner log line on a status line, started by the first one.

    A plan that never reaches the optimiser logs nothing, so it never imports rich or
    starts a status (rich's console, status and text modules are 22 ms of imports).

    Args:
        head: What the line starts with.
        make_console: The console to show it on, made at the first line.
    """

    def __init__(self, head: str, make_console: Callable[[], Console]) -> None:
        super().__init__(logging.INFO)
        self.head = head
        self.make_console = make_console
        self.status: Status | None = None
        self.refresh: set[threading.Thread] = set()

    def emit(self, record: logging.LogRecord) -> None:
        from rich.console import Group
        from rich.text import Text

        # As text: a message is never rich markup. One line, cut to the terminal's width:
        # in a Group, as the spinner joins a bare Text to its frame and drops the cut.
        # (Under the handler's lock: lines from the optimiser's threads take turns.)
        line = Group(Text(f"{self.head}: {record.getMessage()}", no_wrap=True, overflow="ellipsis"))
        if self.status is None:
            self.status = self.make_console().status(line)
            before = set(threading.enumerate())
            self.status.start()
            self.refresh = set(threading.enumerate()) - before
        else:
            self.status.update(line)

    def stop(self) -> None:
        """Erase the line (once the handler is detached: no line can start it again).

        rich stops its refresh thread without waiting for it; the command line ends its
        process at once only when no other thread is alive (``multicloud.cli.app.leave``),
        so the thread the status started is waited for (it ends within a refresh).
        """
        self.acquire()
        try:
            if self.status is not None:
                self.status.stop()
            for thread in self.refresh:
                thread.join(timeout=1.0)
        finally:
            self.release()


@contextmanager
def progress(jobs: int, err: Console | None = None) -> Iterator[StatusLine | None]:
    """A status line on stderr while ``jobs`` are planned, if stderr is a terminal.

    A contended plan of thousands of jobs takes seconds: the line shows the optimiser's
    steps (the ``multicloud.planner`` log, see docs/architecture.md) and is erased before
    the plan is printed. A pipe or a file gets nothing, and neither does a plan that never
    reaches the optimiser.

    Args:
        jobs: Jobs being planned.
        err: The console to show it on (default: stderr, if it is a terminal).

    Yields:
        The handler showing the lines (None when stderr is no terminal).
    """
    if err is None and not _is_tty(sys.stderr):
        yield None
        return
    shown = err

    def make() -> Console:
        return shown if shown is not None else console(stderr=True)

    handler = StatusLine(f"planning {jobs:,} jobs", make)
    logger = logging.getLogger(LOGGER)
    level, propagate = logger.level, logger.propagate
    try:
        logger.addHandler(handler)
        if not logger.isEnabledFor(logging.INFO):
            # Raised for the status line alone: the lines must not reach a handler the
            # application (or a provider plugin) set up for its warnings.
            logger.setLevel(logging.INFO)
            logger.propagate = False
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        handler.stop()
