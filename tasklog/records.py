"""The record models: what one log record of a task looks like once stored.

Field names follow :class:`logging.LogRecord` attributes, so a record maps to a
model by name. Every model is a plain pydantic v2 model; any user subclass of
:class:`pydantic.BaseModel` works the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from pydantic import BaseModel

__all__ = [
    "Action",
    "LogRecord",
    "MinimalRecord",
    "MinimalRunRecord",
    "RunRecord",
    "TaskLogRecord",
    "TaskRunRecord",
]


class Action(str, Enum):
    """The standard actions of a task's records.

    ``action`` fields stay plain strings, so custom actions (``retry``,
    ``queued``, ...) are allowed; these are the ones tasklog writes itself.
    """

    RUN = "run"
    SUCCESS = "success"
    FAIL = "fail"
    TERMINATE = "terminate"
    INACTION = "inaction"
    CRASH = "crash"
    LOG = "log"
    PROGRESS = "progress"
    STATISTICS = "statistics"
    HEARTBEAT = "heartbeat"
    MISSED = "missed"
    SKIPPED = "skipped"
    RETRY = "retry"

    def __str__(self) -> str:
        """Return the plain action string (``"fail"``, not ``"Action.FAIL"``)."""
        return self.value


class MinimalRecord(BaseModel):
    """The least a task record needs: which task, what happened, and when."""

    task_name: str
    action: str
    created: float


class MinimalRunRecord(MinimalRecord):
    """:class:`MinimalRecord` with the id of the run it belongs to."""

    run_id: str | None = None


class LogRecord(MinimalRecord):
    """The usual attributes of a :class:`logging.LogRecord`, plus the task fields."""

    name: str
    msg: str
    levelname: str
    levelno: int
    pathname: str
    filename: str
    module: str
    lineno: int
    funcName: str
    msecs: float
    relativeCreated: float
    thread: int | None
    threadName: str | None
    processName: str | None
    process: int | None
    message: str
    formatted_message: str
    exc_text: str | None = None


class RunRecord(LogRecord):
    """:class:`LogRecord` with the run id and the host that wrote it."""

    run_id: str | None = None
    host: str | None = None


class TaskLogRecord(MinimalRecord):
    """A task record with the run's start, end and runtime."""

    start: datetime | None = None
    end: datetime | None = None
    runtime: timedelta | None = None
    message: str = ""
    exc_text: str | None = None
    levelname: str | None = None


class TaskRunRecord(TaskLogRecord):
    """:class:`TaskLogRecord` with run id, host and process id (for crash detection)."""

    run_id: str | None = None
    host: str | None = None
    process: int | None = None
