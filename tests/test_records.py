"""The record models and the Action constants."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import tasklog
from tasklog import (
    Action,
    LogRecord,
    MemoryRepo,
    MinimalRecord,
    MinimalRunRecord,
    RepoHandler,
    RunRecord,
    TaskLogRecord,
    TaskRunRecord,
)


class TestModels:
    """The six models of SPEC §1."""

    @pytest.mark.parametrize(
        ("model", "parent"),
        [
            (MinimalRunRecord, MinimalRecord),
            (LogRecord, MinimalRecord),
            (RunRecord, LogRecord),
            (TaskLogRecord, MinimalRecord),
            (TaskRunRecord, TaskLogRecord),
        ],
    )
    def test_hierarchy(self, model: type[BaseModel], parent: type[BaseModel]) -> None:
        """Each model extends its parent and keeps the parent's fields."""
        assert (True, set()) == (
            issubclass(model, parent), set(parent.model_fields) - set(model.model_fields)
        )

    def test_minimal_record(self) -> None:
        """MinimalRecord has task_name, action and created, all required."""
        assert ["task_name", "action", "created"] == list(MinimalRecord.model_fields)
        with pytest.raises(ValidationError):
            MinimalRecord(task_name="t", action="run")  # type: ignore[call-arg]

    def test_minimal_run_record(self) -> None:
        """MinimalRunRecord adds an optional run_id."""
        bare = MinimalRunRecord(task_name="t", action="run", created=1.0)
        with_id = MinimalRunRecord(task_name="t", action="run", created=1, run_id="r")
        assert (None, "r") == (bare.run_id, with_id.run_id)

    def test_log_record_fields(self) -> None:
        """LogRecord has the usual LogRecord attributes plus message and formatted_message."""
        expected = {
            "name", "msg", "levelname", "levelno", "pathname", "filename", "module", "lineno",
            "funcName", "created", "msecs", "relativeCreated", "thread", "threadName",
            "processName", "process", "message", "formatted_message", "exc_text",
        }
        assert set() == expected - set(LogRecord.model_fields)
        assert None is LogRecord.model_fields["exc_text"].default

    def test_run_record_fields(self) -> None:
        """RunRecord adds optional run_id and host."""
        assert ({"run_id", "host"}, (None, None)) == (
            set(RunRecord.model_fields) - set(LogRecord.model_fields),
            (RunRecord.model_fields["run_id"].default, RunRecord.model_fields["host"].default),
        )

    def test_task_log_record_defaults(self) -> None:
        """TaskLogRecord's message defaults to "" and its other optional fields to None."""
        record = TaskLogRecord(task_name="t", action="run", created=1.0)
        assert ("", None, None, None, None) == (
            record.message, record.start, record.end, record.runtime, record.exc_text
        )

    def test_task_log_record_types(self) -> None:
        """start/end are datetimes and runtime a timedelta, converted by the model."""
        record = TaskLogRecord(
            task_name="t", action="success", created=1.0,
            start="2024-03-04T12:00:00+00:00", end="2024-03-04T12:00:03+00:00",  # type: ignore[arg-type]
            runtime=3,  # type: ignore[arg-type]
        )
        assert (
            datetime(2024, 3, 4, 12, tzinfo=timezone.utc), timedelta(seconds=3)
        ) == (record.start, record.runtime)

    def test_task_run_record_defaults(self) -> None:
        """TaskRunRecord adds run_id, host and process, all None by default."""
        record = TaskRunRecord(task_name="t", action="run", created=1.0)
        assert (None, None, None) == (record.run_id, record.host, record.process)

    def test_models_exported(self) -> None:
        """All models and Action are importable from tasklog and tasklog.records."""
        from tasklog import records

        names = ["Action", "LogRecord", "MinimalRecord", "MinimalRunRecord", "RunRecord",
                 "TaskLogRecord", "TaskRunRecord"]
        assert [getattr(records, n) for n in names] == [getattr(tasklog, n) for n in names]


class TestAction:
    """Action: a str enum of the standard actions."""

    def test_values(self) -> None:
        """The standard actions and their string values."""
        assert [
            "run", "success", "fail", "terminate", "inaction", "crash",
            "log", "progress", "statistics", "heartbeat", "missed", "skipped", "retry",
        ] == [a.value for a in Action]

    def test_is_str(self) -> None:
        """Members are strings: equal to, formatted and str()-ed as their values."""
        assert (True, True, "fail", "fail", "x=fail") == (
            isinstance(Action.FAIL, str), Action.FAIL == "fail", str(Action.FAIL),
            f"{Action.FAIL}", "x=%s" % Action.FAIL,  # noqa: UP031
        )

    def test_lookup_by_value(self) -> None:
        """Action("crash") is Action.CRASH."""
        assert Action.CRASH is Action("crash")

    def test_action_field_takes_member(self) -> None:
        """A model's action field accepts an Action member; it compares as its string."""
        record = MinimalRecord(task_name="t", action=Action.RUN, created=1.0)
        assert "run" == record.action

    def test_custom_actions(self) -> None:
        """action is a plain str: custom actions are allowed and stored."""
        repo = MemoryRepo()
        logger = logging.getLogger("t.records.custom")
        logger.setLevel(logging.INFO)
        logger.addHandler(RepoHandler(repo))
        for action in ("retry", "queued"):
            logger.info(action, extra={"task_name": "t", "action": action})
        assert ["retry", "queued"] == [r.action for r in repo]


class TestUserModels:
    """Any pydantic model can be the record model."""

    def test_user_model_in_repo(self) -> None:
        """A user model with its own fields is stored and read back as itself."""

        class Job(BaseModel):
            task_name: str
            action: str
            created: float
            rows: int = 0
            labels: dict[str, Any] = {}

        repo = MemoryRepo(model=Job)
        repo.add({"task_name": "etl", "action": "success", "created": 1.0, "rows": 10,
                  "labels": {"env": "prod"}})
        assert [Job(task_name="etl", action="success", created=1.0, rows=10,
                    labels={"env": "prod"})] == list(repo)

    def test_non_model_rejected(self) -> None:
        """A model that is not a pydantic model class is a TypeError."""
        with pytest.raises(TypeError, match="BaseModel"):
            MemoryRepo(model=dict)  # type: ignore[type-var]
