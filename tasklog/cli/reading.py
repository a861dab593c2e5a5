"""The reading commands: tasks, runs, logs, stats, errors, tail."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from ..history import has_task, latest_per_task, newest
from ..query import greater_equal, in_
from ..repos import Repository
from ..stats import stats as compute_stats
from . import render
from ._runs import find_runs, statuses
from .app import CLIError, state
from .options import JsonOption, TaskArgument, TaskOption, age, age_option, count_option

__all__ = ["Follower", "errors", "logs", "require_task", "runs", "stats", "tail", "tasks"]

_FOLLOW_INTERVAL = 0.5
_FOLLOW_LAG = 10.0
"""Seconds of history ``tail -f`` re-reads on each poll, to catch records that
another process wrote late (its writer batches) with an earlier ``created``."""


def require_task(repo: Repository[Any], task: str) -> None:
    """Raise a :class:`CLIError` naming the known tasks when *repo* has no *task*."""
    if not has_task(repo, task):
        names = [r.task_name for r in latest_per_task(repo)] if len(repo) < 1_000_000 else []
        known = f"; known tasks: {', '.join(names[:20])}" if names else "; the store has no tasks"
        msg = f"Unknown task {task!r}{known}."
        raise CLIError(msg)


def require_runs(repo: Repository[Any], instead: str = "'tasklog tail'") -> None:
    """Raise a :class:`CLIError` when the store's records have no ``run_id``."""
    if "run_id" not in repo.model.model_fields:
        msg = (
            f"The store's records ({repo.model.__name__}) have no run_id, so they form no "
            f"runs; use {instead} to read them."
        )
        raise CLIError(msg)


def tasks(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Task names, with their last action and time."""
    latest = latest_per_task(state(ctx).open_for_reading())
    if as_json:
        render.print_json(render.tasks_json(latest))
    else:
        render.console().print(render.tasks_table(latest))


def runs(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Argument(metavar="[TASK]", help="The task (default: every task).")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            metavar="S",
            help="Only runs with this outcome (success, fail, crash, ...), 'running' (still "
            "open) or 'lost' (open, and its process is gone on this host); several with commas.",
        ),
    ] = None,
    since: Annotated[
        str | None, age_option("--since", "Only runs started since: 1d, 12h, 2w or an ISO date.")
    ] = None,
    until: Annotated[
        str | None, age_option("--until", "Only runs started before: 1d, 12h or an ISO date.")
    ] = None,
    limit: Annotated[int, count_option("Show at most N runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Runs, newest first, of one task or of all.

    Each run with its task, id, start, duration and outcome (the closing
    action; 'running' while open, 'lost' when open and its process is gone on
    this host — worked out as it is shown, nothing is written).
    """
    wanted = None if status is None else _statuses(status)
    start = None if since is None else age(since, "--since")
    end = None if until is None else age(until, "--until")
    repo = state(ctx).open_for_reading()
    require_runs(repo, "'tail' or 'errors'")
    if task is not None:
        require_task(repo, task)
    found = find_runs(
        repo, task_name=task, status=wanted, since=start, until=end, limit=limit
    )
    if as_json:
        render.print_json([run.as_json() for run in found])
    else:
        render.console().print(render.runs_table(task, found))


def _statuses(text: str) -> list[str]:
    known = statuses()
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in known]
    if unknown or not wanted:
        msg = f"Invalid value {text!r} for --status: use one or more of {', '.join(known)}."
        raise CLIError(msg)
    return wanted


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


