"""The ``tasklog`` command: read, watch and manage task history from a shell.

The only part of tasklog that imports the CLI library (typer) or prints.
Every reading command takes ``--json`` and then prints one JSON document
(SPEC §6); otherwise it prints tables (rich) or log lines in the format of
SPEC §4. Errors a user can fix are one line on stderr and exit status 2.

Layout: :mod:`.app` (the application, its root options, the error guard,
``main``), :mod:`.options` (shared options and value parsing),
:mod:`.render` (tables, log lines, JSON), and the commands grouped by what
they do — :mod:`.reading`, :mod:`.managing`, :mod:`.demo`, :mod:`.serving`. A new command is
a function in a module and one ``register(...)`` line below.
"""

from __future__ import annotations

from ..config import DEFAULT_REPO, resolve_repo
from . import demo, managing, reading, serving
from .app import CLIError, app, main, register
from .options import parse_duration
from .render import format_record, record_json

__all__ = [
    "DEFAULT_REPO",
    "CLIError",
    "app",
    "format_record",
    "main",
    "parse_duration",
    "record_json",
    "resolve_repo",
]

register(reading.tasks, reading.runs, reading.logs, reading.stats, reading.errors, reading.tail)
register(managing.prune, managing.mark_crashed, managing.export, managing.copy)
register(demo.demo)
register(serving.serve)
