"""Runs: the lifecycle of ``task_logger.run()``, the run adapter and its output, on every store."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import RepoFactory
from pydantic import BaseModel

import tasklog
from tasklog import (
    CancelRun,
    MemoryRepo,
    MinimalRunRecord,
    RepoHandler,
    Run,
    RunRecord,
    TaskAdapter,
    TaskInaction,
    TaskRunRecord,
)
from tasklog.runs import RESERVED_FIELDS, current_run, format_records


class RichRecord(TaskRunRecord):
    """A user model with fields a run fills from its fields, context and figures."""

    attempt: int | None = None
    user: int | None = None
    done: float | None = None
    total: float | None = None
    processed: int | None = None
    skipped: int | None = None


TaskLoggerFactory = Callable[..., TaskAdapter]


@pytest.fixture(name="make_task_logger")
def _make_task_logger(make_repo: RepoFactory, store: str) -> Iterator[TaskLoggerFactory]:
    """``make_task_logger(task, model=..., **handler_options)`` on a fresh repo of each store.

    Its handlers are closed (queued records written) before the repos are.
    """
    handlers: list[RepoHandler] = []

    def make(
        task: str = "job", model: type[BaseModel] = RichRecord, **options: Any
    ) -> TaskAdapter:
        repo = make_repo(store, model=model)
        logger = logging.getLogger(f"tests.runs.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        handler = RepoHandler(repo, errors="raise", **options)
        handlers.append(handler)
        logger.addHandler(handler)
        return TaskAdapter(logger, task)

    yield make
    for handler in handlers:
        handler.close()


@pytest.fixture(name="task_logger")
def _task_logger(make_task_logger: TaskLoggerFactory) -> TaskAdapter:
    """A task logger for task ``job`` on a fresh :class:`RichRecord` repo of each store."""
    return make_task_logger()


def actions(records: list[Any]) -> list[str]:
    """The actions of *records*, in order."""
    return [r.action for r in records]


class TestLifecycle:
    """``with task_logger.run():`` logs ``run`` and one closing record."""

    def test_success(self, task_logger: TaskAdapter) -> None:
        """A normal exit logs run, the run's lines, then success; all share the run id."""
        with task_logger.run() as run:
            run.info("working")
        records = run.records()
        assert ["run", "log", "success"] == actions(records)
        assert {run.run_id} == {r.run_id for r in records}
        assert ["job"] * 3 == [r.task_name for r in records]

    def test_closing_record_has_start_end_runtime(self, task_logger: TaskAdapter) -> None:
        """The closing record carries start, end and runtime; the run record its start."""
        with task_logger.run() as run:
            pass
        first, last = run.records()
        assert first.start is not None
        assert first.start == last.start
        assert last.end is not None
        assert last.runtime is not None
        assert last.end - last.start == last.runtime
        assert last.runtime == run.duration

    def test_fail_logs_traceback_and_reraises(self, task_logger: TaskAdapter) -> None:
        """An exception logs fail with the full traceback in exc_text and is re-raised."""
        with pytest.raises(ValueError, match="boom"), task_logger.run() as run:
            raise ValueError("boom")
        records = run.records()
        assert ["run", "fail"] == actions(records)
        exc_text = records[-1].exc_text
        assert exc_text.startswith("Traceback (most recent call last):")
        assert "ValueError: boom" == exc_text.splitlines()[-1]
        assert 'raise ValueError("boom")' in exc_text
        assert records[-1].runtime is not None

    def test_inaction_is_swallowed(self, task_logger: TaskAdapter) -> None:
        """TaskInaction logs inaction and is swallowed."""
        with task_logger.run() as run:
            raise TaskInaction("nothing new")
        assert ["run", "inaction"] == actions(run.records())
        assert "Run had nothing to do: nothing new" == run.records()[-1].message

    @pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
    def test_terminate_is_reraised(
        self, task_logger: TaskAdapter, exc_type: type[BaseException]
    ) -> None:
        """KeyboardInterrupt, SystemExit and CancelledError log terminate and re-raise."""
        with pytest.raises(exc_type), task_logger.run() as run:
            raise exc_type()
        assert ["run", "terminate"] == actions(run.records())

    def test_cancel_run_forgets_the_run(self, task_logger: TaskAdapter) -> None:
        """CancelRun deletes every record of the run and is swallowed; other runs stay."""
        with task_logger.run() as kept:
            kept.info("interesting")
        with task_logger.run() as boring:
            boring.info("nothing to see")
            raise CancelRun
        assert [] == boring.records()
        assert ["run", "log", "success"] == actions(task_logger.get_records())
        assert {kept.run_id} == {r.run_id for r in task_logger.get_records()}

    def test_cancel_run_deletes_records_still_queued(
        self, make_task_logger: TaskLoggerFactory
    ) -> None:
        """Records still waiting in a background writer's queue are deleted too."""
        task_logger = make_task_logger(mode="background", flush_interval=3600)
        with task_logger.run() as run:
            run.info("queued, not yet written")
            raise CancelRun
        assert [] == task_logger.get_records()

    def test_run_ids_are_unique_uuid_hex(self, task_logger: TaskAdapter) -> None:
        """A generated run id is a fresh 32-digit UUID4 hex; a given one is used."""
        ids = []
        for _ in range(3):
            with task_logger.run() as run:
                ids.append(run.run_id)
        assert 3 == len(set(ids))
        assert all(4 == uuid.UUID(hex=i).version for i in ids)
        with task_logger.run(run_id="nightly-42") as named:
            pass
        assert ["nightly-42"] * 2 == [r.run_id for r in named.records()]

    def test_fields_are_stored(self, task_logger: TaskAdapter) -> None:
        """``run(attempt=2)`` stores attempt on every record of the run."""
        with task_logger.run(attempt=2) as run:
            run.info("retrying")
        assert [2, 2, 2] == [r.attempt for r in run.records()]
        assert "Run started (attempt=2)" == run.records()[0].message

    def test_host_and_process(self, task_logger: TaskAdapter) -> None:
        """Records carry this host's name and this process's id (for crash detection)."""
        with task_logger.run() as run:
            run.info("x")
        assert {(socket.gethostname(), os.getpid())} == {
            (r.host, r.process) for r in run.records()
        }

    def test_nested_runs_of_different_tasks(self, make_task_logger: TaskLoggerFactory) -> None:
        """A run inside another task's run keeps its own run id; both close properly."""
        outer_logger = make_task_logger("outer")
        inner_logger = TaskAdapter(outer_logger.logger, "inner")
        with outer_logger.run() as outer:
            outer.info("before")
            with inner_logger.run() as inner:
                inner.info("inside")
            outer.info("after")
        assert ["run", "log", "log", "success"] == actions(outer.records())
        assert ["run", "log", "success"] == actions(inner.records())
        assert outer.run_id != inner.run_id

    def test_model_without_times(self, make_task_logger: TaskLoggerFactory) -> None:
        """A model without start/end/runtime (MinimalRunRecord) still records the lifecycle."""
        task_logger = make_task_logger(model=MinimalRunRecord)
        with pytest.raises(RuntimeError), task_logger.run() as run:
            raise RuntimeError("x")
        assert [("run", run.run_id), ("fail", run.run_id)] == [
            (r.action, r.run_id) for r in task_logger.get_records()
        ]

    def test_levels(self, make_task_logger: TaskLoggerFactory) -> None:
        """Lifecycle records are INFO, fail is ERROR."""
        task_logger = make_task_logger(model=RunRecord)
        with task_logger.run():
            pass
        with pytest.raises(OSError, match="disk"), task_logger.run():
            raise OSError("disk")
        assert [
            ("run", "INFO"), ("success", "INFO"), ("run", "INFO"), ("fail", "ERROR")
        ] == [(r.action, r.levelname) for r in task_logger.get_records()]

    def test_started_twice_is_an_error(self, task_logger: TaskAdapter) -> None:
        """A run object is one execution; entering it again raises RuntimeError."""
        run = task_logger.run()
        with run:
            pass
        with pytest.raises(RuntimeError, match="already started"), run:
            pass


