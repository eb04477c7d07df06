"""The ``multicloud`` command line: readable tables for people, ``--json`` for machines.

- ``app``: the Typer app and what every command shares (consoles, errors, loading);
- ``plan``: the offline verbs (plan, offers, schema, providers, version);
- ``demo``: the demo;
- ``service``: start, stop, submit;
- ``jobs``: status, wait, cancel, explain, audit, logs.

Each command module registers its verbs on :data:`app` when imported; the imports below
fix the order ``--help`` lists them in.
"""

from __future__ import annotations

import gc

from multicloud import gcpause

# Importing the command line builds its libraries' classes and schemas (typer, rich,
# pydantic and the models): a few hundred thousand objects, all kept. The collector's
# passes over them were a tenth of the import time.
with gcpause.paused():
    from multicloud.cli import demo, jobs, plan, service
    from multicloud.cli.app import app, own_process

__all__ = ["app", "main"]

_VERBS = (plan, demo, service, jobs)


def main() -> None:
    """Run the CLI (the ``multicloud`` console script)."""
    # The process is the command line's: a command may end it (``app.leave``).
    own_process()
    try:
        app()
    finally:
        # The process ends here. Its last full collection would walk every live object
        # (the optimiser's libraries, a large plan's leftovers) only to have exit free
        # them: 70 ms after planning 2,000 jobs. Frozen objects are not walked.
        gc.freeze()
