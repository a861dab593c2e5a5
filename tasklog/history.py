"""What a run is, and reading runs back: the one module that knows.

A run is the records of one task that share a ``run_id``. It starts with its
``run`` record and ends with its first closing record (an action in
:data:`CLOSING_ACTIONS`), whose action is the run's *outcome*; a run without
one is open (``running``). Its start and end are the ``start``/``end`` fields
of those records when the model has them, else their ``created`` times, and
its runtime the closing record's ``runtime``, else end minus start.

Everything that reads runs goes through here — :func:`list_runs`,
:func:`get_run`, :func:`tasklog.stats`, :func:`mark_crashed`, the CLI and the
web service — over the repository primitives, on every store alike. A store
may answer some of these reads faster itself by implementing
:class:`RunQueries` (the SQL store computes figures in the database); the
answers are the same.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .exceptions import ConfigError
from .query import Between, GreaterEqual, In, LessEqual, Operator, Query, in_
from .repos import Repository
from .repos.base import Row, cutoff_timestamp

__all__ = [
    "CLOSING_ACTIONS",
    "FAILURES",
    "OTHER",
    "RUNNING",
    "CrashCandidate",
    "RunIndexQueries",
    "RunInfo",
    "RunQueries",
    "aggregate_runs",
    "count_outcome",
    "crash_candidates",
    "figures_row",
    "get_run",
    "has_task",
    "latest_per_task",
    "list_runs",
    "lost_runs",
    "mark_crashed",
    "nearest_rank",
    "newest",
    "newest_closed",
    "open_runs",
    "outcome_counts",
    "process_gone",
    "recent_runs",
    "record_json",
    "require_run_fields",
    "run_figures",
    "runtime_seconds",
    "summarize_runs",
    "write_crashes",
]

CLOSING_ACTIONS: tuple[str, ...] = (
    "success", "fail", "crash", "inaction", "terminate", "missed", "skipped"
)
"""The actions that end a run; a run's first one is its outcome.

