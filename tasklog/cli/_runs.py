"""Runs as the command shows them: listed across tasks, open ones that are lost, crash
candidates.

A stand-in until the read model of runs (SPEC §4: ``tasklog.list_runs``,
``get_run``, crash candidates) is on main: it reads the ``run`` and closing
records through the repository API (one streaming pass over each), so it
works on every store, in time linear in the history. What a run is — its
``run`` record and its closing record, ``start``/``end``/``runtime`` fields
where the model has them, else the records' ``created`` times — follows
:mod:`tasklog.inspect` and :func:`tasklog.mark_crashed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..query import between, greater_equal, in_, less_than
from ..repos import Repository
from ..repos.base import CLOSING_ACTIONS
from ..stats import _crash_record, _process_gone

__all__ = ["RUNNING", "RunView", "crash_candidates", "find_runs", "mark_crashed", "statuses"]

RUNNING = "running"
LOST = "lost"


def statuses() -> tuple[str, ...]:
    """The values ``runs --status`` takes: the closing actions, ``running`` and ``lost``."""
    return (*CLOSING_ACTIONS, RUNNING, LOST)


@dataclass(frozen=True)
class RunView:
    """One run: its ``run`` record and its closing record (None while open)."""

    run_id: str
    task_name: str
    start: datetime
    end: datetime | None
    runtime: timedelta | None
    outcome: str | None
    """The closing action, None while the run is open."""
    host: str | None
    process: int | None
    lost: bool
    """Open, and its process is gone on this host (computed now; nothing is written)."""
    record: Any
    """The run's ``run`` record."""

    @property
    def status(self) -> str:
        """The outcome, else ``lost`` or ``running``."""
        return self.outcome or (LOST if self.lost else RUNNING)

    def as_json(self) -> dict[str, Any]:
        """The run as a JSON object (SPEC §6; ``outcome`` is null while the run is open)."""
        return {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "runtime": None if self.runtime is None else self.runtime.total_seconds(),
            "outcome": self.outcome,
        }


def _when(record: Any, field: str) -> datetime:
    value = getattr(record, field, None)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(record.created), tz=timezone.utc)


def _view(start: Any, closing: Any | None) -> RunView:
    begun = _when(start, "start")
    host = getattr(start, "host", None)
    process = getattr(start, "process", None)
    if closing is None:
        return RunView(
            str(start.run_id), start.task_name, begun, None, None, None, host, process,
            _process_gone(host, process) is True, start,
        )
    end = _when(closing, "end")
    value = getattr(closing, "runtime", None)
    runtime = value if isinstance(value, timedelta) else end - begun
    return RunView(
        str(start.run_id), start.task_name, begun, end, runtime, str(closing.action), host,
        process, False, start,
    )


def find_runs(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    status: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[RunView]:
    """Runs newest start first, of one task or all, filtered by status and start time.

    *status* holds closing actions, ``running`` (open) and/or ``lost`` (open,
    its process gone on this host). *since*/*until* bound the start: runs
    that started at or after *since* and before *until*.
    """
    conditions: dict[str, Any] = {"action": "run"}
    if task_name is not None:
        conditions["task_name"] = task_name
    if since is not None or until is not None:
        low = since.timestamp() if since is not None else None
        high = until.timestamp() if until is not None else None
        if low is not None and high is not None:
            conditions["created"] = between(low, high)
        elif low is not None:
            conditions["created"] = greater_equal(low)
        else:
            conditions["created"] = less_than(high)
    starts = [r for r in repo.filter_by(**conditions) if r.run_id is not None]
    if not starts:
        return []
    closings: dict[tuple[str, str], Any] = {}
    closing_conditions: dict[str, Any] = {"action": in_(CLOSING_ACTIONS)}
    if task_name is not None:
        closing_conditions["task_name"] = task_name
    for record in repo.filter_by(**closing_conditions):
        if record.run_id is not None:
            closings.setdefault((record.task_name, str(record.run_id)), record)
    wanted = set(status or ())
    views = []
    for start in starts:
        view = _view(start, closings.get((start.task_name, str(start.run_id))))
        if wanted and view.status not in wanted and not (RUNNING in wanted and view.lost):
            continue
        views.append(view)
    views.sort(key=lambda v: (v.start, float(v.record.created)), reverse=True)
    return views[:limit] if limit is not None else views


def crash_candidates(
    repo: Repository[Any],
    *,
    older_than: datetime | None = None,
    stale_after: datetime | None = None,
) -> list[tuple[RunView, float, str]]:
    """Open runs :func:`tasklog.mark_crashed` would mark: ``(run, last seen, why)``, oldest first.

    A run is a candidate when its process is gone on this host, or it started
    before *older_than*, or its newest record is older than *stale_after*; a
    run whose process is alive on this host never is.
    """
    found = []
    for view in reversed(find_runs(repo, status=[RUNNING])):
        gone = _process_gone(view.host, view.process)
        if gone is False:
            continue
        last = repo.filter_by(task_name=view.task_name, run_id=view.run_id).last()
        last_seen = float(last.created) if last is not None else float(view.record.created)
        if gone:
            why = f"its process {view.process} on {view.host} is gone"
        elif older_than is not None and view.start < older_than:
            why = "it did not finish in time"
        elif stale_after is not None and last_seen < stale_after.timestamp():
            seen = datetime.fromtimestamp(last_seen, timezone.utc).isoformat(timespec="seconds")
            why = f"nothing was logged since {seen}"
        else:
            continue
        found.append((view, last_seen, why))
    return found


def mark_crashed(repo: Repository[Any], candidates: list[tuple[RunView, float, str]]) -> list[str]:
    """Log ``crash`` for each candidate run; its run ids."""
    marked = []
    for view, last_seen, why in candidates:
        row = repo.schema.row(view.record)
        repo.add(_crash_record(repo, row, last_seen, f"Run {view.run_id} crashed: {why}"))
        marked.append(view.run_id)
    return marked
