"""Figures over runs (``stats``) and finding runs whose process died (``mark_crashed``).

Both read any repository whose model has ``task_name``, ``action``,
``created`` and ``run_id``. A run's start and end are its ``run`` record and
its first closing record (``success``, ``fail``, ``crash``, ``inaction``,
``terminate``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .query import Query, in_
from .repos import Repository
from .repos.base import CLOSING_ACTIONS, Row, cutoff_timestamp

__all__ = ["Stats", "TaskStats", "mark_crashed", "stats"]

_DIGITS = 6
"""Runtimes are reported to the microsecond, so every store gives the same figures."""


@dataclass(frozen=True)
class TaskStats:
    """Figures over the runs of one task (or of all, with ``task_name=None``).

    Runtimes are in seconds over finished runs; percentiles are nearest-rank.
    """

    task_name: str | None
    runs: int
    """Runs that started (a ``run`` record)."""
    successes: int
    failures: int
    """``fail`` and ``crash``."""
    other: int
    """``inaction`` and ``terminate``."""
    success_rate: float | None
    """Successes over finished runs (0-1), None when none finished."""
    mean_runtime: float | None
    p50_runtime: float | None
    p95_runtime: float | None
    max_runtime: float | None

    @property
    def finished(self) -> int:
        """Runs that ended, whatever the outcome."""
        return self.successes + self.failures + self.other

    def as_json(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (``task_name`` only for a task)."""
        data = asdict(self)
        if self.task_name is None:
            del data["task_name"]
        return data

    @classmethod
    def from_row(cls, row: Row) -> TaskStats:
        """Build from a row of :meth:`tasklog.Repository.aggregate_runs`."""
        finished = int(row["finished"])

        def seconds(name: str) -> float | None:
            value = row[name]
            return None if value is None else round(float(value), _DIGITS)

        return cls(
            task_name=row["task_name"],
            runs=int(row["runs"]),
            successes=int(row["successes"]),
            failures=int(row["failures"]),
            other=int(row["other"]),
            success_rate=int(row["successes"]) / finished if finished else None,
            mean_runtime=seconds("mean_runtime"),
            p50_runtime=seconds("p50_runtime"),
            p95_runtime=seconds("p95_runtime"),
            max_runtime=seconds("max_runtime"),
        )


@dataclass(frozen=True)
class Stats:
    """What :func:`stats` returns: one :class:`TaskStats` per task, and the total."""

    tasks: dict[str, TaskStats] = field(default_factory=dict)
    total: TaskStats = field(
        default_factory=lambda: TaskStats(None, 0, 0, 0, 0, None, None, None, None, None)
    )

    def as_json(self) -> dict[str, Any]:
        """``{"tasks": [...], "total": {...}}`` as the CLI prints it with ``--json``."""
        return {
            "tasks": [s.as_json() for s in self.tasks.values()],
            "total": self.total.as_json(),
        }


def stats(
    repo: Repository[Any],
    *,
    task_name: str | None = None,
    since: timedelta | datetime | float | None = None,
) -> Stats:
    """Figures over the runs in *repo*, per task and in total.

    Args:
        repo: any repository whose model has ``run_id``.
        task_name: only this task's runs.
        since: only runs that started since then (an age as ``timedelta``,
            a ``datetime`` or an epoch timestamp).

    The SQL store computes them in the database; every store gives the same
    figures for the same records.

    Raises:
        ValueError: the model has no ``run_id`` (or another run field).
    """
    start = cutoff_timestamp(since)
    per_task = repo.aggregate_runs(task_name=task_name, since=start, by_task=True)
    total = repo.aggregate_runs(task_name=task_name, since=start, by_task=False)
    tasks = {str(row["task_name"]): TaskStats.from_row(row) for row in per_task}
    return Stats(tasks=tasks, total=TaskStats.from_row(total[0]))


def _process_gone(host: Any, pid: Any) -> bool | None:
    """Whether the run's process is known gone (True), alive (False) or unknown (None)."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by someone else
        return False
    except OSError:
        return None
    return False


def mark_crashed(
    repo: Repository[Any], *, older_than: timedelta | datetime | float | None = None
) -> list[str]:
    """Log ``crash`` for runs that started, never finished, and are dead.

    A run is dead when its record names this host and a process that no
    longer exists (models with ``host`` and ``process``, such as
    :class:`~tasklog.TaskRunRecord`), or, when that cannot be told, when it
    started before *older_than* (an age as ``timedelta``, a ``datetime`` or an
    epoch timestamp). A run whose process is alive on this host is never
    marked. Marking again marks nothing new: a ``crash`` record closes the run.

    The ``crash`` record is added straight to *repo* with the run's task,
    run id, host and process, and ``start``/``end``/``runtime`` (up to the
    run's last record) where the model has them.

    Returns:
        The run ids marked, oldest run first.

    Raises:
        ValueError: the model has no ``run_id`` (or another run field).
    """
    repo.require_run_fields()
    cutoff = cutoff_timestamp(older_than)
    repo.sync()
    opened: dict[tuple[Any, Any], Row] = {}
    for row in repo.select_rows(Query.build(repo.schema, {"action": "run"})):
        if row.get("run_id") is not None:
            opened.setdefault((row["task_name"], row["run_id"]), row)
    if not opened:
        return []
    closing = Query.build(repo.schema, {"action": in_(CLOSING_ACTIONS)})
    for row in repo.select_rows(closing):
        opened.pop((row["task_name"], row.get("run_id")), None)
    marked: list[str] = []
    for (task, run_id), row in sorted(opened.items(), key=lambda item: item[1]["created"]):
        gone = _process_gone(row.get("host"), row.get("process"))
        if gone is False:
            continue
        if gone:
            why = f"its process {row['process']} on {row['host']} is gone"
        elif cutoff is not None and row["created"] < cutoff:
            why = "it did not finish in time"
        else:
            continue
        last = repo.filter_by(task_name=task, run_id=run_id).last()
        last_seen = float(last.created) if last is not None else float(row["created"])
        repo.add(_crash_record(repo, row, last_seen, f"Run {run_id} crashed: {why}"))
        marked.append(str(run_id))
    return marked


def _crash_record(repo: Repository[Any], run: Row, last_seen: float, message: str) -> Any:
    """A ``crash`` record for *run*, with what the model has."""
    now = time.time()
    begun = run.get("start") or datetime.fromtimestamp(float(run["created"]), timezone.utc)
    end = datetime.fromtimestamp(last_seen, timezone.utc)
    data: dict[str, Any] = {
        "task_name": run["task_name"],
        "action": "crash",
        "created": now,
        "run_id": run["run_id"],
        "host": run.get("host"),
        "process": run.get("process"),
        "start": begun,
        "end": end,
        "runtime": max(end - begun, timedelta(0)),
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
    for name in fields:
        if name not in data and name in run:
            data[name] = run[name]  # the run's own fields (attempt, ...)
    return repo.model.model_validate({k: v for k, v in data.items() if k in fields})
