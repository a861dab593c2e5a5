"""The ``tasklog`` command: read, watch and manage task history from a shell.

This is the only module of tasklog that imports the CLI library (typer) or
prints. Every reading command takes ``--json`` and then prints one JSON
document (SPEC §6); otherwise it prints tables (rich) or log lines in the
format of SPEC §4. Errors a user can fix — a bad URL, a missing table, an
unknown task, a bad option value — are one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import itertools
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .config import ENV_REPO
from .exceptions import ConfigError
from .inspect import (
    StoreNotFoundError,
    has_task,
    latest_per_task,
    list_runs,
    newest,
    open_existing,
    store_kind,
)
from .query import greater_equal, in_
from .records import TaskRunRecord
from .repos import Repository, open_repo
from .runs import format_records
from .stats import stats as compute_stats

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

__all__ = ["DEFAULT_REPO", "app", "format_record", "main", "parse_duration", "resolve_repo"]

DEFAULT_REPO = "sqlite:///tasklog.db"
"""The repository used when nothing else names one (an SQLite file in the current directory)."""

EXIT_USAGE = 2
_BATCH = 1000
_FOLLOW_INTERVAL = 0.5
_FOLLOW_LAG = 10.0
"""Seconds of history ``tail -f`` re-reads on each poll, to catch records that
another process wrote late (its writer batches) with an earlier ``created``."""

F = TypeVar("F", bound=Callable[..., Any])

_HELP = f"""Read, watch and manage the history of recurring tasks stored by tasklog.

The repository is chosen in this order: --repo URL; else the environment
variable {ENV_REPO}; else `repo` under [tool.tasklog] in ./pyproject.toml; else
a top-level `repo` in ./tasklog.toml; else {DEFAULT_REPO}.

URLs: memory://, csv:///path/file.csv (or a path ending in .csv),
sqlite:///file.db, postgresql+psycopg://user@host/db, any SQLAlchemy URL,
with ?table=NAME for SQL (default task_log).
"""

app = typer.Typer(
    name="tasklog",
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ------------------------------------------------------------------ errors


class CLIError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str) -> NoReturn:
    typer.echo(f"tasklog: error: {_one_line(message)}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _user_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return (CLIError, ConfigError, ValueError, LookupError, OSError, sqlalchemy.exc.SQLAlchemyError)


def _guarded(func: F) -> F:
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(0) from None
        except _user_errors() as err:
            message = str(err) or type(err).__name__
            if isinstance(err, KeyError):
                message = f"not found: {err.args[0]!r}" if err.args else "not found"
            _fail(message)

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the final flush is quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ----------------------------------------------------- repository choice


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        msg = f"Cannot read {path}: {err}."
        raise CLIError(msg) from None


def resolve_repo(option: str | None = None, directory: Path | None = None) -> tuple[str, str]:
    """The repository URL to use, and where it came from.

    In order: *option* (``--repo``), ``$TASKLOG_REPO``, ``repo`` under
    ``[tool.tasklog]`` in ``pyproject.toml``, a top-level ``repo`` in
    ``tasklog.toml`` (both in *directory*, default the current one), else
    :data:`DEFAULT_REPO`.
    """
    if option:
        return option, "--repo"
    env = os.environ.get(ENV_REPO)
    if env:
        return env, f"${ENV_REPO}"
    directory = directory or Path.cwd()
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        section = _read_toml(pyproject).get("tool", {}).get("tasklog", {})
        if isinstance(section, dict) and section.get("repo"):
            return _config_text(section["repo"], pyproject), f"{pyproject} [tool.tasklog]"
    own = directory / "tasklog.toml"
    if own.is_file():
        value = _read_toml(own).get("repo")
        if value:
            return _config_text(value, own), str(own)
    return DEFAULT_REPO, "default"


def _config_text(value: Any, path: Path) -> str:
    if not isinstance(value, str):
        msg = f"'repo' in {path} must be a URL string, not {value!r}."
        raise CLIError(msg)
    return value


class _State:
    """What the top-level options chose, for the commands."""

    def __init__(self, repo: str | None, table: str | None) -> None:
        self.repo_option = repo
        self.table = table
        self._url: str | None = None
        self._repos: list[Repository[Any]] = []

    @property
    def url(self) -> str:
        if self._url is None:
            self._url, _ = resolve_repo(self.repo_option)
        return self._url

    def open_for_reading(self) -> Repository[Any]:
        """The existing store, with a model inferred from its columns (never created)."""
        return self._opened(open_existing(self.url, table=self.table))

    def open_for_writing(self) -> Repository[Any]:
        """The store, created with :class:`~tasklog.TaskRunRecord` when missing."""
        try:
            return self.open_for_reading()
        except StoreNotFoundError:
            options: dict[str, Any] = {} if self.table is None else {"table": self.table}
            return self._opened(open_repo(self.url, model=TaskRunRecord, **options))

    def _opened(self, repo: Repository[Any]) -> Repository[Any]:
        self._repos.append(repo)
        return repo

    def close(self) -> None:
        """Close the stores the command opened."""
        for repo in self._repos:
            repo.close()
        self._repos.clear()


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_root().obj
    if not isinstance(state, _State):  # pragma: no cover  (always set by the callback)
        state = _State(None, None)
    return state


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"tasklog {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            "-r",
            metavar="URL",
            help=f"Repository URL (else ${ENV_REPO}, pyproject.toml, tasklog.toml, "
            f"{DEFAULT_REPO}).",
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option("--table", "-t", metavar="T", help="SQL table (default task_log)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    state = _State(repo, table)
    ctx.obj = state
    ctx.call_on_close(state.close)


# ------------------------------------------------------------- durations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or a sum such as ``1h30m``.

    Raises:
        ValueError: *text* is not a duration.
    """
    compact = text.strip().replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in _DURATION.findall(compact))
        return timedelta(seconds=seconds)
    msg = f"{text!r} is not a duration; use a number and a unit: 90s, 15m, 12h, 1d, 2w."
    raise ValueError(msg)


