"""ScheduleZero's execution-log API (``/api/executions*``) over tasklog's runs.

The seed's shapes, key for key: a run is an execution; ``job_id`` and
``handler_id`` are the task name (or the model's own ``handler_id`` /
``method_name`` fields when it has them); ``status`` is ``success``,
``error`` (fail, crash), ``running``, or the closing action otherwise;
``error`` is the last line of the traceback; ``attempt_number`` is the
model's ``attempt`` field when it has one, else 1.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..repos import Repository
from ..stats import stats
from . import _read
from ._read import FAILURES, RunInfo

__all__ = ["execution", "execution_stats", "executions", "outcomes_for_status"]


def _utc(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _field(ends: tuple[Any, Any], name: str) -> Any:
    """A field of the run: from its closing record, else its ``run`` record."""
    for record in reversed(ends):
        value = getattr(record, name, None) if record is not None else None
        if value is not None:
            return value
    return None


def status_of(outcome: str | None) -> str:
    """ScheduleZero's status for a run's outcome."""
    if outcome is None:
        return "running"
    if outcome in FAILURES:
        return "error"
    return outcome


def outcomes_for_status(status: str) -> list[str]:
    """The run outcomes a ScheduleZero ``status`` stands for."""
    if status == "error":
        return list(FAILURES)
    return [status]


def _error_line(run: RunInfo, closing: Any) -> str | None:
    if run.outcome not in FAILURES:
        return None
    text = getattr(closing, "exc_text", None)
    if isinstance(text, str) and text.strip():
        return text.strip().splitlines()[-1]
    message = getattr(closing, "message", None)
    return str(message) if message else str(run.outcome)


def _attempt(ends: tuple[Any, Any]) -> int:
    value = _field(ends, "attempt")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 1
    return number if number >= 1 else 1


def execution(run: RunInfo, ends: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
    """One run as a ScheduleZero execution record (*ends*: its run and closing records)."""
    handler = _field(ends, "handler_id")
    method = _field(ends, "method_name")
    result = _field(ends, "result")
    return {
        "job_id": run.task_name,
        "handler_id": str(handler) if handler is not None else run.task_name,
        "method_name": str(method) if method is not None else None,
        "started_at": _utc(run.start),
        "completed_at": _utc(run.end),
        "duration_ms": (
            None if run.runtime is None else round(run.runtime.total_seconds() * 1000)
        ),
        "status": status_of(run.outcome),
        "result": result,
        "error": _error_line(run, ends[1]),
        "attempt_number": _attempt(ends),
    }


def executions(
    repo: Repository[Any],
    *,
    limit: int,
    task_name: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The newest runs as execution records (newest first)."""
    outcome = None if status is None else outcomes_for_status(status)
    runs, _ = _read.list_runs(repo, task_name=task_name, outcome=outcome, limit=limit)
    ends = _read.run_ends(repo, runs)
    return [execution(run, ends.get((run.task_name, run.run_id), (None, None))) for run in runs]


def _percent(successes: int, failures: int) -> float:
    done = successes + failures
    return round(100 * successes / done, 2) if done else 0.0


def _ms(seconds: float | None) -> float:
    return 0.0 if seconds is None else round(seconds * 1000, 1)


def execution_stats(repo: Repository[Any]) -> dict[str, Any]:
    """ScheduleZero's ``/api/executions/stats`` document."""
    figures = stats(repo)
    total = figures.total
    utilization = getattr(repo, "utilization", None)
    return {
        "total_executions": total.runs,
        "success_count": total.successes,
        "error_count": total.failures,
        "success_rate": _percent(total.successes, total.failures),
        "average_duration_ms": _ms(total.mean_runtime),
        "by_handler": {
            name: {
                "total": task.runs,
                "success": task.successes,
                "error": task.failures,
                "success_rate": _percent(task.successes, task.failures),
                "avg_duration_ms": _ms(task.mean_runtime),
            }
            for name, task in figures.tasks.items()
        },
        "buffer_utilization": (
            None if utilization is None else round(float(utilization), 4)
        ),
    }