def logs(
    ctx: typer.Context,
    task: TaskArgument,
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
    repo = state(ctx).open_for_reading()
    require_runs(repo)
    require_task(repo, task)
    ids = _resolve_run_ids(repo, task, list(run_ids or []))
    if as_json:
        render.print_json(
            [
                render.record_json(r)
                for run_id in ids
                for r in repo.filter_by(task_name=task, run_id=run_id)
            ]
        )
        return
    out = render.console()
    for n, run_id in enumerate(ids):
        if n:
            typer.echo("")
        render.print_records(repo.filter_by(task_name=task, run_id=run_id), out)


def stats(
    ctx: typer.Context,
    task: TaskOption = None,
    since: Annotated[
        str | None, age_option("--since", "Only runs started since: 1d, 12h, 2w or an ISO date.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run statistics per task, and in total.

    Runs, successes, failures, other outcomes, success rate, mean, p95 and
    maximum duration.
    """
    start = None if since is None else age(since, "--since")
    repo = state(ctx).open_for_reading()
    require_runs(repo, "'tail' or 'errors'")
    if task is not None:
        require_task(repo, task)
    result = compute_stats(repo, task_name=task, since=start)
    if as_json:
        render.print_json(result.as_json())
    else:
        render.console().print(render.stats_table(result))


def errors(
    ctx: typer.Context,
    limit: Annotated[int, count_option("Show the last N errors.")] = 10,
    task: TaskOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recent failures, with their tracebacks.

    The last N fail and crash records, oldest first.
    """
    repo = state(ctx).open_for_reading()
    conditions: dict[str, Any] = {"action": in_(["fail", "crash"])}
    if task is not None:
        require_task(repo, task)
        conditions["task_name"] = task
    found = newest(repo, limit, **conditions)
    if as_json:
        render.print_json([render.record_json(r) for r in found])
        return
    out = render.console()
    for n, record in enumerate(found):
        if n:
            typer.echo("")
        run_id = getattr(record, "run_id", None)
        if run_id:
            typer.echo(f"# {record.action} of {record.task_name}, run {run_id}")
        render.print_records([record], out)


def tail(
    ctx: typer.Context,
    lines: Annotated[
        int, count_option("Show the last N records.", "-n", "--lines", zero=True)
    ] = 20,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new records until Ctrl-C.")
    ] = False,
    task: TaskOption = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document (with -f: one JSON object a line)."),
    ] = False,
) -> None:
    """The newest records; -f follows new ones.

    With -f, records that any process writes are printed as they arrive,
    until Ctrl-C.
    """
    current = state(ctx)
    repo = current.open_for_reading()
    conditions: dict[str, Any] = {}
    if task is not None:
        require_task(repo, task)
        conditions["task_name"] = task
    try:
        follower = Follower(repo, conditions, current.still_there) if follow else None
        found = newest(repo, lines, **conditions)
        if as_json and follower is None:
            render.print_json([render.record_json(r) for r in found])
            return
        out = render.console()
        _emit(found, out, as_json)
        if follower is not None:
            follower.mark(found)
            while True:
                if follower.feed is None:
                    time.sleep(_FOLLOW_INTERVAL)  # else the feed waits for new records
                _emit(follower.poll(), out, as_json)
    except KeyboardInterrupt:
        return


def _emit(records: list[Any], out: Any, as_json: bool) -> None:
    if not records:
        return
    if as_json:
        for record in records:
            render.print_json_line(render.record_json(record))
    else:
        render.print_records(records, out)
    sys.stdout.flush()


def _record_key(record: BaseModel) -> str:
    return record.model_dump_json()


class Follower:
    """Finds the records added since it last looked, for ``tail -f``.

    Records are matched by their ``created`` time: each poll re-reads the last
    :data:`_FOLLOW_LAG` seconds and skips what was seen, so records another
    process stores late (its writer batches them) still show. What exists
    when the follower is made counts as seen: the caller prints the newest of
    it, read afterwards, and marks them.
    """

    def __init__(
        self,
        repo: Repository[Any],
        conditions: dict[str, Any],
        check: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self.conditions = conditions
        self.check = check
        """Raises when the store is gone (deleted or moved); called on each poll."""
        self.feed = _change_feed(repo)
        """The store's change feed (``position``/``records_after``), or None: poll."""
        self.cursor = self.feed[0]() if self.feed is not None else 0
        latest = newest(repo, 1, **conditions)
        self.last = float(latest[0].created) if latest else 0.0
        self.seen: dict[str, float] = {}
        if self.feed is None:
            self._window()

    def _after(self) -> list[Any]:
        """Records the change feed gives after the cursor, matching the conditions
        and not printed already (the newest shown at start may follow the cursor)."""
        assert self.feed is not None
        records, self.cursor = self.feed[1](self.cursor, wait=_FOLLOW_INTERVAL)
        return [
            r for r in records
            if all(getattr(r, k, None) == v for k, v in self.conditions.items())
            and _record_key(r) not in self.seen
        ]

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
        """The records added since the last poll, in insertion order.

        Raises:
            CLIError: the store is gone (see :attr:`check`).
        """
        if self.check is not None:
            self.check()
        try:
            fresh = self._after() if self.feed is not None else self._window()
        except Exception:
            if self.check is not None:
                self.check()  # gone meanwhile (a dropped table fails the query)
            raise
        if fresh and self.feed is None:
            self.last = max(self.last, *(float(r.created) for r in fresh))
            floor = self.last - _FOLLOW_LAG
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}
        return fresh


_Feed = tuple[Callable[[], int], Callable[..., tuple[list[Any], int]]]


def _change_feed(repo: Any) -> _Feed | None:
    """A store's optional change feed: ``position()`` and ``records_after(position,
    wait=SECONDS)`` (RedisRepo: its capped stream); None for stores without (poll)."""
    position = getattr(repo, "position", None)
    after = getattr(repo, "records_after", None)
    if callable(position) and callable(after):
        return position, after
    return None
