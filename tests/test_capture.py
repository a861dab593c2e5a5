"""Capture (records of any logger inside a run), heartbeat, activate() and task() options."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from conftest import RepoFactory

import tasklog
from tasklog import RepoHandler, TaskAdapter, TaskRunRecord
from tasklog.runs import current_run


class FieldRecord(TaskRunRecord):
    """A model with a run field and the level."""

    attempt: int | None = None
    levelname: str | None = None


@pytest.fixture(name="captured")
def _captured() -> Iterator[None]:
    """Capture on for the test, off afterwards."""
    tasklog.capture()
    yield
    tasklog.capture(False)


@pytest.fixture(name="lib")
def _lib() -> Iterator[logging.Logger]:
    """A library-style logger (``mylib.http``) at INFO, handler-less, propagating."""
    logger = logging.getLogger(f"mylib{uuid.uuid4().hex[:6]}.http")
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(logging.NOTSET)


def make_logger(repo: Any, **options: Any) -> TaskAdapter:
    """A task logger ``job`` (own logger, not propagating) writing to *repo*."""
    logger = logging.getLogger(f"tests.capture.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    options.setdefault("errors", "raise")
    logger.addHandler(RepoHandler(repo, **options))
    return TaskAdapter(logger, "job")


def actions(records: list[Any]) -> list[str]:
    """The actions of *records*, in order."""
    return [r.action for r in records]


@pytest.mark.usefixtures("captured")
class TestCapture:
    """``tasklog.capture()``: records of any logger inside a run are stored with it."""

    def test_library_logger_on_every_store(
        self, make_repo: RepoFactory, store: str, lib: logging.Logger
    ) -> None:
        """A library's lines inside a run carry its task and run id; outside, nothing."""
        task_logger = make_logger(make_repo(store, model=FieldRecord))
        lib.info("before any run")
        with task_logger.run(attempt=3) as run:
            run.info("own line")
            lib.info("GET /x -> %d", 200)
            lib.warning("slow response")
        lib.info("after the run")
        records = run.records()
        assert ["run", "log", "log", "log", "success"] == actions(records)
        assert ["own line", "GET /x -> 200", "slow response"] == [
            r.message for r in records[1:4]
        ]
        assert {"job"} == {r.task_name for r in records}
        assert {run.run_id} == {r.run_id for r in records}
        assert {3} == {r.attempt for r in records}
        assert 5 == len(task_logger.repo)
        assert "WARNING" == records[3].levelname

    def test_output_interleaves_in_order(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """run.output() shows captured lines in order with the run's own lines."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        with task_logger.run() as run:
            run.info("one")
            lib.info("two")
            run.info("three")
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                lib.exception("four")
        text = run.output()
        order = [text.index(word) for word in ("one", "two", "three", "four", "ZeroDivisionError")]
        assert sorted(order) == order
        assert "[job] two" in text
        stored = tasklog.runs.format_records(run.records())
        assert "ZeroDivisionError" in stored

    def test_no_warnings_no_stderr_outside_runs(
        self, make_repo: RepoFactory, lib: logging.Logger, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Records outside runs are not stored and print nothing (no "does not fit")."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord), errors="warn")
        for _ in range(3):
            lib.warning("outside")
        assert 0 == len(task_logger.repo)
        assert "" == capsys.readouterr().err

    def test_task_logger_records_not_stored_twice(self, make_repo: RepoFactory) -> None:
        """The task logger's records reach the root too; they are stored once."""
        repo = make_repo("sqlite", model=TaskRunRecord)
        handler = RepoHandler(repo, mode="sync")
        logger = logging.getLogger(f"tests.capture.prop{uuid.uuid4().hex[:6]}")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)  # propagates to the root, where capture sits
        task_logger = TaskAdapter(logger, "job")
        with task_logger.run() as run:
            run.info("mine")
            logging.getLogger("mylib.dup").warning("theirs")
        assert ["run", "log", "log", "success"] == actions(run.records())
        assert ["mine", "theirs"] == [r.message for r in run.records()[1:3]]

    def test_repo_handler_on_root(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """A repo handler on the root logger stores captured records once, stamped."""
        repo = make_repo("memory", model=TaskRunRecord)
        handler = RepoHandler(repo, errors="raise")
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        task_logger = TaskAdapter(root, "job")
        with task_logger.run() as run:
            lib.warning("from the library")
        assert ["run", "log", "success"] == actions(run.records())

    def test_two_threads_two_runs(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """Two threads running two runs at once: each record lands in its own run."""
        task_logger = make_logger(make_repo("sqlite", model=TaskRunRecord))
        barrier = threading.Barrier(2)
        runs: dict[str, str] = {}

        def work(name: str) -> None:
            with task_logger.run() as run:
                runs[name] = run.run_id
                for i in range(20):
                    lib.info("%s line %d", name, i)
                    if i == 5:
                        barrier.wait()

        threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, run_id in runs.items():
            lines = [r.message for r in task_logger.get_records(run_id=run_id, action="log")]
            assert [f"{name} line {i}" for i in range(20)] == lines

    def test_two_asyncio_tasks(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """Two asyncio tasks, interleaved at each await: each keeps its own run."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        runs: dict[str, str] = {}

        async def work(name: str) -> None:
            async with task_logger.run() as run:
                runs[name] = run.run_id
                for i in range(5):
                    lib.info("%s step %d", name, i)
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(work("a"), work("b"))

        asyncio.run(main())
        for name, run_id in runs.items():
            lines = [r.message for r in task_logger.get_records(run_id=run_id, action="log")]
            assert [f"{name} step {i}" for i in range(5)] == lines

    def test_thread_pool_needs_copied_context(
        self, make_repo: RepoFactory, lib: logging.Logger
    ) -> None:
        """A pool thread sees the run only through contextvars.copy_context().run."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        with task_logger.run() as run, ThreadPoolExecutor(1) as pool:
            pool.submit(lib.info, "lost").result()
            pool.submit(contextvars.copy_context().run, lib.info, "kept").result()
        assert ["kept"] == [r.message for r in run.records() if r.action == "log"]

    def test_basic_config_capture(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """basic_config(capture=True) turns capture on."""
        tasklog.capture(False)
        repo = make_repo("memory", model=TaskRunRecord)
        tasklog.basic_config(repo, logger="tests.capture.basic", capture=True)
        from tasklog.capture import is_capturing

        assert is_capturing()
        task_logger = tasklog.get_task_logger("job", logger="tests.capture.basic")
        with task_logger.run() as run:
            lib.info("seen")
        assert ["run", "log", "success"] == actions(run.records())

    def test_capture_off(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """capture(False): library lines are no longer stored."""
        tasklog.capture(False)
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        with task_logger.run() as run:
            lib.info("not kept")
        assert ["run", "success"] == actions(run.records())


class TestActivate:
    """``run.activate()``: the run is current without logging run/success."""

    def test_activate_logs_nothing(self, make_repo: RepoFactory, lib: logging.Logger) -> None:
        """Inside activate(), current_run() is the run and captured lines carry it."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        run = task_logger.run(run_id="r1")
        tasklog.capture()
        try:
            with run.activate() as active:
                assert current_run() is active is run
                lib.info("inside")
            assert current_run() is None
        finally:
            tasklog.capture(False)
        assert [("log", "inside")] == [(r.action, r.message) for r in run.records()]


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll *predicate* until true (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        time.sleep(0.01)


class TestHeartbeat:
    """``run(heartbeat=...)`` logs ``heartbeat`` records while the run is open."""

    def test_heartbeats_between_run_and_close(self, make_repo: RepoFactory, store: str) -> None:
        """Heartbeats come after run, before success, and stop when the run ends."""
        task_logger = make_logger(make_repo(store, model=TaskRunRecord), mode="sync")
        with task_logger.run(heartbeat=timedelta(milliseconds=20)) as run:
            wait_for(lambda: len(task_logger.get_records(action="heartbeat")) >= 2)
        records = run.records()
        assert "run" == records[0].action
        assert "success" == records[-1].action
        middle = actions(records[1:-1])
        assert len(middle) >= 2
        assert {"heartbeat"} == set(middle)
        assert records[1].message.startswith("Still running after ")
        count = len(records)
        time.sleep(0.1)
        assert count == len(run.records())

    def test_heartbeat_in_decorator(self, make_repo: RepoFactory) -> None:
        """@task(heartbeat=...) runs take heartbeats too."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))

        @task_logger.task(heartbeat=0.01)
        def job() -> None:
            wait_for(lambda: len(task_logger.get_records(action="heartbeat")) >= 1)

        job()
        assert "heartbeat" in actions(task_logger.get_records())

    @pytest.mark.parametrize("bad", [0, -1, timedelta(0)])
    def test_bad_interval(self, make_repo: RepoFactory, bad: Any) -> None:
        """A non-positive interval is refused, naming the parameter."""
        task_logger = make_logger(make_repo("memory", model=TaskRunRecord))
        with pytest.raises(ValueError, match="heartbeat"):
            task_logger.run(heartbeat=bad)


class TestTaskDecoratorOptions:
    """``@task_logger.task``, ``@task_logger.task()``, ``@task_logger.task(attempt=1)``."""

    def test_with_parentheses(self, make_repo: RepoFactory) -> None:
        """@task() works like @task."""
        task_logger = make_logger(make_repo("memory", model=FieldRecord))

        @task_logger.task()
        def job(x: int) -> int:
            return x * 2

        assert 4 == job(2)
        assert ["run", "success"] == actions(task_logger.get_records())

    def test_with_fields(self, make_repo: RepoFactory) -> None:
        """@task(attempt=1) stores the field on every record of each run."""
        task_logger = make_logger(make_repo("memory", model=FieldRecord))

        @task_logger.task(attempt=1)
        async def job() -> str:
            return "done"

        assert "done" == asyncio.run(job())
        assert [1, 1] == [r.attempt for r in task_logger.get_records()]

    def test_reserved_field_refused_at_decoration(self, make_repo: RepoFactory) -> None:
        """A reserved field name is refused when decorating, not at the first call."""
        task_logger = make_logger(make_repo("memory", model=FieldRecord))
        with pytest.raises(ValueError, match="'created'"):
            task_logger.task(created=1)

    def test_positional_non_callable(self, make_repo: RepoFactory) -> None:
        """@task(1): a clear TypeError."""
        task_logger = make_logger(make_repo("memory", model=FieldRecord))
        with pytest.raises(TypeError, match="decorates a function"):
            task_logger.task(1)  # type: ignore[call-overload]


def test_cli_logs_show_captured_lines(
    make_repo: RepoFactory, lib: logging.Logger, tmp_path: Any
) -> None:
    """`tasklog logs TASK` shows a library's captured lines in order with the run's own."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'cap.db'}"
    tasklog.basic_config(url, logger="tests.capture.cli", model=TaskRunRecord, capture=True)
    try:
        task_logger = tasklog.get_task_logger("sync", logger="tests.capture.cli")
        with task_logger.run() as run:
            run.info("one")
            lib.info("two")
            run.info("three")
        logging.getLogger("tests.capture.cli").handlers[0].flush()
    finally:
        tasklog.capture(False)
    out = subprocess.run(
        [sys.executable, "-m", "tasklog", "--repo", url, "logs", "sync"],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = [line.split("] ", 3)[-1] for line in out.splitlines()]
    assert ["Run started", "one", "two", "three"] == lines[:4]
    assert lines[4].startswith("Run succeeded")
