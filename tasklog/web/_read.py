"""What the web service reads, in the terms of SPEC §4 and §6.

Every read the service makes goes through this module, and this module goes
only through tasklog's read API (:mod:`tasklog.history`, ``filter_by``,
``stats``): the web knows no backend and no rule of what a run is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import history
from ..history import (
    CLOSING_ACTIONS,
    FAILURES,
    RUNNING,
    RunInfo,
    latest_per_task,
    newest,
    newest_closed,
    recent_runs,
    record_json,
)
from ..query import greater_equal, in_
from ..repos import Repository
from ..repos.base import cutoff_timestamp
from ..runs import format_records

__all__ = [
    "CLOSING_ACTIONS",
    "FAILURES",
    "LOST",
    "RUNNING",
    "RunInfo",
    "errors",
    "get_run",
    "history_buckets",
    "iso_timestamp",
    "latest_per_task",
    "list_runs",
    "newest",
    "newest_closed",
    "recent_runs",
    "record_json",
    "run_ends",
    "run_output",
    "run_records",
    "span_seconds",
]

LOST = "lost"
"""The status of open runs whose process is gone on this host (computed, not stored)."""
_CHUNK = 500
When = timedelta | datetime | float | None


def iso_timestamp(created: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 text in UTC."""
    if created is None:
        return None
    return datetime.fromtimestamp(float(created), tz=timezone.utc).isoformat()


def span_seconds(since: When) -> float:
    """Seconds from *since* to now."""
    low = cutoff_timestamp(since)
    return 0.0 if low is None else max(time.time() - low, 0.0)


def list_runs(
    repo: Repository[Any],
    *,
    task_name: str | Sequence[str] | None = None,
    outcome: Sequence[str] | None = None,
    since: When = None,
    until: When = None,
    limit: int = 100,
    before: str | None = None,
) -> tuple[list[RunInfo], str | None]:
    """One page of runs, newest start first, and the cursor of the next (None on the last).

    *outcome* holds closing actions, ``running`` and/or ``lost`` (open, its
    process gone on this host).
    """
    outcomes = None if outcome is None else list(outcome)
    if outcomes is not None and LOST in outcomes:
        return _with_lost(repo, task_name, outcomes, since, until, limit, before), None
    runs = history.list_runs(
        repo, task_name=task_name, outcome=outcomes, since=since, until=until,
        limit=limit + 1, before=before,
    )
    page = runs[:limit]
    return page, (page[-1].cursor if len(runs) > limit and page else None)


def _with_lost(
    repo: Repository[Any], task_name: str | Sequence[str] | None, outcomes: list[str],
    since: When, until: When, limit: int, before: str | None,
) -> list[RunInfo]:
    """Runs including lost ones: computed now on this host, so in one page, without cursor."""
    if before is not None:
        msg = "status=lost gives one page (lost runs are computed now); give no 'before'."
        raise ValueError(msg)
    low, high = cutoff_timestamp(since), cutoff_timestamp(until)
    lost = [
        run for run in history.lost_runs(repo, task_name=task_name)
        if (low is None or run.start.timestamp() >= low)
        and (high is None or run.start.timestamp() <= high)
    ]
    rest = [o for o in outcomes if o != LOST]
    others = history.list_runs(
        repo, task_name=task_name, outcome=rest, since=since, until=until, limit=limit
    ) if rest else []
    found = {(r.task_name, r.run_id): r for r in [*others, *lost]}
    ordered = sorted(found.values(), key=lambda r: r.start, reverse=True)
    return ordered[:limit]


def get_run(repo: Repository[Any], run_id: str) -> RunInfo | None:
    """The run *run_id*, or None."""
    return history.get_run(repo, run_id)


def run_records(run: RunInfo) -> list[Any]:
    """Every record of *run*, in order."""
    return run.records()


def run_output(records: Iterable[Any]) -> str:
    """The run's log as text lines (``run.output()``'s format, SPEC §4)."""
    return format_records(records)


_ENDS = frozenset(CLOSING_ACTIONS)


def run_ends(
    repo: Repository[Any], runs: Sequence[RunInfo]
) -> dict[tuple[str, str], tuple[Any, Any]]:
    """The ``run`` record and the closing record (or None) of each run, by (task, run id)."""
    found: dict[tuple[str, str], list[Any]] = {}
    ids = sorted({run.run_id for run in runs})
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        # by run id alone (a run has few records): given the action too, a
        # database may pick the action index and read every run's records
        for record in repo.filter_by(run_id=in_(chunk)):
            if record.action != "run" and record.action not in _ENDS:
                continue
            pair = found.setdefault((str(record.task_name), str(record.run_id)), [None, None])
            slot = 0 if record.action == "run" else 1
            if pair[slot] is None:
                pair[slot] = record
    return {key: (pair[0], pair[1]) for key, pair in found.items()}


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


def history_buckets(
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
    now = time.time() if now is None else now
    step = interval.total_seconds()
    low = cutoff_timestamp(since if since is not None else timedelta(days=1))
    assert low is not None
    origin = (low // step) * step
    n = int((now - origin) // step) + 1
    names = [*CLOSING_ACTIONS, RUNNING]
    counts = [dict.fromkeys(names, 0) for _ in range(n)]
    found = history.outcome_counts(repo, origin=origin, step=step, task_name=task_name)
    for slot, outcomes in found.items():
        if slot < n:
            for name, count in outcomes.items():
                counts[slot][name] = counts[slot].get(name, 0) + count
    extra = sorted({k for bucket in counts for k in bucket} - set(names))
    names += extra
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

