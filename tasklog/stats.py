"""Figures over runs: ``stats``.

It reads any repository whose model has ``task_name``, ``action``,
``created`` and ``run_id``, through :mod:`tasklog.history` (which knows what
a run is). ``mark_crashed`` lives there and is re-exported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .history import mark_crashed, run_figures
from .repos import Repository
from .repos.base import Row, cutoff_timestamp

__all__ = ["Stats", "TaskStats", "mark_crashed", "stats", "task_stats"]

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
    """successes / (successes + failures), 0-1: a run that did nothing or was
    terminated neither helps nor hurts; None when there is neither."""
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
        """Build from a row of :func:`tasklog.history.aggregate_runs`."""
        successes, failures = int(row["successes"]), int(row["failures"])
        decided = successes + failures

        def seconds(name: str) -> float | None:
            value = row[name]
            return None if value is None else round(float(value), _DIGITS)

        return cls(
            task_name=row["task_name"],
            runs=int(row["runs"]),
            successes=int(row["successes"]),
            failures=int(row["failures"]),
            other=int(row["other"]),
            success_rate=successes / decided if decided else None,
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
    per_task, total = run_figures(repo, task_name=task_name, since=start)
    return Stats(tasks=_by_task(per_task), total=TaskStats.from_row(total))


def task_stats(
    repo: Repository[Any], *, since: timedelta | datetime | float | None = None
) -> dict[str, TaskStats]:
    """``stats(repo, since=since).tasks``, without reading the total's
    percentiles (a page of tasks does not show them)."""
    per_task, _ = run_figures(repo, since=cutoff_timestamp(since), with_total=False)
    return _by_task(per_task)


def _by_task(per_task: list[dict[str, Any]]) -> dict[str, TaskStats]:
    return {str(row["task_name"]): TaskStats.from_row(row) for row in per_task}
