"""Record -> row (tasklog.mapper), without a handler's threads or a store write."""

from __future__ import annotations

import ast
import gc
import logging
import os
import sys
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from tasklog import MemoryRepo, MinimalRunRecord, TaskRunRecord, lifecycle
from tasklog.mapper import RowMapper, Unchecked


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    record.__dict__.update(extra)
    return record


def test_plain_record_becomes_a_row_in_one_pass() -> None:
    repo: MemoryRepo[Any] = MemoryRepo(model=TaskRunRecord)
    mapper = RowMapper(TaskRunRecord, repo)
    when = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    row = mapper.prepare(logging.Handler(), _record(task_name="t", action="run", start=when))
    assert type(row) is dict
    assert ("t", "run", "hello there") == (row["task_name"], row["action"], row["message"])
    assert datetime(2026, 1, 1, 10, tzinfo=timezone.utc) == row["start"]  # UTC, as validation
    assert [row] == mapper.rows([row], on_invalid=pytest.fail)


def test_values_of_another_type_are_validated_and_bad_ones_reported() -> None:
    repo: MemoryRepo[Any] = MemoryRepo(model=MinimalRunRecord)
    mapper = RowMapper(MinimalRunRecord, repo)
    handler = logging.Handler()
    coerced = mapper.prepare(handler, _record(task_name="t", action="run", created=5))  # an int
    missing = mapper.prepare(handler, _record(action="run"))
    assert type(coerced) is Unchecked
    assert type(missing) is Unchecked
    with pytest.raises(ValidationError):
        mapper.check(missing)
    invalid: list[ValidationError] = []
    rows = mapper.rows([coerced, missing], on_invalid=invalid.append)
    assert [("t", "run", 5.0)] == [(r["task_name"], r["action"], r["created"]) for r in rows]
    assert 1 == len(invalid)


class _Upper(BaseModel):
    task_name: str
    action: str
    created: float

    @field_validator("task_name")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


def test_a_model_with_validators_goes_through_pydantic() -> None:
    repo: MemoryRepo[Any] = MemoryRepo(model=_Upper)
    mapper = RowMapper(_Upper, repo)
    data = mapper.prepare(logging.Handler(), _record(task_name="t", action="run"))
    assert type(data) is Unchecked
    assert ["T"] == [r["task_name"] for r in mapper.rows([data], on_invalid=pytest.fail)]


class _Engine:
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def reset(self) -> None:
        self.seen.append(os.getpid())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_hooks_run_in_the_child_and_go_with_their_object(tmp_path: Any) -> None:
    """A store registers a bound method; it runs in a forked child, and is dropped with it."""
    seen: list[int] = []
    kept, dropped = _Engine(seen), _Engine(seen)
    lifecycle.on_fork_in_child(kept.reset)
    lifecycle.on_fork_in_child(dropped.reset)
    del dropped
    gc.collect()
    out = tmp_path / "child"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        out.write_text(repr(seen))
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    assert [pid] == ast.literal_eval(out.read_text())  # one call (the live object's), in the child
    assert [] == seen  # never in the parent