def _since(text: str, option: str) -> timedelta | datetime:
    """A duration (an age) or an ISO date/time, for ``--since``/``--older-than``."""
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = (
            f"Invalid value {text!r} for {option}: use a duration such as 90s, 15m, 12h, 1d, "
            "2w, or an ISO date such as 2024-03-01."
        )
        raise CLIError(msg) from None
    return when if when.tzinfo is not None else when.astimezone()


def _positive(value: int, option: str, *, zero: bool = False) -> int:
    if value < 0 or (value == 0 and not zero):
        least = "0 or more" if zero else "1 or more"
        msg = f"Invalid value {value} for {option}: give {least}."
        raise CLIError(msg)
    return value


# ---------------------------------------------------------------- output


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=not terminal)


def _local(when: datetime) -> datetime:
    return when.astimezone()


def _time_text(when: datetime | float | None) -> str:
    if when is None:
        return ""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(float(when), tz=timezone.utc)
    return _local(when).strftime("%Y-%m-%d %H:%M:%S")


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


_STYLE_BY_LEVEL = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}
_STYLE_BY_OUTCOME = {
    "success": "green",
    "fail": "red",
    "crash": "red",
    "inaction": "yellow",
    "terminate": "yellow",
}


def _level(record: Any) -> str:
    level = getattr(record, "levelname", None)
    if isinstance(level, str) and level:
        return level
    return "ERROR" if str(record.action) in ("fail", "crash") else "INFO"


def format_record(record: Any) -> str:
    """One record as the log line of SPEC §4, its traceback on the following lines.

    ``[2024-03-04 12:00:00.000] [INFO] [task] message`` in local time, as
    ``run.output()`` writes it (:func:`tasklog.runs.format_records`).
    """
    return format_records([record])


def _print_records(records: Iterable[Any], console: Console) -> None:
    for record in records:
        text = format_record(record)
        if console.is_terminal:
            console.print(Text(text, style=_STYLE_BY_LEVEL.get(_level(record), "")))
        else:
            typer.echo(text)


def record_json(record: BaseModel) -> dict[str, Any]:
    """A record as a JSON object: times as ISO 8601 with zone, durations in seconds."""
    data = record.model_dump(mode="json")
    for name, value in record.__dict__.items():
        if isinstance(value, datetime):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            data[name] = aware.isoformat()
        elif isinstance(value, timedelta):
            data[name] = value.total_seconds()
        elif isinstance(value, Enum):
            data[name] = value.value
    return data


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _iso(when: datetime | float | None) -> str | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(float(when), tz=timezone.utc)
    return when.isoformat()


