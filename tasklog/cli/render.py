"""Everything the command prints: tables (rich), log lines and JSON documents."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..history import record_json
from ..runs import format_records

__all__ = [
    "console",
    "crash_table",
    "format_record",
    "iso",
    "print_json",
    "print_json_line",
    "print_records",
    "record_json",
    "runs_table",
    "stats_table",
    "tasks_json",
    "tasks_table",
]

_STYLE_BY_LEVEL = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}
_STYLE_BY_OUTCOME = {
    "success": "green",
    "lost": "bold red",
    "fail": "red",
    "crash": "red",
    "inaction": "yellow",
    "terminate": "yellow",
}


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr): 200 columns when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else 200
    return Console(
        file=stream, width=width, highlight=False, markup=False, soft_wrap=not terminal
    )


def _time_text(when: datetime | float | None) -> str:
    if when is None:
        return ""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(float(when), tz=timezone.utc)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration_text(value: timedelta | float | None) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.3f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def shown_name(name: Any) -> str:
    """A task name as a table or log line shows it: control characters escaped.

    Records keep the name they were logged with; only what is printed
    changes. ``a\nb`` shows as ``a\\nb``, a tab as ``\\t``, an empty name
    as ``""``, so one record stays one line and one row.
    """
    text = "" if name is None else str(name)
    if text == "":
        return '""'
    if not any(unicodedata.category(c)[0] == "C" for c in text):
        return text
    return "".join(
        repr(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in text
    )


def _shown_record(record: Any) -> Any:
    """*record*, with a copy's task name escaped when it needs it (see :func:`shown_name`)."""
    name = getattr(record, "task_name", None)
    shown = shown_name(name)
    if shown == name or not isinstance(record, BaseModel):
        return record
    return record.model_copy(update={"task_name": shown})


def _outcome(action: str) -> Text:
    return Text(action, _STYLE_BY_OUTCOME.get(action, "cyan"))


def _level(record: Any) -> str:
    level = getattr(record, "levelname", None)
    if isinstance(level, str) and level:
        return level
    return "ERROR" if str(record.action) in ("fail", "crash") else "INFO"


# ------------------------------------------------------------- log lines


def format_record(record: Any) -> str:
    """One record as the log line of SPEC §4, its traceback on the following lines.

    ``[2024-03-04 12:00:00.000] [INFO] [task] message`` in local time, as
    ``run.output()`` writes it (:func:`tasklog.runs.format_records`), with
    control characters in the task name escaped (:func:`shown_name`).
    """
    return format_records([_shown_record(record)])


def print_records(records: Iterable[Any], out: Console) -> None:
    """Print *records* as log lines (coloured by level on a terminal)."""
    for record in records:
        text = format_record(record)
        if out.is_terminal:
            out.print(Text(text, style=_STYLE_BY_LEVEL.get(_level(record), "")))
        else:
            typer.echo(text)


# ------------------------------------------------------------------ JSON


def iso(when: datetime | float | None) -> str | None:
    """*when* (a datetime or epoch seconds) as ISO 8601 text with a time zone."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(float(when), tz=timezone.utc)
    return when.isoformat()


def print_json(document: Any) -> None:
    """Print *document* as one indented JSON document."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def print_json_line(document: Any) -> None:
    """Print *document* as one line of JSON (JSON Lines)."""
    typer.echo(json.dumps(document, ensure_ascii=False))


# ---------------------------------------------------------------- tables


def tasks_json(latest: Iterable[Any]) -> list[dict[str, Any]]:
    """The ``tasks --json`` document of the newest record of each task."""
    return [
        {"task_name": r.task_name, "last_action": str(r.action), "last_created": iso(r.created)}
        for r in latest
    ]


def tasks_table(latest: Iterable[Any]) -> Table:
    """The newest record of each task: task, last action, when."""
    table = Table("Task", "Last action", "Last record")
    for r in latest:
        table.add_row(shown_name(r.task_name), _outcome(str(r.action)), _time_text(r.created))
    return table


def runs_table(task: str | None, found: list[Any]) -> Table:
    """Runs of *task* (of every task, with a task column, when None): run id,
    start, duration, outcome (or ``running``/``lost`` while open)."""
    title = "Runs" if task is None else f"Runs of {shown_name(task)}"
    table = Table(*(["Task"] if task is None else []), "Run id", "Start", title=title)
    table.add_column("Duration", justify="right")
    table.add_column("Outcome")
    for run in found:
        cells = [
            run.run_id,
            _time_text(run.start),
            _duration_text(run.runtime),
            _outcome(getattr(run, "status", None) or run.outcome or "running"),
        ]
        table.add_row(*([shown_name(run.task_name)] if task is None else []), *cells)
    return table


def crash_table(candidates: list[tuple[Any, float, str]], title: str) -> Table:
    """Runs to mark crashed: task, run id, last record, why."""
    table = Table("Task", title=title)
    table.add_column("Run id", no_wrap=True)
    table.add_column("Last record", no_wrap=True)
    table.add_column("Why")
    for run, last_seen, why in candidates:
        table.add_row(shown_name(run.task_name), run.run_id, _time_text(last_seen), why)
    return table


def rate_text(rate: float | None) -> str:
    """A success rate to one decimal, never shown as 100 % (or 0 %) when it is
    not: 1,494 successes of 1,500 runs are 99.6 %, and 9,999 of 10,000 99.9 %."""
    if rate is None:
        return ""
    text = f"{rate:.1%}"
    if rate < 1 and text == "100.0%":
        return "99.9%"
    if rate > 0 and text == "0.0%":
        return "0.1%"
    return text


def stats_table(result: Any, title: str = "Statistics") -> Table:
    """A :class:`~tasklog.Stats`: one row a task, then the total."""
    table = Table("Task", title=title)
    for column in ("Runs", "OK", "Failed", "Other", "Success", "Mean", "p95", "Max"):
        table.add_column(column, justify="right")
    rows = [*sorted(result.tasks.values(), key=lambda s: s.task_name), None]
    for figures in rows:
        if figures is None:
            figures = result.total
            table.add_section()
            name = Text("total", "bold")
        else:
            name = Text(shown_name(figures.task_name))
        rate = figures.success_rate
        table.add_row(
            name,
            str(figures.runs),
            str(figures.successes),
            str(figures.failures),
            str(figures.other),
            rate_text(rate),
            _duration_text(figures.mean_runtime),
            _duration_text(figures.p95_runtime),
            _duration_text(figures.max_runtime),
        )
    return table