class TestAsync:
    """``async with`` and async decorated functions behave like their sync twins."""

    def test_async_with(self, task_logger: TaskAdapter) -> None:
        """``async with`` logs run and success, and fail for an exception."""

        async def main() -> tuple[Run, Run]:
            async with task_logger.run() as ok:
                await asyncio.sleep(0)
                ok.info("awaited")
            with pytest.raises(LookupError):
                async with task_logger.run() as bad:
                    raise LookupError("missing")
            return ok, bad

        ok, bad = asyncio.run(main())
        assert ["run", "log", "success"] == actions(ok.records())
        assert ["run", "fail"] == actions(bad.records())

    def test_async_decorator(self, task_logger: TaskAdapter) -> None:
        """An async decorated function returns its value; each call is one run."""

        @task_logger.task
        async def fetch(n: int) -> int:
            """Fetch n things."""
            run = current_run()
            assert run is not None
            run.info("fetching %d", n)
            return n * 2

        assert 6 == asyncio.run(fetch(3))
        assert "fetch" == fetch.__name__
        assert "Fetch n things." == fetch.__doc__
        assert ["run", "log", "success"] == actions(task_logger.get_records())
        assert "fetching 3" == task_logger.get_records()[1].message

    def test_cancelled_task_terminates(self, task_logger: TaskAdapter) -> None:
        """Cancelling the asyncio task of a run logs terminate."""

        @task_logger.task
        async def forever() -> None:
            await asyncio.sleep(3600)

        async def main() -> None:
            job = asyncio.ensure_future(forever())
            await asyncio.sleep(0)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job

        asyncio.run(main())
        assert ["run", "terminate"] == actions(task_logger.get_records())


