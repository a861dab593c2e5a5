"""tasklog.contrib.celery: real Celery workers' task executions become runs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.utils.log import get_task_logger

import tasklog
from tasklog import MemoryRepo, RepoHandler, Repository, TaskRunRecord
from tasklog.contrib.celery import install

TESTS = Path(__file__).resolve().parent


class Record(TaskRunRecord):
    """TaskRunRecord with the level."""

    levelname: str | None = None


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll *predicate* until it holds (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the worker did not get there")
        time.sleep(0.02)


def run_records(repo: Repository[Any], run_id: str) -> list[Any]:
    """The records of one run, in order."""
    return repo.filter_by(run_id=run_id).all()


def closed(repo: Repository[Any], run_id: str, action: str) -> Callable[[], bool]:
    """A predicate: the run has a record of *action*."""
    return lambda: repo.filter_by(run_id=run_id, action=action).count() > 0


class Worker:
    """A Celery app, its tasks and the store its runs go to."""

    def __init__(self, app: Celery, repo: Repository[Any], tasks: dict[str, Any]) -> None:
        self.app = app
        self.repo = repo
        self.tasks = tasks


@pytest.fixture(scope="module", name="worker")
def _worker() -> Iterator[Worker]:
    """A real worker (solo pool, memory broker) in this process, hooked."""
    repo = MemoryRepo(model=Record)
    name = f"tests.celery.{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = RepoHandler(repo, errors="raise")
    logger.addHandler(handler)
    tasklog.capture()
    logging.getLogger("celerylib").setLevel(logging.INFO)

    app = Celery(f"t{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.update(
        broker_transport_options={"polling_interval": 0.01},
        worker_hijack_root_logger=False,
        task_default_retry_delay=0,
    )
    task_log = get_task_logger("tests.celery.tasks")
    attempts: dict[str, int] = {}

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        task_log.warning("adding %d and %d", x, y)
        logging.getLogger("celerylib.math").warning("library line")
        return x + y

    @app.task(name="boom")
    def boom() -> None:
        msg = "boom"
        raise ValueError(msg)

    @app.task(name="flaky", bind=True, max_retries=3)
    def flaky(self: Any) -> str:
        attempts[self.request.id] = attempts.get(self.request.id, 0) + 1
        if attempts[self.request.id] == 1:
            raise self.retry(exc=ConnectionError("first try fails"), countdown=0)
        return "second try works"

    @app.task(name="never")
    def never() -> None:  # pragma: no cover  (revoked before it runs)
        pass

    install(app, logger=name)
    tasks = {"add": add, "boom": boom, "flaky": flaky, "never": never}
    with start_worker(app, pool="solo", loglevel="WARNING", perform_ping_check=False,
                      shutdown_timeout=30):
        yield Worker(app, repo, tasks)
    tasklog.capture(False)
    logger.removeHandler(handler)
    handler.close()


class TestSoloWorker:
    """Every signal, with a real worker."""

    def test_success_with_task_lines(self, worker: Worker) -> None:
        """task_prerun -> run, the task's own lines (task logger, library), success."""
        result = worker.tasks["add"].delay(2, 3)
        assert 5 == result.get(timeout=60)
        wait_for(closed(worker.repo, result.id, "success"))
        records = run_records(worker.repo, result.id)
        assert ["run", "log", "log", "success"] == [r.action for r in records]
        assert {"add"} == {r.task_name for r in records}
        assert ["adding 2 and 3", "library line"] == [r.message for r in records[1:3]]
        assert records[-1].runtime is not None

    def test_failure_with_traceback(self, worker: Worker) -> None:
        """task_failure -> fail with the task's traceback."""
        result = worker.tasks["boom"].delay()
        result.get(timeout=60, propagate=False)
        wait_for(closed(worker.repo, result.id, "fail"))
        run, fail = run_records(worker.repo, result.id)
        assert "run" == run.action
        assert "ERROR" == fail.levelname
        assert "ValueError: boom" in fail.message
        assert fail.exc_text.startswith("Traceback (most recent call last):")
        assert "raise ValueError(msg)" in fail.exc_text
        assert fail.exc_text.endswith("ValueError: boom")

    def test_retry_then_success(self, worker: Worker) -> None:
        """task_retry -> retry; the next attempt continues the same run to success."""
        result = worker.tasks["flaky"].delay()
        assert "second try works" == result.get(timeout=60)
        wait_for(closed(worker.repo, result.id, "success"))
        records = run_records(worker.repo, result.id)
        assert ["run", "retry", "log", "success"] == [r.action for r in records]
        assert "first try fails" in records[1].message
        assert "Retry 1 started" == records[2].message

    def test_revoked_before_it_ran(self, worker: Worker) -> None:
        """task_revoked -> run, terminate for a task revoked before it started."""
        task_id = uuid.uuid4().hex
        worker.app.control.revoke(task_id)
        wait_for(lambda: _revoked_in_worker(task_id))
        worker.tasks["never"].apply_async(task_id=task_id)
        wait_for(closed(worker.repo, task_id, "terminate"))
        records = run_records(worker.repo, task_id)
        assert ["run", "terminate"] == [r.action for r in records]
        assert "revoked before it started" in records[-1].message

    def test_other_apps_ignored(self, worker: Worker) -> None:
        """A task of another app, run eagerly here, is not logged by this app's hooks."""
        other = Celery("other")
        other.conf.task_always_eager = True

        @other.task(name="other_add")
        def other_add() -> int:
            return 1

        other_add.delay()
        assert 0 == worker.repo.filter_by(task_name="other_add").count()