``missed`` and ``skipped`` are written by the scheduler hooks
(:mod:`tasklog.contrib`) for an execution that did not happen."""
_CLOSING = frozenset(CLOSING_ACTIONS)
FAILURES: tuple[str, ...] = ("fail", "crash")
"""Outcomes counted as failures."""
OTHER: tuple[str, ...] = ("inaction", "terminate")
"""Outcomes that neither help nor hurt the success rate."""
RUNNING = "running"
"""The ``outcome`` filter of :func:`list_runs` for runs still open."""

_RUN_FIELDS = ("task_name", "action", "created", "run_id")
_PAGE = 200
"""Runs read per round trip while filling a page."""


@runtime_checkable
class RunQueries(Protocol):
    """The fast path a store may provide for reads over runs.

    A repository that has these methods is asked first; a method returning
    None (it cannot answer here, e.g. a table without its key column) falls
    back to the generic path over the primitives. Answers must equal the
    generic path's.
    """

    def aggregate_runs(
        self, *, task_name: str | None, since: float | None, by_task: bool
    ) -> list[Row] | None:
        """Rows as :func:`summarize_runs` gives them, over runs started since *since*."""

    def latest_per_task_rows(self) -> list[Row] | None:
        """The newest row of each task (any order)."""

    def open_run_rows(self, task_names: list[str] | None) -> list[Row] | None:
        """The ``run`` rows (with a run id) of runs without a closing record, of
        these tasks (all with None); the first ``run`` row of each run."""


RunPair = tuple[Row, "Row | None"]
"""A run as ``(its run row, its first closing row or None)``."""


@runtime_checkable
class RunIndexQueries(Protocol):
    """Reads a store answers from an index of runs (one row per run) it keeps.

    Each returns None when the store has no index here (the generic path
    answers). Answers must equal the generic path's.
    """

    def run_rows(
        self,
        *,
        task_names: list[str] | None,
        outcomes: list[str] | None,
        running: bool,
        low: float | None,
        high: float | None,
        bound: tuple[float, str, str] | None,
        limit: int | None,
    ) -> list[RunPair] | None:
        """Runs of these tasks (all with None) whose outcome is one of *outcomes*
        or, with *running*, still open (any with neither), started from *low*
        to *high*, before the cursor key *bound*; newest start first (ties by
        task and run id, descending), at most *limit*."""

    def run_row(self, run_id: str) -> list[RunPair] | None:
        """The run *run_id* (a list of one pair, or empty)."""

    def recent_run_rows(self, task_names: list[str], n: int) -> list[RunPair] | None:
        """The newest *n* runs of each of these tasks (each task's newest first)."""

    def newest_closed_rows(
        self, task_names: list[str], outcomes: list[str]
    ) -> list[RunPair] | None:
        """Per task, the run with one of *outcomes* whose closing record's
        ``created`` is the newest (tasks without one are left out)."""

    def run_starts(
        self, *, task_name: str | None, low: float
    ) -> list[tuple[Any, float, str | None]] | None:
        """``(start field or None, created, outcome or None)`` of each run of
        *task_name* (all with None) whose run record's ``created`` >= *low*."""

    def run_figures(
        self, *, task_name: str | None, since: float | None, with_total: bool = True
    ) -> tuple[list[Row], Row] | None:
        """:func:`run_figures`' answer: rows per task and the total, in one pass
        (without *with_total*, the total's percentiles and maximum may be None)."""


def require_run_fields(repo: Repository[Any]) -> None:
    """Check that *repo*'s model can describe runs (``task_name``, ``action``,
    ``created`` and ``run_id``).

    Raises:
        ConfigError: a field is missing (a ``ValueError``); the message names it.
    """
    missing = [name for name in _RUN_FIELDS if name not in repo.schema.fields]
    if missing:
        msg = (
            f"Runs need the fields task_name, action, created and run_id; the store's records "
            f"({repo.model.__name__}) lack {', '.join(missing)}. Use a model with them, such "
            "as TaskRunRecord or MinimalRunRecord (or 'tail' and 'errors' to read them)."
        )
        raise ConfigError(msg)


# ------------------------------------------------------------------ records


def newest(repo: Repository[Any], n: int, **conditions: Any) -> list[Any]:
    """The last *n* records (in insertion order) matching *conditions*, oldest first.

    Streams: a CSV file is read once keeping *n* rows; SQL asks the database
    for the last *n* rows.
    """
    if n <= 0:
        return []
    result = repo.filter_by(**conditions)
    repo.sync()
    rows = list(repo.select_rows(result.query, limit=n, reverse=True))
    build = repo.model.model_validate
    return [build(row) for row in reversed(rows)]


def latest_per_task(repo: Repository[Any]) -> list[Any]:
    """The newest record of each task, sorted by task name."""
    repo.sync()
    rows = repo.latest_per_task_rows() if isinstance(repo, RunQueries) else None
    if rows is None:
        found: dict[Any, Row] = {}
        for row in repo.select_rows(Query()):
            found[row.get("task_name")] = row
        rows = list(found.values())
    build = repo.model.model_validate
    return sorted((build(row) for row in rows), key=lambda r: str(r.task_name))



def record_json(record: BaseModel) -> dict[str, Any]:
    """A record as a JSON object, as the CLI's ``--json`` and the web API give it:
    times as ISO 8601 with their zone, durations in seconds."""
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

def has_task(repo: Repository[Any], task_name: str) -> bool:
    """Whether *repo* holds any record of *task_name*."""
    return repo.filter_by(task_name=task_name).first() is not None


# --------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunInfo:
    """One run: its ``run`` record and its closing record, summarised.

    From :func:`list_runs` and :func:`get_run`, it also reads the run's
    records back (:meth:`records`, :meth:`output`).
    """

    run_id: str
    task_name: str
    start: datetime
    end: datetime | None
    runtime: timedelta | None
    outcome: str | None
    """The closing action (``success``, ``fail``, ...), or None while running."""
    host: str | None = None
    process: int | None = None
    cursor: str = ""
    """Pass as ``before=`` to :func:`list_runs` for the runs after this one."""
    repo: Repository[Any] | None = field(default=None, compare=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether the run has no closing record yet."""
        return self.outcome is None

    def as_json(self) -> dict[str, Any]:
        """The run as the CLI prints it (``runs --json``): ISO 8601 times, runtime in seconds."""
        return {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "runtime": None if self.runtime is None else self.runtime.total_seconds(),
            "outcome": self.outcome,
        }

    def records(self) -> list[Any]:
        """The run's stored records, in order.

        Raises:
            LookupError: this RunInfo was not read from a repository.
        """
        if self.repo is None:
            msg = "This RunInfo has no repository; get it from list_runs() or get_run()."
            raise LookupError(msg)
        return self.repo.filter_by(task_name=self.task_name, run_id=self.run_id).all()

    def output(self) -> str:
        """The run's log as lines ``[2024-03-04 12:00:00.000] [INFO] [task] message``
        (as :meth:`tasklog.Run.output`, from the stored records)."""
        from .runs import format_records

        return format_records(self.records())


def _when(row: Row, name: str) -> datetime:
    value = row.get(name)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(row["created"]), tz=timezone.utc)


def _encode_cursor(created: float, task: Any, run_id: Any) -> str:
    if type(created) is float and math.isfinite(created) and type(task) is str \
            and type(run_id) is str:  # what json.dumps gives, without its set-up per call
        text = f"[{created!r},{_quote(task)},{_quote(run_id)}]"
    else:
        text = json.dumps([created, task, run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, task, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return float(created), str(task), str(run_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        msg = f"Invalid cursor {cursor!r}: pass the cursor of a RunInfo from list_runs."
        raise ConfigError(msg) from None


def _key(row: Row) -> tuple[float, str, str]:
    return (float(row["created"]), str(row["task_name"]), str(row["run_id"]))


def _closings(
    repo: Repository[Any], starts: Sequence[Row], first: dict[tuple[Any, Any], float] | None = None
) -> dict[tuple[Any, Any], Row]:
    """The first closing row of each run in *starts*, by (task, run id); and, in
    *first* when given, the earliest ``run`` record's ``created`` of each (a run
    logged twice starts at its first ``run`` record)."""
    wanted = {(row["task_name"], row["run_id"]) for row in starts}
    ids = sorted({str(run_id) for _, run_id in wanted})
    found: dict[tuple[Any, Any], Row] = {}
    for i in range(0, len(ids), 500):
        # by run id alone: every store's run_id index answers it (a run has few records)
        query = Query.build(repo.schema, {"run_id": in_(ids[i : i + 500])})
        for row in repo.select_rows(query):
            key = (row["task_name"], row["run_id"])
            if key not in wanted:
                continue
            action = row["action"]
            if action in _CLOSING and key not in found:
                found[key] = row
            elif action == "run" and first is not None:
                created = float(row["created"])
                if key not in first or created < first[key]:
                    first[key] = created
    return found


def _earliest_starts(rows: Iterable[Row]) -> list[Row]:
    """One ``run`` row per run (task, run id): its earliest."""
    chosen: dict[tuple[Any, Any], Row] = {}
    for row in rows:
        key = (row["task_name"], row["run_id"])
        if key not in chosen or float(row["created"]) < float(chosen[key]["created"]):
            chosen[key] = row
    return list(chosen.values())


def _run_info(repo: Repository[Any], start: Row, end: Row | None) -> RunInfo:
    begun = _when(start, "start")
    finish = runtime = outcome = None
    if end is not None:
        outcome = str(end["action"])
        finish = _when(end, "end")
        value = end.get("runtime")
        runtime = value if isinstance(value, timedelta) else finish - begun
    process = start.get("process")
    return RunInfo(
        run_id=str(start["run_id"]),
        task_name=str(start["task_name"]),
        start=begun,
        end=finish,
        runtime=runtime,
        outcome=outcome,
        host=start.get("host"),
        process=process if isinstance(process, int) else None,
        cursor=_encode_cursor(*_key(start)),
        repo=repo,
    )


def _names(value: str | Iterable[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(v, str) for v in names):
        msg = f"{what} must be a name or a list of names, not {value!r}."
        raise ConfigError(msg)
    return names


def _starts_newest_first(
    repo: Repository[Any],
    conditions: dict[str, Any],
    low: float | None,
    high: float | None,
    bound: tuple[float, str, str] | None,
) -> Iterator[Row]:
    """``run`` rows matching *conditions* and started from *low* to *high*, newest
    start first (ties by task and run id, descending), only those before *bound*.

    One query, streamed (each store sorts once, the SQL store with its
    ``created`` index); rows of one start time are gathered to order the tie.
    """
    where = dict(conditions)
    top = high if bound is None else bound[0] if high is None else min(high, bound[0])
    span = _created_range(low, top)
    if span is not None:
        where["created"] = span
    query = Query.build(repo.schema, where).ordered(repo.schema, ("-created",))
    rows = repo.select_rows(query)
    tie: list[Row] = []
    try:
        for row in rows:
            if row.get("run_id") is None:
                continue
            if tie and float(row["created"]) != float(tie[0]["created"]):
                yield from sorted(tie, key=_key, reverse=True)
                tie = []
            if bound is None or _key(row) < bound:
                tie.append(row)
        yield from sorted(tie, key=_key, reverse=True)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _created_range(low: float | None, high: float | None) -> Operator | None:
    """The condition ``low <= created <= high`` (a None bound is open)."""
    if low is not None and high is not None:
        return Between(low, high)
    if low is not None:
        return GreaterEqual(low)
    if high is not None:
        return LessEqual(high)
    return None


def list_runs(
    repo: Repository[Any],
    *,
    task_name: str | Iterable[str] | None = None,
    outcome: str | Iterable[str] | None = None,
    since: timedelta | datetime | float | None = None,
    until: timedelta | datetime | float | None = None,
    limit: int | None = 100,
    before: str | None = None,
) -> list[RunInfo]:
    """Runs, newest start first, across all tasks unless *task_name* narrows it.

    Args:
        repo: any repository whose model has ``run_id``.
        task_name: a task name or a list of them.
        outcome: a closing action or a list of them; ``"running"`` means still open.
        since: runs that started at or after this (a ``timedelta`` back from
            now, a ``datetime`` or an epoch timestamp).
        until: runs that started at or before this (same forms).
        limit: at most this many runs (None: all).
        before: the ``cursor`` of a run from an earlier page: the runs after
            it. Pages stay correct while new runs arrive (they start later,
            so they come before any cursor).

    Raises:
        ConfigError: the model has no ``run_id``, or a bad argument (a ``ValueError``).
    """
    require_run_fields(repo)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        msg = f"limit must be a non-negative integer or None, not {limit!r}."
        raise ConfigError(msg)
    tasks = _names(task_name, "task_name")
    outcomes = _names(outcome, "outcome")
    bound = _decode_cursor(before) if before is not None else None
    conditions: dict[str, Any] = {"action": "run"}
    if tasks is not None:
        conditions["task_name"] = in_(tasks)
    low, high = _timestamp(since, "since"), _timestamp(until, "until")
    if low is not None and high is not None and low > high:
        return []
    if limit == 0:
        return []
    repo.sync()
    if isinstance(repo, RunIndexQueries):
        indexed = repo.run_rows(
            task_names=tasks,
            outcomes=None if outcomes is None else [o for o in outcomes if o != RUNNING],
            running=outcomes is not None and RUNNING in outcomes,
            low=low, high=high, bound=bound, limit=limit,
        )
        if indexed is not None:
            return [_run_info(repo, start, end) for start, end in indexed]
    if outcomes is not None and set(outcomes) == {RUNNING} and isinstance(repo, RunQueries):
        fast = repo.open_run_rows(tasks)
        if fast is not None:  # open runs only: the store finds them in one query
            chosen = sorted(
                (
                    row for row in _earliest_starts(fast)
                    if (low is None or float(row["created"]) >= low)
                    and (high is None or float(row["created"]) <= high)
                    and (bound is None or _key(row) < bound)
                ),
                key=_key,
                reverse=True,
            )
            return [_run_info(repo, row, None) for row in chosen[:limit]]
    wanted_open = outcomes is not None and RUNNING in outcomes
    wanted = None if outcomes is None else {o for o in outcomes if o != RUNNING}
    runs: list[RunInfo] = []
    starts = _starts_newest_first(repo, conditions, low, high, bound)
    chunk: list[Row] = []
    seen: set[tuple[Any, Any]] = set()

    def take(rows: list[Row]) -> bool:
        first: dict[tuple[Any, Any], float] = {}
        ends = _closings(repo, rows, first)
        for row in rows:
            key = (row["task_name"], row["run_id"])
            if key in seen or float(row["created"]) > first.get(key, float("inf")):
                continue  # a run record of a run listed already, or a later one
            seen.add(key)
            end = ends.get(key)
            if outcomes is not None:
                if end is None and not wanted_open:
                    continue
                if end is not None and (wanted is None or end["action"] not in wanted):
                    continue
            runs.append(_run_info(repo, row, end))
            if limit is not None and len(runs) >= limit:
                return True
        return False

    size = min(limit or _PAGE, _PAGE)
    try:
        for row in starts:
            chunk.append(row)
            if len(chunk) >= size:
                if take(chunk):
                    return runs
                chunk = []
                size = _PAGE
        if chunk:
            take(chunk)
    finally:
        close = getattr(starts, "close", None)
        if close is not None:
            close()
    return runs


def outcome_counts(
    repo: Repository[Any], *, origin: float, step: float, task_name: str | None = None
) -> dict[int, dict[str, int]]:
    """The runs that started since *origin*, counted per time bucket and outcome.

    Bucket *k* holds the runs whose start (as :attr:`RunInfo.start`) is in
    ``[origin + k*step, origin + (k+1)*step)``; the outcome is ``running``
    while open. A store with a runs index reads the window's runs without
    building each one.

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    repo.sync()
    found: dict[int, dict[str, int]] = {}

    def count(start: float, outcome: str | None) -> None:
        slot = int((start - origin) // step)
        if slot >= 0:
            bucket = found.setdefault(slot, {})
            name = outcome or RUNNING
            bucket[name] = bucket.get(name, 0) + 1

    if isinstance(repo, RunIndexQueries):
        indexed = repo.run_starts(task_name=task_name, low=origin)
        if indexed is not None:
            for start, created, outcome in indexed:
                when = _when({"start": start, "created": created}, "start")
                count(when.timestamp(), outcome)
            return found
    for run in list_runs(repo, task_name=task_name, since=origin, limit=None):
        count(run.start.timestamp(), run.outcome)
    return found


def newest_closed(
    repo: Repository[Any], task_names: Sequence[str], outcome: str | Iterable[str] | None = None
) -> dict[str, RunInfo]:
    """Per task, its run that ended last: the one whose closing record has the
    newest ``created``, among runs with one of these outcomes (any closing
    action by default). Tasks with no such run are left out.

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    outcomes = _names(outcome, "outcome") or list(CLOSING_ACTIONS)
    tasks = [str(task) for task in task_names]
    repo.sync()
    if isinstance(repo, RunIndexQueries):
        indexed = repo.newest_closed_rows(tasks, outcomes)
        if indexed is not None:
            return {str(start["task_name"]): _run_info(repo, start, end) for start, end in indexed}
    found: dict[str, RunInfo] = {}
    for task in tasks:
        query = Query.build(repo.schema, {"task_name": task, "action": in_(outcomes)})
        ends = repo.select_rows(query.ordered(repo.schema, ("-created",)), limit=None)
        for end in ends:  # newest first: the first that is its started run's first closing
            if end.get("run_id") is None:
                continue
            starts = _earliest_starts(repo.select_rows(Query.build(
                repo.schema, {"task_name": task, "run_id": end["run_id"], "action": "run"}
            )))
            first = _closings(repo, starts).get((task, end["run_id"])) if starts else None
            if first is not None and (first["action"], float(first["created"])) == (
                end["action"], float(end["created"])
            ):
                found[task] = _run_info(repo, starts[0], first)
                break
        close = getattr(ends, "close", None)
        if close is not None:
            close()
    return found


def recent_runs(
    repo: Repository[Any], task_names: Sequence[str], n: int = 20
) -> dict[str, list[RunInfo]]:
    """The newest *n* runs of each of these tasks, newest first (what
    :func:`list_runs` gives per task; a store with a runs index reads them
    all in one go).

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    found: dict[str, list[RunInfo]] = {str(task): [] for task in task_names}
    if n <= 0 or not found:
        return found
    repo.sync()
    if isinstance(repo, RunIndexQueries):
        indexed = repo.recent_run_rows(list(found), n)
        if indexed is not None:
            for start, end in indexed:
                found[str(start["task_name"])].append(_run_info(repo, start, end))
            return found
    return {task: list_runs(repo, task_name=task, limit=n) for task in found}


def _timestamp(value: timedelta | datetime | float | None, name: str) -> float | None:
    try:
        return cutoff_timestamp(value)
    except TypeError:
        msg = f"{name} must be a timedelta, a datetime or an epoch timestamp, not {value!r}."
        raise ConfigError(msg) from None
    except OverflowError:
        msg = f"{name} is out of range: {value!r}."
        raise ConfigError(msg) from None


def get_run(repo: Repository[Any], run_id: str) -> RunInfo | None:
    """The run with this id, or None.

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    repo.sync()
    if isinstance(repo, RunIndexQueries):
        indexed = repo.run_row(str(run_id))
        if indexed is not None:
            return _run_info(repo, *indexed[0]) if indexed else None
    query = Query.build(repo.schema, {"run_id": str(run_id), "action": "run"})
    starts = list(repo.select_rows(query))
    if not starts:
        return None
    start = min(starts, key=lambda row: (float(row["created"]), str(row["task_name"])))
    return _run_info(repo, start, _closings(repo, [start]).get(
        (start["task_name"], start["run_id"])
    ))


def open_runs(
    repo: Repository[Any], *, task_name: str | Iterable[str] | None = None
) -> list[RunInfo]:
    """Runs that started and have no closing record, oldest start first."""
    require_run_fields(repo)
    starts = _open_starts(repo, _names(task_name, "task_name"))
    return [_run_info(repo, row, None) for row in starts]


def _open_starts(repo: Repository[Any], tasks: list[str] | None) -> list[Row]:
    """The ``run`` rows of :func:`open_runs`, oldest start first."""
    scope: dict[str, Any] = {} if tasks is None else {"task_name": in_(tasks)}
    repo.sync()
    fast = repo.open_run_rows(tasks) if isinstance(repo, RunQueries) else None
    if fast is not None:
        return sorted(fast, key=_key)
    opened: dict[tuple[Any, Any], Row] = {}
    for row in repo.select_rows(Query.build(repo.schema, {**scope, "action": "run"})):
        if row.get("run_id") is not None:
            opened.setdefault((row["task_name"], row["run_id"]), row)
    if opened:
        closing = Query.build(repo.schema, {**scope, "action": In(CLOSING_ACTIONS)})
        for row in repo.select_rows(closing):
            opened.pop((row["task_name"], row.get("run_id")), None)
    return sorted(opened.values(), key=_key)


# ------------------------------------------------------------- dead runs


def process_gone(host: Any, pid: Any) -> bool | None:
    """Whether a run's process is known gone (True), alive (False) or unknown (None:
    another host, or no pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or host != socket.gethostname():
        return None
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by someone else
        return False
    except (OSError, OverflowError):
        return None
    return False


def lost_runs(
    repo: Repository[Any], *, task_name: str | Iterable[str] | None = None
) -> list[RunInfo]:
    """Open runs whose process is gone on this host (computed now, nothing written),
    oldest first."""
    return [
        run for run in open_runs(repo, task_name=task_name)
        if process_gone(run.host, run.process)
    ]


@dataclass(frozen=True)
class CrashCandidate:
    """A run :func:`mark_crashed` would mark, and why."""

    run: RunInfo
    reason: str
    last_seen: datetime
    """The time of the run's newest record."""


def _last_seen(repo: Repository[Any], run: RunInfo) -> datetime:
    query = Query.build(repo.schema, {"task_name": run.task_name, "run_id": run.run_id})
    last = list(repo.select_rows(query, limit=1, reverse=True))
    if not last:
        return run.start
    return datetime.fromtimestamp(float(last[0]["created"]), tz=timezone.utc)


def crash_candidates(
    repo: Repository[Any],
    *,
    older_than: timedelta | datetime | float | None = None,
    stale_after: timedelta | datetime | float | None = None,
) -> list[CrashCandidate]:
    """The open runs :func:`mark_crashed` would mark (nothing is written), oldest first.

    A run is dead when its process is gone (it names this host and a pid
    that no longer exists), or it started before *older_than*, or its newest
    record is older than *stale_after* (ages as ``timedelta``, or a
    ``datetime``/epoch timestamp). A run whose process is alive on this host
    is never a candidate.
    """
    started_before = _timestamp(older_than, "older_than")
    seen_before = _timestamp(stale_after, "stale_after")
    found: list[CrashCandidate] = []
    require_run_fields(repo)
    for row in _open_starts(repo, None):
        gone = process_gone(row.get("host"), row.get("process"))
        if gone is False:
            continue
        if not gone and started_before is None and seen_before is None:
            continue  # nothing could make it a candidate: its records are not read
        run = _run_info(repo, row, None)
        last_seen = _last_seen(repo, run)
        if gone:
            why = f"its process {run.process} on {run.host} is gone"
        elif started_before is not None and run.start.timestamp() < started_before:
            why = "it did not finish in time"
        elif seen_before is not None and last_seen.timestamp() < seen_before:
            why = f"nothing was logged since {last_seen.isoformat()}"
        else:
            continue
        found.append(CrashCandidate(run, why, last_seen))
    return found


def mark_crashed(
    repo: Repository[Any],
    *,
    older_than: timedelta | datetime | float | None = None,
    stale_after: timedelta | datetime | float | None = None,
) -> list[str]:
    """Log ``crash`` for runs that started, never finished, and are dead.

    Dead as :func:`crash_candidates` tells: the process is gone (same host),
    or the run started before *older_than*, or its newest record is older
    than *stale_after*. A run whose process is alive on this host is never
    marked. Marking again marks nothing new: a ``crash`` record closes the run.

    The ``crash`` records are added to *repo* in one batch, with the run's
    task, run id, host and process, and ``start``/``end``/``runtime`` (up to
    the run's newest record) where the model has them.

    Returns:
        The run ids marked, oldest run first.

    Raises:
        ConfigError: the model has no ``run_id`` (a ``ValueError``).
    """
    require_run_fields(repo)
    return write_crashes(
        repo, crash_candidates(repo, older_than=older_than, stale_after=stale_after)
    )


def write_crashes(repo: Repository[Any], candidates: Sequence[CrashCandidate]) -> list[str]:
    """Log ``crash`` for each of *candidates* (from :func:`crash_candidates`), in one
    batch; their run ids."""
    if candidates:
        repo.add_many(
            _crash_record(repo, c.run, c.last_seen, f"Run {c.run.run_id} crashed: {c.reason}")
            for c in candidates
        )
    return [c.run.run_id for c in candidates]


def _crash_record(repo: Repository[Any], run: RunInfo, last_seen: datetime, message: str) -> Any:
    """A ``crash`` record for *run*, with what the model has."""
    now = time.time()
    data: dict[str, Any] = {
        "task_name": run.task_name,
        "action": "crash",
        "created": now,
        "run_id": run.run_id,
        "host": run.host,
        "process": run.process,
        "start": run.start,
        "end": last_seen,
        "runtime": max(last_seen - run.start, timedelta(0)),
        "message": message,
        "msg": message,
        "formatted_message": message,
        "exc_text": None,
        "name": "tasklog.crash",
        "levelname": "ERROR",
        "levelno": 40,
        "pathname": "",
        "filename": "",
        "module": "",
        "lineno": 0,
        "funcName": "",
        "msecs": (now % 1) * 1000,
        "relativeCreated": 0.0,
        "thread": None,
        "threadName": None,
        "processName": None,
    }
    fields = repo.schema.fields
    if any(name not in data for name in fields):  # the run's own fields (attempt, ...)
        query = Query.build(repo.schema, {"run_id": run.run_id, "action": "run"})
        for row in repo.select_rows(query, limit=1):
            for name in fields:
                if name not in data and name in row:
                    data[name] = row[name]
    return repo.model.model_validate({k: v for k, v in data.items() if k in fields})


# ----------------------------------------------------------------- figures


def nearest_rank(percent: int, n: int) -> int:
    """Nearest rank (1-based) of the *percent* percentile of *n* values: ceil(p*n/100)."""
    return (percent * n + 99) // 100


def runtime_seconds(value: Any) -> float | None:
    """A closing record's ``runtime`` in seconds (a ``timedelta`` or a number);
    None when it holds none, and the run's runtime is then its end minus its start."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def count_outcome(counts: list[int], outcome: str | None, n: int = 1) -> None:
    """Add *n* runs ended by *outcome* (None: still open) to *counts*: runs,
    successes, failures, other, finished (what :func:`figures_row` reads)."""
    counts[0] += n
    if outcome is None:
        return
    counts[4] += n
    if outcome == "success":
        counts[1] += n
    elif outcome in FAILURES:
        counts[2] += n
    elif outcome in OTHER:
        counts[3] += n


def figures_row(task: str | None, counts: Sequence[int], times: Sequence[float]) -> Row:
    """A row of :func:`aggregate_runs` from *counts* (runs, successes, failures,
    other, finished) and the finished runs' runtimes, sorted."""
    n = len(times)
    return {
        "task_name": task,
        "runs": counts[0],
        "successes": counts[1],
        "failures": counts[2],
        "other": counts[3],
        "finished": counts[4],
        "mean_runtime": sum(times) / n if n else None,
        "p50_runtime": times[nearest_rank(50, n) - 1] if n else None,
        "p95_runtime": times[nearest_rank(95, n) - 1] if n else None,
        "max_runtime": times[-1] if n else None,
    }


def summarize_runs(
    runs: Iterable[tuple[str | None, str | None, float | None]], *, by_task: bool = True
) -> list[Row]:
    """Aggregate runs given as ``(task_name, outcome, runtime seconds)``.

    *outcome* is the closing action (None while the run is open) and
    *runtime* is None for an open run. Returns rows as :func:`aggregate_runs`.
    """
    groups: dict[str | None, tuple[dict[str | None, int], list[float]]] = {}
    for task, outcome, runtime in runs:  # one pass: outcomes counted, runtimes kept
        key = task if by_task else None
        group = groups.get(key)
        if group is None:
            group = groups[key] = ({}, [])
        outcomes = group[0]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome is not None and runtime is not None:
            group[1].append(runtime)
    if not by_task and not groups:
        groups[None] = ({}, [])
    rows: list[Row] = []
    for task in sorted(groups, key=lambda t: (t is not None, t or "")):
        outcomes, times = groups[task]
        counts = [0] * 5
        for outcome, n in outcomes.items():
            count_outcome(counts, outcome, n)
        rows.append(figures_row(task, counts, sorted(times)))
    return rows


def run_figures(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    since: float | None = None,
    with_total: bool = True,
) -> tuple[list[Row], Row]:
    """:func:`aggregate_runs` per task and in total (what ``tasklog.stats``
    shows): a store with a runs index reads it once for both. Without
    *with_total* (a caller that shows only the tasks), the total's
    percentiles and maximum may be left None, which spares a store with a
    runs index their reading.

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    repo.sync()
    if isinstance(repo, RunIndexQueries):
        fast = repo.run_figures(task_name=task_name, since=since, with_total=with_total)
        if fast is not None:
            return fast
    per_task = aggregate_runs(repo, task_name=task_name, since=since, by_task=True)
    total = aggregate_runs(repo, task_name=task_name, since=since, by_task=False)
    return per_task, total[0]


def aggregate_runs(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    since: float | None = None,
    by_task: bool = True,
) -> list[Row]:
    """Figures over runs, one row per task (or one in all, without *by_task*).

    A run's outcome is its first closing record (same task and run id) and
    its runtime that record's ``runtime`` when set, else the difference of
    their ``created``. *since* (an epoch timestamp) keeps runs that started
    since then.

    Each row has ``task_name`` (None without *by_task*), ``runs``,
    ``successes``, ``failures`` (fail, crash), ``other`` (inaction,
    terminate), ``finished``, and ``mean_runtime``, ``p50_runtime``,
    ``p95_runtime``, ``max_runtime`` in seconds over finished runs
    (nearest-rank percentiles; None when none finished), sorted by task name.
    A store's :class:`RunQueries` answers when it can; else one pass over
    the run and closing records.

    Raises:
        ConfigError: the model has no ``run_id``.
    """
    require_run_fields(repo)
    repo.sync()
    if isinstance(repo, RunQueries):
        fast = repo.aggregate_runs(task_name=task_name, since=since, by_task=by_task)
        if fast is not None:
            return fast
    conditions: dict[str, Any] = {"action": In(("run", *CLOSING_ACTIONS))}
    if task_name is not None:
        conditions["task_name"] = task_name
    has_runtime = "runtime" in repo.schema.fields
    starts: dict[tuple[Any, Any], float] = {}
    ends: dict[tuple[Any, Any], tuple[str, float, Any]] = {}
    for row in repo.select_rows(Query.build(repo.schema, conditions)):
        run_id = row.get("run_id")
        if run_id is None:
            continue
        key = (row.get("task_name"), run_id)
        created = float(row["created"])
        if row["action"] == "run":
            if key not in starts or created < starts[key]:
                starts[key] = created
        elif key not in ends:
            ends[key] = (row["action"], created, row.get("runtime") if has_runtime else None)

    def runs() -> Iterator[tuple[str | None, str | None, float | None]]:
        for key, start in starts.items():
            if since is not None and start < since:
                continue
            end = ends.get(key)
            if end is None:
                yield key[0], None, None
                continue
            outcome, created, runtime = end
            seconds = runtime_seconds(runtime)
            yield key[0], outcome, created - start if seconds is None else seconds

    return summarize_runs(runs(), by_task=by_task)
