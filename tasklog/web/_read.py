"""What the web service reads, in the terms of SPEC §4 and §6.

Every read the service makes goes through this module, and this module goes
only through tasklog's public read API (``filter_by``, ``stats``,
``tasklog.inspect``): the web knows no backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel

from ..inspect import latest_per_task, newest
from ..query import between, greater_equal, in_, less_equal
from ..repos import Repository
from ..repos.base import CLOSING_ACTIONS, cutoff_timestamp
from ..runs import format_records

__all__ = [
    "CLOSING_ACTIONS",
    "FAILURES",
    "RunView",
    "closing_records",
    "errors",
    "get_run",
    "history",
    "last_finished",
    "last_success",
    "latest_per_task",
    "list_runs",
    "record_json",
    "run_output",
    "run_records",
    "task_names",
]

FAILURES: tuple[str, ...] = ("fail", "crash")
_CHUNK = 500
When = timedelta | datetime | float | None


def record_json(record: BaseModel) -> dict[str, Any]:
    """A record as the CLI prints it with ``--json``: ISO 8601 times with zone, seconds."""
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


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _when(record: Any, field: str) -> datetime:
    value = getattr(record, field, None)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(record.created), tz=timezone.utc)


@dataclass(frozen=True)
class RunView:
    """One run: its start record and its closing record (None while open)."""

    run_id: str
    task_name: str
    start: datetime
    end: datetime | None
    runtime: timedelta | None
    outcome: str | None
    created: float
    """The ``created`` time of the run's start record (what pages are cut by)."""
    start_record: Any
    closing: Any

    @property
    def cursor(self) -> str:
        """Where the next page (older runs) begins: ``before=`` takes it."""
        return f"{self.created!r}~{self.run_id}"

    def field(self, name: str) -> Any:
        """A field of the run: from its closing record, else its start record."""
        for record in (self.closing, self.start_record):
            value = getattr(record, name, None) if record is not None else None
            if value is not None:
                return value
        return None

    def as_json(self) -> dict[str, Any]:
        """The run as the CLI's ``runs --json`` prints it (§6)."""
        return {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "runtime": None if self.runtime is None else self.runtime.total_seconds(),
            "outcome": self.outcome,
        }


