"""The ``multicloud`` Typer app and what every command shares: consoles, errors, loading.

Every command either succeeds or exits with status 2 and one ``error: ...`` message on
stderr naming the file and field at fault. Tracebacks are for bugs, not for bad input.
Command modules import from here; nothing here imports them (no import loops).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multicloud import providers as registry
from multicloud.errors import MulticloudError, ProviderNotFoundError, SpecError
from multicloud.fleet import check_reservations
from multicloud.models import Fleet, Job
from multicloud.provider import Provider
from multicloud.specs import check_against_fleet, load_fleet, load_jobs

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "Address",
    "AsJson",
    "Exit2",
    "Namespace",
    "app",
    "check_adapters",
    "client",
    "console",
    "die",
    "leave",
    "load",
    "money",
    "own_process",
    "parse_now",
    "reported",
]

app = typer.Typer(
    name="multicloud",
    help="Contract-aware scheduler that places AI training and inference jobs across clouds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Tables are wide; when the output is not a terminal (a pipe, a file, a test) rich would
# otherwise fold them into 80 columns and make them unreadable.
_PIPE_WIDTH = 200


class _Process:
    """Whether this process runs the command line and nothing after it.

    Set by :func:`multicloud.cli.main` (the ``multicloud`` script); tests that invoke
    :data:`app` in their own process leave it false.
    """

    own = False


def own_process() -> None:
    """Say that this process runs the command line and nothing after it (see :func:`leave`)."""
    _Process.own = True


def leave(code: int = 0) -> None:
    """End the process with ``code`` now, once what an exit does that matters is done.

    A large plan leaves a few million objects (the jobs, the plan, the optimiser's
    libraries) that the command's return and the interpreter's teardown would free one
    by one, only for the operating system to take the memory back anyway: 0.04-0.06 s
    of a 20,000-job ``plan --json`` end to end. The exit handlers still run (``atexit``:
    logging's flush, finalizers registered to run at exit) and stdout and stderr are
    flushed, as at any exit. Only in the command line's own process, and only when no
    other thread runs (an exit would wait for it); otherwise this returns and the
    command ends as usual.

    Args:
        code: The exit status.
    """
    if not _Process.own or threading.active_count() > 1:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(code)


class Exit2(Exception):
    """Bad input the CLI reports as one message and exit status 2."""


def console(stderr: bool = False) -> Console:
    # rich is imported by the verbs that print with it, not by every command line: it
    # was a tenth of the imports of `plan --json`, which never prints a table.
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return console


@contextmanager
def reported() -> Iterator[None]:
    """Turn the errors bad input causes into ``error: ...`` on stderr and exit status 2."""
    try:
        yield
    except SpecError as err:
        die(err.render())
    except (Exit2, MulticloudError) as err:
        die(str(err))


def die(message: str) -> None:
    # Plain stderr write: rich markup in a user's file name must not be interpreted.
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(2)


def money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    text = value.strip()
    # Python 3.10's fromisoformat does not accept the "Z" suffix people usually write.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Exit2(
            f"--now: not an ISO 8601 date-time: {value!r} (e.g. 2026-12-01T09:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def check_adapters(fleet: Fleet, source: str) -> dict[str, Provider]:
    """Build every provider of the fleet once, so that a bad entry names the fleet file.

    Args:
        fleet: The parsed fleet.
        source: The fleet file, for messages.

    Returns:
        The built providers, by fleet name (reused for planning).

    Raises:
        SpecError: If an entry's adapter is unknown or not installed, or its settings do
            not fit the adapter.
    """
    built: dict[str, Provider] = {}
    for name, cfg in fleet.providers.items():
        field = f"providers.{name}.adapter" if cfg.adapter else f"providers.{name}"
        try:
            built[name] = registry.from_fleet(fleet, name)
        except ProviderNotFoundError as err:
            raise SpecError(source, [(field, str(err))]) from None
        except SpecError as err:
            # The registry does not know the file name; re-home its problems here.
            raise SpecError(source, err.problems) from None
        except (TypeError, ValueError) as err:
            raise SpecError(source, [(f"providers.{name}", str(err))]) from None
    return built


def load(jobs_file: Path, fleet_file: Path | None) -> tuple[list[Job], Fleet, dict[str, Provider]]:
    from multicloud.demo import demo_paths

    fleet_path = fleet_file if fleet_file is not None else demo_paths()[1]
    jobs = load_jobs(jobs_file)
    fleet = load_fleet(fleet_path)
    check_against_fleet(jobs, fleet, str(jobs_file))
    providers = check_adapters(fleet, str(fleet_path))
    check_reservations(fleet, providers, str(fleet_path))
    return jobs, fleet, providers


# ---- options and styles of the verbs that talk to a running scheduler ----------------------

Address = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="MULTICLOUD_ADDRESS",
        help="Ray GCS address HOST:PORT; 'auto' = inside a Ray job, or the local cluster "
        "`multicloud start` started.",
    ),
]
Namespace = Annotated[
    str, typer.Option("--namespace", help="Ray namespace of the scheduler actor.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def client(address: str, namespace: str) -> Any:
    from multicloud.service.client import connect

    return connect(address, namespace=namespace)