class TestDecorator:
    """``@task_logger.task`` on sync functions."""

    def test_returns_value_and_wraps(self, task_logger: TaskAdapter) -> None:
        """The wrapper returns the function's value and keeps its name."""

        @task_logger.task
        def add(a: int, b: int) -> int:
            return a + b

        assert 5 == add(2, 3)
        assert "add" == add.__name__
        assert ["run", "success"] == actions(task_logger.get_records())

    def test_inaction_returns_none(self, task_logger: TaskAdapter) -> None:
        """A swallowed TaskInaction makes the call return None."""

        @task_logger.task
        def idle() -> int:
            raise TaskInaction

        assert idle() is None
        assert ["run", "inaction"] == actions(task_logger.get_records())

    def test_failure_reraises(self, task_logger: TaskAdapter) -> None:
        """An exception is logged as fail and reaches the caller."""

        @task_logger.task
        def broken() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            broken()
        assert ["run", "fail"] == actions(task_logger.get_records())

    def test_current_run_outside_a_run(self) -> None:
        """Outside any run, current_run() is None."""
        assert current_run() is None


class TestRunAdapter:
    """The run object as a logger: bind, progress, statistics, records, output."""

    def test_bind_carries_context(self, task_logger: TaskAdapter) -> None:
        """A bound adapter's records carry the run id and the context."""
        with task_logger.run() as run:
            run.bind(user=123).info("processing user")
            run.info("plain")
        records = run.records()
        assert [None, 123, None, None] == [r.user for r in records]
        assert {run.run_id} == {r.run_id for r in records}

    def test_progress(self, task_logger: TaskAdapter) -> None:
        """progress() logs one progress record with done/total and a readable message."""
        with task_logger.run() as run:
            run.progress(3, 10, "items")
            run.progress(7)
        progress = [r for r in run.records() if r.action == "progress"]
        assert [("3/10 (30.0%) items", 3, 10), ("7", 7, None)] == [
            (r.message, r.done, r.total) for r in progress
        ]

    def test_statistics(self, task_logger: TaskAdapter) -> None:
        """statistics() logs key=value pairs in the message and fills fields of those names."""
        with task_logger.run() as run:
            run.statistics({"processed": 1000, "skipped": 42, "rate": "95.8%"})
        record = task_logger.get_latest("statistics")
        assert ("processed=1000 skipped=42 rate=95.8%", 1000, 42) == (
            record.message, record.processed, record.skipped
        )

    def test_duration_grows_then_freezes(self, task_logger: TaskAdapter) -> None:
        """duration is a timedelta: zero before, elapsed during, the runtime after."""
        run = task_logger.run()
        assert timedelta(0) == run.duration
        with run:
            assert isinstance(run.duration, timedelta)
        assert run.duration == run.duration
        assert run.records()[-1].runtime == run.duration

    def test_output_format(
        self, task_logger: TaskAdapter, fixed_clock: None
    ) -> None:
        """output() is one line per record, local time with milliseconds, context in brackets."""
        with task_logger.run() as run:
            run.info("Processing %d records", 1000)
            run.bind(user=123).warning("Slow user")
        lines = run.output().splitlines()
        assert [
            "[2024-03-04 14:00:00.000] [INFO] [job] Run started",
            "[2024-03-04 14:00:00.000] [INFO] [job] Processing 1000 records",
            "[2024-03-04 14:00:00.000] [WARNING] [job[user=123]] Slow user",
        ] == lines[:3]
        assert re.fullmatch(
            r"\[2024-03-04 14:00:00\.000\] \[INFO\] \[job\] Run succeeded in \d+\.\d{3}s", lines[3]
        )
        assert 4 == len(lines)

    def test_output_has_traceback(self, task_logger: TaskAdapter) -> None:
        """The fail line is followed by the traceback."""
        with pytest.raises(ZeroDivisionError), task_logger.run() as run:
            _ = 1 / 0
        lines = run.output().splitlines()
        assert re.fullmatch(
            r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[ERROR\] \[job\] Run failed after "
            r"\d+\.\d{3}s: ZeroDivisionError: division by zero",
            lines[1],
        )
        assert "Traceback (most recent call last):" == lines[2]
        assert "ZeroDivisionError: division by zero" == lines[-1]

    def test_output_skips_disabled_levels(self, task_logger: TaskAdapter) -> None:
        """A debug line the logger does not log is not in the output either."""
        with task_logger.run() as run:
            run.debug("hidden")
        assert ["run", "success"] == actions(run.records())
        assert "hidden" not in run.output()

    def test_format_records(self, task_logger: TaskAdapter) -> None:
        """format_records() renders stored records of any model in the same line format."""
        with pytest.raises(ValueError, match="bad"), task_logger.run() as run:
            raise ValueError("bad")
        text = format_records(run.records())
        assert "[INFO] [job] Run started" in text.splitlines()[0]
        assert "[ERROR] [job] Run failed after" in text.splitlines()[1]
        assert "ValueError: bad" == text.splitlines()[-1]

    def test_format_records_minimal_model(self, fixed_clock: None) -> None:
        """Records without levelname or message show their action, ERROR for fail and crash."""
        records = [
            MinimalRunRecord(task_name="job", action="run", created=1709553600.0, run_id="r"),
            MinimalRunRecord(task_name="job", action="crash", created=1709553601.5, run_id="r"),
        ]
        assert (
            "[2024-03-04 14:00:00.000] [INFO] [job] run\n"
            "[2024-03-04 14:00:01.500] [ERROR] [job] crash"
        ) == format_records(records)

    def test_caller_is_the_user_code(self, make_task_logger: TaskLoggerFactory) -> None:
        """A record logged through a run names the calling function, not tasklog's code."""
        task_logger = make_task_logger(model=RunRecord)
        with task_logger.run() as run:
            run.info("here")
        assert "test_caller_is_the_user_code" == run.records()[1].funcName