def _revoked_in_worker(task_id: str) -> bool:
    from celery.worker import state

    return task_id in state.revoked


# ----------------------------------------------------------- Redis, prefork
def _own_database(url: str) -> str:
    """The session's Redis URL with database 15: the broker's keys stay apart."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, parts.fragment))


@pytest.mark.slow
@pytest.mark.redis
def test_prefork_worker_with_redis(redis_url: str, tmp_path: Path) -> None:
    """A `celery worker` process (prefork pool, Redis broker): runs from the children.

    A task's records come from the child that ran it; revoking a running task
    with terminate=True logs terminate from the main worker process.
    """
    store = f"sqlite:///{tmp_path / 'celery.db'}"
    redis_url = _own_database(redis_url)
    env = {**os.environ, "TASKLOG_CELERY_BROKER": redis_url, "TASKLOG_CELERY_URL": store,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "_celery_app", "worker", "--pool=prefork",
         "--concurrency=2", "--loglevel=WARNING", "--without-mingle", "--without-gossip",
         "-n", f"w{uuid.uuid4().hex[:6]}@%h"],
        cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    repo = tasklog.open_repo(store, model=TaskRunRecord)
    app = Celery("tasklog_test", broker=redis_url)
    try:
        ok = app.send_task("_celery_app.add", args=(20, 22))
        wait_for(lambda: repo.filter_by(run_id=ok.id, action="success").count() > 0,
                 timeout=120)
        records = repo.filter_by(run_id=ok.id).all()
        assert ["run", "log", "log", "success"] == [r.action for r in records]
        assert {"_celery_app.add"} == {r.task_name for r in records}
        assert records[1].message.startswith("adding 20 and 22 in pid")
        assert "library line" == records[2].message
        child = records[0].process
        assert child is not None
        assert worker.pid != child

        slow = app.send_task("_celery_app.snooze", args=(600,))
        wait_for(lambda: repo.filter_by(run_id=slow.id, action="log").count() > 0,
                 timeout=120)
        app.control.revoke(slow.id, terminate=True, signal="SIGTERM")
        wait_for(lambda: repo.filter_by(run_id=slow.id, action="terminate").count() > 0,
                 timeout=120)
        actions = [r.action for r in repo.filter_by(run_id=slow.id).all()]
        assert ["run", "log", "terminate"] == actions
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
        repo.close()
    assert "Traceback" not in output, output