def _require_task(repo: Repository[Any], task: str) -> None:
    if not has_task(repo, task):
        names = [r.task_name for r in latest_per_task(repo)] if len(repo) < 1_000_000 else []
        known = f"; known tasks: {', '.join(names[:20])}" if names else "; the store has no tasks"
        msg = f"Unknown task {task!r}{known}."
        raise CLIError(msg)


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


# --------------------------------------------------------------- commands


@app.command()
@_guarded
def tasks(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Task names, with their last action and time."""
    repo = _state(ctx).open_for_reading()
    latest = latest_per_task(repo)
    if as_json:
        _print_json(
            [
                {
                    "task_name": r.task_name,
                    "last_action": str(r.action),
                    "last_created": _iso(r.created),
                }
                for r in latest
            ]
        )
        return
    table = Table("Task", "Last action", "Last record")
    for r in latest:
        action = str(r.action)
        table.add_row(
            r.task_name, Text(action, _STYLE_BY_OUTCOME.get(action, "")), _time_text(r.created)
        )
    _console().print(table)


@app.command()
@_guarded
def runs(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task.")],
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", help="Show at most N runs.")
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Runs of a task, newest first.

    Each run with its id, start, duration and outcome (the closing action).
    """
    _positive(limit, "--limit")
    repo = _state(ctx).open_for_reading()
    _require_task(repo, task)
    found = list_runs(repo, task, limit)
    if as_json:
        _print_json([run.as_json() for run in found])
        return
    _console().print(_runs_table(task, found))


def _runs_table(task: str, found: list[Any]) -> Table:
    table = Table("Run id", "Start", title=f"Runs of {task}")
    table.add_column("Duration", justify="right")
    table.add_column("Outcome")
    for run in found:
        outcome = run.outcome or "running"
        table.add_row(
            run.run_id,
            _time_text(run.start),
            _duration_text(run.runtime),
            Text(outcome, _STYLE_BY_OUTCOME.get(outcome, "cyan")),
        )
    return table


def _resolve_run_ids(repo: Repository[Any], task: str, wanted: list[str]) -> list[str]:
    """Full run ids for *wanted* (each a run id or a unique prefix of one)."""
    if not wanted:
        last = repo.filter_by(task_name=task, action="run").last()
        if last is None or last.run_id is None:
            last = next((r for r in reversed(newest(repo, 1000, task_name=task)) if r.run_id), None)
        if last is None:
            msg = f"Task {task!r} has no runs; 'tasklog tail' shows its records."
            raise CLIError(msg)
        return [str(last.run_id)]
    found: list[str] = []
    known: list[str] | None = None
    for run_id in wanted:
        if repo.filter_by(task_name=task, run_id=run_id).first() is not None:
            found.append(run_id)
            continue
        if known is None:
            known = [str(r.run_id) for r in repo.filter_by(task_name=task, action="run")]
        matches = sorted({k for k in known if k.startswith(run_id)})
        if len(matches) == 1:
            found.append(matches[0])
        elif matches:
            msg = f"Run id prefix {run_id!r} of task {task!r} is ambiguous: {', '.join(matches)}."
            raise CLIError(msg)
        else:
            msg = f"Task {task!r} has no run {run_id!r}; 'tasklog runs {task}' lists its runs."
            raise CLIError(msg)
    return found


@app.command()
@_guarded
def logs(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task.")],
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="RUN_ID",
            help="Runs to show (ids or unique prefixes); default: the last run.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Log lines of a task's runs, with tracebacks.

    RUN_IDs are run ids or unique prefixes; without any, the last run.
    """
    repo = _state(ctx).open_for_reading()
    if "run_id" not in repo.model.model_fields:
        msg = f"The store's records ({repo.model.__name__}) have no run_id; use 'tasklog tail'."
        raise CLIError(msg)
    _require_task(repo, task)
    ids = _resolve_run_ids(repo, task, list(run_ids or []))
    if as_json:
        _print_json(
            [
                record_json(r)
                for run_id in ids
                for r in repo.filter_by(task_name=task, run_id=run_id)
            ]
        )
        return
    console = _console()
    for n, run_id in enumerate(ids):
        if n:
            typer.echo("")
        _print_records(repo.filter_by(task_name=task, run_id=run_id), console)


def _stats_table(result: Any, title: str = "Statistics") -> Table:
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
            name = Text(figures.task_name)
        rate = figures.success_rate
        table.add_row(
            name,
            str(figures.runs),
            str(figures.successes),
            str(figures.failures),
            str(figures.other),
            "" if rate is None else f"{rate:.0%}",
            _duration_text(figures.mean_runtime),
            _duration_text(figures.p95_runtime),
            _duration_text(figures.max_runtime),
        )
    return table


@app.command()
@_guarded
def stats(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only this task.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="AGE", help="Only runs started since: 1d, 12h, 2w or an ISO date."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run statistics per task, and in total.

    Runs, successes, failures, other outcomes, success rate, mean, p95 and
    maximum duration.
    """
    start = None if since is None else _since(since, "--since")
    repo = _state(ctx).open_for_reading()
    if task is not None:
        _require_task(repo, task)
    result = compute_stats(repo, task_name=task, since=start)
    if as_json:
        _print_json(result.as_json())
        return
    _console().print(_stats_table(result))


@app.command()
@_guarded
def errors(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", help="Show the last N errors.")
    ] = 10,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only this task.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recent failures, with their tracebacks.

    The last N fail and crash records, oldest first.
    """
    _positive(limit, "--limit")
    repo = _state(ctx).open_for_reading()
    conditions: dict[str, Any] = {"action": in_(["fail", "crash"])}
    if task is not None:
        _require_task(repo, task)
        conditions["task_name"] = task
    found = newest(repo, limit, **conditions)
    if as_json:
        _print_json([record_json(r) for r in found])
        return
    console = _console()
    for n, record in enumerate(found):
        if n:
            typer.echo("")
        run_id = getattr(record, "run_id", None)
        if run_id:
            typer.echo(f"# {record.action} of {record.task_name}, run {run_id}")
        _print_records([record], console)


def _record_key(record: BaseModel) -> str:
    return record.model_dump_json()


@app.command()
@_guarded
def tail(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("-n", "--lines", metavar="N", help="Show the last N records.")
    ] = 20,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new records until Ctrl-C.")
    ] = False,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only this task.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document (with -f: one JSON object a line)."),
    ] = False,
) -> None:
    """The newest records; -f follows new ones.

    With -f, records that any process writes are printed as they arrive,
    until Ctrl-C.
    """
    _positive(lines, "-n", zero=True)
    repo = _state(ctx).open_for_reading()
    conditions: dict[str, Any] = {}
    if task is not None:
        conditions["task_name"] = task
    try:
        follower = _Follower(repo, conditions) if follow else None
        found = newest(repo, lines, **conditions)
        if as_json and follower is None:
            _print_json([record_json(r) for r in found])
            return
        console = _console()
        _emit(found, console, as_json)
        if follower is not None:
            follower.mark(found)
            while True:
                time.sleep(_FOLLOW_INTERVAL)
                _emit(follower.poll(), console, as_json)
    except KeyboardInterrupt:
        return


def _emit(records: list[Any], console: Console, as_json: bool) -> None:
    if not records:
        return
    if as_json:
        for record in records:
            typer.echo(json.dumps(record_json(record), ensure_ascii=False))
    else:
        _print_records(records, console)
    sys.stdout.flush()


class _Follower:
    """Finds the records added since it last looked, for ``tail -f``.

    Records are matched by their ``created`` time: each poll re-reads the last
    :data:`_FOLLOW_LAG` seconds and skips what was seen, so records another
    process stores late (its writer batches them) still show. What exists
    when the follower is made counts as seen: the caller prints the newest of
    it, read afterwards, and marks them.
    """

    def __init__(self, repo: Repository[Any], conditions: dict[str, Any]) -> None:
        self.repo = repo
        self.conditions = conditions
        latest = newest(repo, 1, **conditions)
        self.last = float(latest[0].created) if latest else 0.0
        self.seen: dict[str, float] = {}
        self._window()

    def _window(self) -> list[Any]:
        """Records of the last :data:`_FOLLOW_LAG` seconds not seen before (now seen)."""
        fresh = []
        cutoff = greater_equal(self.last - _FOLLOW_LAG)
        for record in self.repo.filter_by(created=cutoff, **self.conditions):
            key = _record_key(record)
            if key not in self.seen:
                self.seen[key] = float(record.created)
                fresh.append(record)
        return fresh

    def mark(self, records: Iterable[Any]) -> None:
        """Count *records* as seen."""
        for record in records:
            self.seen[_record_key(record)] = float(record.created)

    def poll(self) -> list[Any]:
        """The records added since the last poll, in insertion order."""
        fresh = self._window()
        if fresh:
            self.last = max(self.last, *(float(r.created) for r in fresh))
            floor = self.last - _FOLLOW_LAG
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}
        return fresh


@app.command()
@_guarded
def prune(
    ctx: typer.Context,
    keep_runs: Annotated[
        int | None,
        typer.Option("--keep-runs", metavar="N", help="Keep the newest N runs of each task."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete records older than this: 30d, 12h, 2w or an ISO date.",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only this task.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
) -> None:
    """Delete old records (retention). Asks no questions; try --dry-run first."""
    if keep_runs is None and older_than is None:
        msg = "Nothing to prune: give --keep-runs N and/or --older-than AGE."
        raise CLIError(msg)
    if keep_runs is not None:
        _positive(keep_runs, "--keep-runs", zero=True)
    cutoff = None if older_than is None else _since(older_than, "--older-than")
    repo = _state(ctx).open_for_reading()
    if task is not None:
        _require_task(repo, task)
    if dry_run:
        n = _count_prune(repo, keep_runs, cutoff, task)
        typer.echo(f"Would delete {n} record(s); nothing deleted (dry run).")
        return
    n = repo.prune(keep_runs=keep_runs, older_than=cutoff, task_name=task)
    typer.echo(f"Deleted {n} record(s).")


def _count_prune(
    repo: Repository[Any],
    keep_runs: int | None,
    older_than: timedelta | datetime | None,
    task: str | None,
) -> int:
    from .repos.base import cutoff_timestamp, plan_prune

    cutoff = cutoff_timestamp(older_than)
    has_run_id = "run_id" in repo.model.model_fields
    records = repo.filter_by() if task is None else repo.filter_by(task_name=task)
    rows = (
        (n, r.task_name, getattr(r, "run_id", None) if has_run_id else None, float(r.created))
        for n, r in enumerate(records)
    )
    return len(plan_prune(rows, keep_runs, cutoff))


# ------------------------------------------------------- export and copy


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
    )


def _show_progress() -> bool:
    return sys.stderr.isatty()


def _stream(repo: Repository[Any], description: str) -> Iterator[Any]:
    """Iterate over *repo*, with a progress bar on a terminal."""
    if not _show_progress():
        yield from repo
        return
    total = len(repo)
    with _progress() as progress:
        bar = progress.add_task(description, total=total)
        for n, record in enumerate(repo, 1):
            yield record
            if n % _BATCH == 0:
                progress.update(bar, completed=n)
        progress.update(bar, completed=total)


@app.command()
@_guarded
def export(
    ctx: typer.Context,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="csv|jsonl",
            help="Output format (default: from the --output suffix, else jsonl).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE (default: stdout)."),
    ] = None,
) -> None:
    """Write every record as CSV or JSON Lines.

    Streams the store; the CSV is a store tasklog reads back. With --output,
    a progress bar shows on a terminal.
    """
    if fmt is None:
        fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"
    fmt = fmt.lower()
    if fmt not in ("csv", "jsonl"):
        msg = f"Invalid value {fmt!r} for --format: use csv or jsonl."
        raise CLIError(msg)
    repo = _state(ctx).open_for_reading()
    stream: IO[str]
    with contextlib.ExitStack() as stack:
        if output is None:
            stream = sys.stdout
        else:
            stream = stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
        records = _stream(repo, "Exporting") if output is not None else iter(repo)
        n = _write_csv(repo, records, stream) if fmt == "csv" else _write_jsonl(records, stream)
    if output is not None:
        typer.echo(f"Exported {n} record(s) to {output}.")


def _write_csv(repo: Repository[Any], records: Iterable[Any], stream: IO[str]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    fields = list(repo.schema.fields.values())
    writer.writerow([f.name for f in fields])
    n = 0
    for n, record in enumerate(records, 1):  # noqa: B007  (n is the count afterwards)
        row = repo.schema.row(record)
        writer.writerow([f.encode_text(row[f.name]) for f in fields])
    return n


def _write_jsonl(records: Iterable[Any], stream: IO[str]) -> int:
    n = 0
    for n, record in enumerate(records, 1):  # noqa: B007  (n is the count afterwards)
        stream.write(json.dumps(record_json(record), ensure_ascii=False))
        stream.write("\n")
    return n


def _same_store(a: Repository[Any], b: Repository[Any]) -> bool:
    from .repos import CSVFileRepo, SQLRepo

    if isinstance(a, CSVFileRepo) and isinstance(b, CSVFileRepo):
        return a.filename.resolve() == b.filename.resolve()
    if isinstance(a, SQLRepo) and isinstance(b, SQLRepo):
        return str(a.engine.url) == str(b.engine.url) and a.table_name == b.table_name
    return False


@app.command()
@_guarded
def copy(
    src_url: Annotated[str, typer.Argument(metavar="SRC_URL", help="Repository to read.")],
    dst_url: Annotated[
        str, typer.Argument(metavar="DST_URL", help="Repository to append to (created if missing).")
    ],
) -> None:
    """Append every record of one store to another.

    Streams SRC_URL into DST_URL in batches; DST_URL is created (with the
    source's columns) when missing. A progress bar shows on a terminal.
    """
    src = open_existing(src_url)
    with contextlib.ExitStack() as stack:
        stack.callback(src.close)
        try:
            dst = open_existing(dst_url)
        except StoreNotFoundError:
            dst = open_repo(dst_url, model=src.model)
        stack.callback(dst.close)
        if _same_store(src, dst):
            msg = f"SRC_URL and DST_URL name the same store ({src_url!r}); nothing to copy."
            raise CLIError(msg)
        n = 0
        records = _stream(src, "Copying")
        while batch := list(itertools.islice(records, _BATCH)):
            n += dst.add_many(batch)
    typer.echo(f"Copied {n} record(s) from {src_url} to {dst_url}.")


# ------------------------------------------------------------------- demo


def _demo_runs(repo: Repository[Any]) -> None:
    """Run a few example tasks into *repo*: successes, a failure, an inaction."""
    from .adapter import get_task_logger
    from .exceptions import TaskInaction
    from .handler import RepoHandler

    logger = logging.getLogger("tasklog.demo")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = RepoHandler(repo)
    logger.addHandler(handler)
    try:
        report = get_task_logger("nightly-report", logger=logger)
        for pages in (12, 14):
            with report.run() as run:
                run.info("rendering %d pages", pages)
                time.sleep(0.02)
                run.info("sent the report to 3 readers")

        prices = get_task_logger("fetch-prices", logger=logger)
        with prices.run() as run:
            run.info("fetched 250 prices from the warehouse")
            time.sleep(0.01)
        with contextlib.suppress(ConnectionError), prices.run() as run:
            run.info("connecting to the warehouse")
            time.sleep(0.01)
            _connect("warehouse.example.com")

        cleanup = get_task_logger("cleanup-tmp", logger=logger)
        with cleanup.run() as run:
            run.info("no files older than 7 days in /tmp/reports")
            raise TaskInaction
    finally:
        logger.removeHandler(handler)
        handler.close()


def _connect(host: str) -> None:
    msg = f"{host}: connection refused"
    raise ConnectionError(msg)


@app.command()
@_guarded
def demo(ctx: typer.Context) -> None:
    """Run example tasks into the repository, show them.

    Some runs succeed, one fails with a traceback, one has nothing to do;
    then the runs and the statistics are printed.
    """
    state = _state(ctx)
    repo = state.open_for_writing()
    if "run_id" not in repo.model.model_fields:
        msg = (
            f"The store's records ({repo.model.__name__}) have no run_id, so the demo's runs "
            "could not be read back; use another store or table."
        )
        raise CLIError(msg)
    typer.echo(f"Running example tasks into {state.url} ...")
    _demo_runs(repo)
    console = _console()
    for task in ("nightly-report", "fetch-prices", "cleanup-tmp"):
        console.print(_runs_table(task, list_runs(repo, task, 5)))
    console.print(_stats_table(compute_stats(repo)))
    if store_kind(state.url) != "memory":
        options = ""
        if state.repo_option is not None:
            options += f" --repo {shlex.quote(state.repo_option)}"
        if state.table is not None:
            options += f" --table {shlex.quote(state.table)}"
        typer.echo(
            f"Next: tasklog{options} logs fetch-prices   (the failed run, with its traceback)\n"
            f"      tasklog{options} errors\n"
            f"      tasklog{options} tasks --json"
        )


# ------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``tasklog`` console script)."""
    try:
        app(args=argv, prog_name="tasklog")
    except KeyboardInterrupt:
        typer.echo("", err=True)
        sys.exit(130)
    except Exception as err:  # never a traceback for the user
        typer.echo(
            f"tasklog: internal error: {type(err).__name__}: {_one_line(str(err))}", err=True
        )
        sys.exit(1)