@pytest.fixture(name="memory_logger")
def _memory_logger() -> TaskAdapter:
    """A task logger for task ``job`` on an in-memory repo (for store-independent tests)."""
    logger = logging.getLogger(f"tests.runs.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    adapter = TaskAdapter(logger, "job", ignore_warnings=True)
    adapter.set_repo(MemoryRepo(model=RichRecord))
    return adapter


class TestReservedNames:
    """Names the stdlib refuses in ``extra`` are refused early, with a clear message."""

    @pytest.mark.parametrize("name", ["name", "msg", "created", "process", "message", "action"])
    def test_run_field(self, memory_logger: TaskAdapter, name: str) -> None:
        """A reserved run field raises ValueError naming it."""
        fields: dict[str, Any] = {name: 1}
        with pytest.raises(ValueError, match=repr(name)):
            Run(memory_logger, **fields)

    def test_bind(self, memory_logger: TaskAdapter) -> None:
        """A reserved bind key raises ValueError naming it."""
        with memory_logger.run() as run, pytest.raises(ValueError, match="'module'"):
            run.bind(module="x")

    def test_statistics(self, memory_logger: TaskAdapter) -> None:
        """A reserved statistics key raises ValueError naming it."""
        with memory_logger.run() as run, pytest.raises(ValueError, match="'lineno'"):
            run.statistics({"lineno": 1})

    def test_reserved_covers_log_record(self) -> None:
        """Every attribute of a LogRecord is reserved."""
        record = logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)
        assert set(vars(record)) <= RESERVED_FIELDS


@pytest.fixture(name="fixed_clock")
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Output lines at 2024-03-04 12:00:00 UTC, in a local time zone of UTC+2."""
    monkeypatch.setattr(tasklog.runs, "_now", lambda: 1709553600.0)
    monkeypatch.setenv("TZ", "Etc/GMT-2")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_run_is_exported() -> None:
    """tasklog.Run is the class TaskAdapter.run() returns."""
    logger = logging.getLogger("tests.runs.exported")
    adapter = TaskAdapter(logger, "t", ignore_warnings=True)
    assert isinstance(adapter.run(), tasklog.Run)