def _view(start: Any, closing: Any) -> RunView:
    begun = _when(start, "start")
    end = runtime = None
    outcome = None
    if closing is not None:
        outcome = str(closing.action)
        end = _when(closing, "end")
        value = getattr(closing, "runtime", None)
        runtime = value if isinstance(value, timedelta) else end - begun
    return RunView(
        str(start.run_id), str(start.task_name), begun, end, runtime, outcome,
        float(start.created), start, closing,
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def closing_records(repo: Repository[Any], starts: Sequence[Any]) -> dict[tuple[str, str], Any]:
    """The first closing record of each run started by *starts*, by (task, run id)."""
    found: dict[tuple[str, str], Any] = {}
    ids = sorted({str(s.run_id) for s in starts if s.run_id is not None})
    for chunk in _chunks(ids, _CHUNK):
        for record in repo.filter_by(run_id=in_(chunk), action=in_(CLOSING_ACTIONS)):
            found.setdefault((str(record.task_name), str(record.run_id)), record)
    return found


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _parse_cursor(cursor: str) -> tuple[float, str]:
    text, sep, run_id = str(cursor).partition("~")
    try:
        created = float(text)
    except ValueError:
        created = float("nan")
    if not sep or created != created or created in (float("inf"), float("-inf")):
        msg = f"Invalid cursor {cursor!r}: use the 'next' value of the previous page."
        raise ValueError(msg)
    return created, run_id


def list_runs(
    repo: Repository[Any],
    *,
    task_name: str | Sequence[str] | None = None,
    outcome: str | Sequence[str] | None = None,
    since: When = None,
    until: When = None,
    limit: int = 100,
    before: str | None = None,
) -> tuple[list[RunView], str | None]:
    """Runs newest start first, and the cursor of the next page (None on the last).

    *outcome* is a closing action or ``"running"`` (or a list of them);
    *since*/*until* bound the start; *before* is a cursor from a previous page.

    Raises:
        ValueError: the store has no runs (no ``run_id``), or a bad cursor.
    """
    repo.require_run_fields()
    if limit < 1:
        msg = f"limit must be at least 1, not {limit!r}."
        raise ValueError(msg)
    conditions: dict[str, Any] = {"action": "run"}
    tasks = _names(task_name)
    if tasks is not None:
        conditions["task_name"] = tasks[0] if len(tasks) == 1 else in_(tasks)
    low = cutoff_timestamp(since)
    high = cutoff_timestamp(until)
    after: tuple[float, str] | None = None
    if before:
        after = _parse_cursor(before)
        high = after[0] if high is None else min(high, after[0])
    if low is not None and high is not None:
        conditions["created"] = between(low, high)
    elif low is not None:
        conditions["created"] = greater_equal(low)
    elif high is not None:
        conditions["created"] = less_equal(high)
    wanted = None if outcome is None else set(_names(outcome) or [])
    starts: Iterable[Any] = repo.filter_by(**conditions).order_by("-created")
    if after is not None:
        starts = _after_cursor(starts, *after)
    found: list[RunView] = []
    batch_size = min(max(limit + 1, 50), _CHUNK)
    iterator = iter(starts)
    while len(found) <= limit:
        batch = [s for s in _take(iterator, batch_size) if s.run_id is not None]
        if not batch:
            break
        closings = closing_records(repo, batch)
        for start in batch:
            run = _view(start, closings.get((str(start.task_name), str(start.run_id))))
            if wanted is None or (run.outcome or "running") in wanted:
                found.append(run)
                if len(found) > limit:
                    break
        if wanted is None and len(batch) < batch_size:
            break
    page = found[:limit]
    more = len(found) > limit
    return page, (page[-1].cursor if more and page else None)


def _take(iterator: Iterator[Any], n: int) -> list[Any]:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _after_cursor(starts: Iterable[Any], created: float, run_id: str) -> Iterator[Any]:
    """Skip the runs up to the cursor's own (ties in ``created`` keep their order)."""
    passed = False
    for start in starts:
        if passed or float(start.created) < created:
            passed = True
            yield start
        elif str(start.run_id) == run_id:
            passed = True


def get_run(repo: Repository[Any], run_id: str) -> RunView | None:
    """The run *run_id*, or None when no record has that id."""
    repo.require_run_fields()
    start = repo.filter_by(run_id=run_id, action="run").first()
    if start is None:
        start = repo.filter_by(run_id=run_id).first()
        if start is None:
            return None
    closing = repo.filter_by(
        run_id=run_id, task_name=start.task_name, action=in_(CLOSING_ACTIONS)
    ).first()
    return _view(start, closing)


def run_records(repo: Repository[Any], run: RunView) -> list[Any]:
    """Every record of *run*, in order."""
    return repo.filter_by(run_id=run.run_id, task_name=run.task_name).all()


def run_output(records: Iterable[Any]) -> str:
    """The run's log as text lines (``run.output()``'s format, SPEC §4)."""
    return format_records(records)


def task_names(repo: Repository[Any]) -> list[str]:
    """Every task name, sorted."""
    return [str(r.task_name) for r in latest_per_task(repo)]


def errors(
    repo: Repository[Any], *, task_name: str | None = None, since: When = None, limit: int = 10
) -> list[Any]:
    """The last *limit* ``fail``/``crash`` records, oldest first (the CLI's ``errors``)."""
    conditions: dict[str, Any] = {"action": in_(FAILURES)}
    if task_name is not None:
        conditions["task_name"] = task_name
    low = cutoff_timestamp(since)
    if low is not None:
        conditions["created"] = greater_equal(low)
    return newest(repo, limit, **conditions)


OUTCOMES: tuple[str, ...] = (*CLOSING_ACTIONS, "running")


def history(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    since: When = None,
    interval: timedelta = timedelta(hours=1),
    now: float | None = None,
) -> dict[str, Any]:
    """Runs per outcome per time bucket of *interval*, from *since* to now.

    Buckets are aligned on multiples of *interval* (UTC); a run counts in the
    bucket of its start, under its outcome (``running`` while open).
    """
    repo.require_run_fields()
    now = time.time() if now is None else now
    step = interval.total_seconds()
    low = cutoff_timestamp(since if since is not None else timedelta(days=1))
    assert low is not None
    origin = (low // step) * step
    n = int((now - origin) // step) + 1
    conditions: dict[str, Any] = {"action": "run", "created": greater_equal(origin)}
    closing_conditions: dict[str, Any] = {
        "action": in_(CLOSING_ACTIONS), "created": greater_equal(origin),
    }
    if task_name is not None:
        conditions["task_name"] = closing_conditions["task_name"] = task_name
    outcomes: dict[tuple[str, str], str] = {}
    for record in repo.filter_by(**closing_conditions):
        outcomes.setdefault((str(record.task_name), str(record.run_id)), str(record.action))
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in range(n)]
    extra: set[str] = set()
    for record in repo.filter_by(**conditions):
        if record.run_id is None:
            continue
        slot = int((float(record.created) - origin) // step)
        if not 0 <= slot < n:
            continue
        outcome = outcomes.get((str(record.task_name), str(record.run_id)), "running")
        bucket = counts[slot]
        if outcome not in bucket:
            extra.add(outcome)
            bucket[outcome] = 0
        bucket[outcome] += 1
    names = [*OUTCOMES, *sorted(extra)]
    return {
        "interval": step,
        "since": datetime.fromtimestamp(origin, timezone.utc).isoformat(),
        "outcomes": names,
        "buckets": [
            {
                "start": datetime.fromtimestamp(origin + i * step, timezone.utc).isoformat(),
                "runs": sum(bucket.values()),
                "counts": {name: bucket.get(name, 0) for name in names},
            }
            for i, bucket in enumerate(counts)
        ],
    }


def last_success(repo: Repository[Any], task_name: str) -> float | None:
    """When the task's newest ``success`` record says its run ended (Unix time)."""
    record = repo.filter_by(task_name=task_name, action="success").last()
    return None if record is None else _when(record, "end").timestamp()


def last_finished(repo: Repository[Any], task_name: str) -> RunView | None:
    """The task's run whose closing record is the newest, or None."""
    closing = repo.filter_by(task_name=task_name, action=in_(CLOSING_ACTIONS)).last()
    if closing is None or closing.run_id is None:
        return None
    start = repo.filter_by(task_name=task_name, run_id=closing.run_id, action="run").first()
    return _view(start if start is not None else closing, closing)


def iso_timestamp(created: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 text in UTC."""
    if created is None:
        return None
    return datetime.fromtimestamp(float(created), tz=timezone.utc).isoformat()


def span_seconds(since: When) -> float:
    """Seconds from *since* to now."""
    low = cutoff_timestamp(since)
    return 0.0 if low is None else max(time.time() - low, 0.0)
