"""tasklog: what happened the last time job X ran, and why did it fail?

Plain :mod:`logging` calls stored as pydantic records in a swappable,
queryable repository (memory, CSV, SQLite, PostgreSQL, any SQLAlchemy database).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .adapter import TaskAdapter, get_task_logger
from .capture import capture
from .config import basic_config
from .exceptions import CancelRun, ConfigError, TaskInaction, TasklogError
from .handler import ActionFilter, RepoHandler
from .history import RunInfo, get_run, list_runs
from .query import (
    between,
    contains,
    greater_equal,
    greater_than,
    in_,
    less_equal,
    less_than,
    not_equal,
    not_in,
    skip,
)
from .records import (
    Action,
    LogRecord,
    MinimalRecord,
    MinimalRunRecord,
    RunRecord,
    TaskLogRecord,
    TaskRunRecord,
)
from .repos import CSVFileRepo, MemoryRepo, Repository, Result, open_repo

if TYPE_CHECKING:
    from .repos.redis_store import RedisRepo
    from .repos.sql import SQLRepo
from .runs import Run, current_run, terminate_open_runs
from .stats import Stats, TaskStats, mark_crashed, stats
from .writer import WriterOptions

__all__ = [
    "Action",
    "ActionFilter",
    "CSVFileRepo",
    "CancelRun",
    "ConfigError",
    "LogRecord",
    "MemoryRepo",
    "MinimalRecord",
    "MinimalRunRecord",
    "RedisRepo",
    "RepoHandler",
    "Repository",
    "Result",
    "Run",
    "RunInfo",
    "RunRecord",
    "SQLRepo",
    "Stats",
    "TaskAdapter",
    "TaskInaction",
    "TaskLogRecord",
    "TaskRunRecord",
    "TaskStats",
    "TasklogError",
    "WriterOptions",
    "basic_config",
    "between",
    "capture",
    "contains",
    "current_run",
    "get_run",
    "get_task_logger",
    "greater_equal",
    "greater_than",
    "in_",
    "less_equal",
    "less_than",
    "list_runs",
    "mark_crashed",
    "not_equal",
    "not_in",
    "open_repo",
    "skip",
    "stats",
    "terminate_open_runs",
]


def __getattr__(name: str) -> Any:
    """Serve ``__version__`` lazily from the installed metadata."""
    if name == "SQLRepo":  # imported on first use: SQLAlchemy takes a while to load
        from .repos.sql import SQLRepo

        return SQLRepo
    if name == "RedisRepo":  # imported on first use: redis-py is an optional extra
        from .repos.redis_store import RedisRepo

        return RedisRepo
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tasklog")
        except PackageNotFoundError:  # pragma: no cover  (not installed)
            return "0+unknown"
    msg = f"module 'tasklog' has no attribute {name!r}"
    raise AttributeError(msg)
