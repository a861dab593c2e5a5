"""tasklog.contrib.apscheduler: a real BackgroundScheduler's executions become runs."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import _aps_jobs
import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.debug import DebugExecutor
from apscheduler.executors.pool import ProcessPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from conftest import RepoFactory, store_url

import tasklog
from tasklog import RepoHandler, Repository
from tasklog.contrib.apscheduler import install, run_id_for

Record = _aps_jobs.Record

def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll *predicate* until it holds (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the scheduler did not get there")
        time.sleep(0.02)


def by_run(repo: Repository[Any], task: str) -> dict[str, list[Any]]:
    """The task's records grouped by run id, in order."""
    runs: dict[str, list[Any]] = {}
    for record in repo.filter_by(task_name=task).all():
        runs.setdefault(record.run_id, []).append(record)
    return runs


def executed(runs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The runs that executed; those skipped or missed under load are just run + closing."""
    kept = {}
    for run_id, records in runs.items():
        if records[-1].action in ("skipped", "missed"):
            assert ["run", records[-1].action] == [r.action for r in records]
        else:
            kept[run_id] = records
    return kept


def count(repo: Repository[Any], action: str, task: str | None = None) -> int:
    """How many records of *action* (for *task*) are stored."""
    conditions = {"action": action} if task is None else {"action": action, "task_name": task}
    return repo.filter_by(**conditions).count()


@pytest.fixture(name="hooked")
def _hooked() -> Iterator[Callable[..., tuple[BackgroundScheduler, Repository[Any]]]]:
    """``hooked(repo, **scheduler_options)``: a hooked scheduler logging into *repo*."""
    schedulers: list[BackgroundScheduler] = []
    tasklog.capture()
    logging.getLogger("apslib").setLevel(logging.INFO)

    def make(repo: Repository[Any], **options: Any) -> tuple[BackgroundScheduler, Repository[Any]]:
        name = f"tests.aps.{uuid.uuid4().hex[:8]}"
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(RepoHandler(repo, mode="sync", errors="raise"))
        scheduler = BackgroundScheduler(timezone="UTC", **options)
        install(scheduler, logger=name)
        schedulers.append(scheduler)
        return scheduler, repo

    yield make
    for scheduler in schedulers:
        if scheduler.running:
            scheduler.shutdown(wait=True)
    tasklog.capture(False)
    logging.getLogger("apslib").setLevel(logging.NOTSET)


Hooked = Callable[..., tuple[BackgroundScheduler, Repository[Any]]]


class TestThreadPool:
    """The default thread pool executor."""

    def test_interval_job_succeeds(
        self, hooked: Hooked, make_repo: RepoFactory, store: str
    ) -> None:
        """Each execution: run, the job's own lines (run and library logger), success."""
        scheduler, repo = hooked(make_repo(store, model=Record))
        scheduler.add_job(_aps_jobs.report, "interval", seconds=0.2, id="report-job")
        scheduler.start()
        wait_for(lambda: count(repo, "success") >= 2)
        scheduler.shutdown(wait=True)
        runs = executed(by_run(repo, "report-job"))
        assert len(runs) >= 2
        for run_id, records in runs.items():
            assert run_id.startswith("report-job@")
            when = datetime.fromisoformat(run_id.split("@", 1)[1])
            assert when.tzinfo is not None
            assert ["run", "log", "log", "success"] == [r.action for r in records]
            assert records[1].message.startswith("report in pid")
            assert "query done" == records[2].message
            assert records[-1].runtime is not None
            assert records[-1].start == records[0].start

    def test_failing_job(self, hooked: Hooked, make_repo: RepoFactory) -> None:
        """A job that raises: fail, with the job's traceback in exc_text."""
        scheduler, repo = hooked(make_repo("sqlite", model=Record))
        scheduler.add_job(_aps_jobs.broken, "interval", seconds=0.2, id="broken")
        scheduler.start()
        wait_for(lambda: count(repo, "fail") >= 1)
        scheduler.shutdown(wait=True)
        records = next(iter(executed(by_run(repo, "broken")).values()))
        assert ["run", "fail"] == [r.action for r in records]
        fail = records[-1]
        assert "ERROR" == fail.levelname
        assert "Run failed after" in fail.message
        assert "RuntimeError: disk full" in fail.message
        assert fail.exc_text.startswith("Traceback (most recent call last):")
        assert 'raise RuntimeError("disk full")' in fail.exc_text
        assert fail.exc_text.endswith("RuntimeError: disk full")

    def test_overrun_is_skipped(self, hooked: Hooked, make_repo: RepoFactory) -> None:
        """An execution due while max_instances are running: run, skipped."""
        scheduler, repo = hooked(make_repo("memory", model=Record))
        release = threading.Event()

        def slow() -> None:
            release.wait(60)

        scheduler.add_job(slow, "interval", seconds=0.1, id="slow", max_instances=1)
        scheduler.start()
        wait_for(lambda: count(repo, "skipped") >= 2)
        release.set()
        wait_for(lambda: count(repo, "success") >= 1)
        scheduler.shutdown(wait=True)
        outcomes = [records[-1].action for records in by_run(repo, "slow").values()]
        assert outcomes.count("skipped") >= 2
        assert "success" in outcomes
        for records in by_run(repo, "slow").values():
            assert "run" == records[0].action
            assert 2 == len(records)
        skipped = repo.filter_by(action="skipped").first()
        assert "max_instances" in skipped.message

    def test_missed_run_time(self, hooked: Hooked, make_repo: RepoFactory) -> None:
        """A run time missed by more than misfire_grace_time: run, missed; no execution."""
        scheduler, repo = hooked(make_repo("memory", model=Record))
        called = threading.Event()
        past = datetime.now(timezone.utc) - timedelta(seconds=30)
        scheduler.add_job(called.set, "interval", hours=1, id="late", next_run_time=past,
                          misfire_grace_time=1)
        scheduler.start()
        wait_for(lambda: count(repo, "missed") >= 1)
        scheduler.shutdown(wait=True)
        assert not called.is_set()
        [(run_id, records)] = by_run(repo, "late").items()
        assert run_id_for("late", past) == run_id
        assert ["run", "missed"] == [r.action for r in records]
        assert records[-1].message.startswith("Run time missed by ")

    def test_fast_jobs_each_one_run(self, hooked: Hooked, make_repo: RepoFactory) -> None:
        """Fast jobs (EXECUTED often before SUBMITTED): exactly run then success each."""
        scheduler, repo = hooked(make_repo("memory", model=Record))
        scheduler.add_job(lambda: None, "interval", seconds=0.02, id="fast")
        scheduler.start()
        wait_for(lambda: count(repo, "success") >= 10)
        scheduler.shutdown(wait=True)
        for records in executed(by_run(repo, "fast")).values():
            assert ["run", "success"] == [r.action for r in records]


    def test_two_schedulers_one_logger(self, make_repo: RepoFactory) -> None:
        """Two hooked schedulers on one task logger: each execution is one run."""
        repo = make_repo("memory", model=Record)
        name = f"tests.aps.two.{uuid.uuid4().hex[:8]}"
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(RepoHandler(repo, errors="raise"))
        schedulers = [BackgroundScheduler(timezone="UTC") for _ in range(2)]
        try:
            for i, scheduler in enumerate(schedulers):
                install(scheduler, logger=name)
                scheduler.add_job(lambda: None, "interval", seconds=0.03, id=f"job{i}")
                scheduler.start()
            wait_for(lambda: count(repo, "success", "job0") >= 5
                     and count(repo, "success", "job1") >= 5)
        finally:
            for scheduler in schedulers:
                scheduler.shutdown(wait=True)
        for task in ("job0", "job1"):
            for records in executed(by_run(repo, task)).values():
                assert ["run", "success"] == [r.action for r in records]


class TestOtherExecutors:
    """The debug executor (always EXECUTED first) and the process pool."""

    def test_debug_executor(self, hooked: Hooked, make_repo: RepoFactory) -> None:
        """DebugExecutor dispatches EXECUTED inside the submission: still run, success."""
        scheduler, repo = hooked(make_repo("memory", model=Record),
                                 executors={"default": DebugExecutor()})
        scheduler.add_job(_aps_jobs.report, "interval", seconds=0.05, id="dbg")
        scheduler.start()
        wait_for(lambda: count(repo, "success") >= 3)
        scheduler.shutdown(wait=True)
        for records in executed(by_run(repo, "dbg")).values():
            assert ["run", "log", "log", "success"] == [r.action for r in records]

    def test_process_pool(
        self, hooked: Hooked, make_repo: RepoFactory, tmp_path: Any,
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """In a process pool: run/success/fail from events; the worker's lines carry the run."""
        url = store_url("sqlite", tmp_path, request, name="aps")
        repo = tasklog.open_repo(url, model=Record)
        monkeypatch.setenv("TASKLOG_APS_URL", url)
        scheduler, _ = hooked(repo, executors={"default": ProcessPoolExecutor(2)})
        [listener] = [cb for cb, _ in scheduler._listeners]
        monkeypatch.setenv("TASKLOG_APS_LOGGER", listener.logger.name)
        scheduler.add_job(_aps_jobs.report, "interval", seconds=0.3, id="proc")
        scheduler.add_job(_aps_jobs.broken, "interval", seconds=0.3, id="proc-broken")
        try:
            scheduler.start()
            wait_for(lambda: count(repo, "success", "proc") >= 1
                     and count(repo, "fail", "proc-broken") >= 1, timeout=120)
            scheduler.shutdown(wait=True)
            runs = {k: v for k, v in by_run(repo, "proc").items()
                    if v[-1].action == "success"}
            records = next(iter(runs.values()))
            assert ["run", "log", "log", "success"] == [r.action for r in records]
            child = records[1]
            assert child.message.startswith("report in pid")
            assert os.getpid() != child.process
            fails = [v for v in by_run(repo, "proc-broken").values() if v[-1].action == "fail"]
            assert 'raise RuntimeError("disk full")' in fails[0][-1].exc_text
        finally:
            repo.close()


class TestEventOrder:
    """The listener, fed APScheduler's events in every order."""

    @pytest.fixture(name="listener")
    def _listener(self, make_repo: RepoFactory) -> tuple[Any, Repository[Any]]:
        repo = make_repo("memory", model=Record)
        logger = logging.getLogger(f"tests.aps.order.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(RepoHandler(repo, errors="raise"))
        return install(BackgroundScheduler(timezone="UTC"), logger=logger), repo

    WHEN = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)

    def submitted(self, code: int = EVENT_JOB_SUBMITTED) -> JobSubmissionEvent:
        """A submission (or max-instances) event for job ``j`` at WHEN."""
        return JobSubmissionEvent(code, "j", "default", [self.WHEN])

    def executed(self, code: int = EVENT_JOB_EXECUTED, **kw: Any) -> JobExecutionEvent:
        """An execution event for job ``j`` at WHEN."""
        return JobExecutionEvent(code, "j", "default", self.WHEN, **kw)

    def test_executed_before_submitted(self, listener: tuple[Any, Repository[Any]]) -> None:
        """EXECUTED first: run is logged before success; the late SUBMITTED is ignored."""
        hook, repo = listener
        hook(self.executed())
        hook(self.submitted())
        run_id = "j@2024-03-04T12:00:00+00:00"
        assert [("run", run_id), ("success", run_id)] == [
            (r.action, r.run_id) for r in repo.filter_by().all()
        ]

    def test_submitted_then_error(self, listener: tuple[Any, Repository[Any]]) -> None:
        """The usual order: run, fail with a traceback made from the event's text."""
        hook, repo = listener
        hook(self.submitted())
        hook(self.executed(EVENT_JOB_ERROR, exception=ValueError("bad"),
                           traceback='  File "job.py", line 3, in job\n'))
        run, fail = repo.filter_by().all()
        assert ("run", "fail") == (run.action, fail.action)
        assert fail.exc_text == (
            'Traceback (most recent call last):\n  File "job.py", line 3, in job\nValueError: bad'
        )

    def test_max_instances_then_nothing(self, listener: tuple[Any, Repository[Any]]) -> None:
        """MAX_INSTANCES: run and skipped at once; no submission follows."""
        hook, repo = listener
        hook(self.submitted(EVENT_JOB_MAX_INSTANCES))
        assert ["run", "skipped"] == [r.action for r in repo.filter_by().all()]

    def test_listener_never_raises(self, listener: tuple[Any, Repository[Any]]) -> None:
        """A malformed event is reported on the tasklog logger, not raised into APScheduler."""
        hook, _ = listener
        hook(object())


_SIGTERM_SCRIPT = """
import threading, time, tasklog
from apscheduler.schedulers.background import BackgroundScheduler
from tasklog.contrib.apscheduler import install

tasklog.basic_config({url!r}, model="tasklog.TaskRunRecord")
started = threading.Event()

def export():
    started.set()
    time.sleep(120)

scheduler = BackgroundScheduler(timezone="UTC")
install(scheduler)
scheduler.add_job(export, "interval", hours=1, id="export",
                  next_run_time=__import__("datetime").datetime.now(
                      __import__("datetime").timezone.utc))
scheduler.start()
started.wait(60)
time.sleep(0.2)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_sigterm_ends_a_running_job_honestly(tmp_path: Any) -> None:
    """SIGTERM while a scheduled job runs: its run gets a terminate record, nothing after."""
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'aps.db'}"
    child = subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_SCRIPT.format(url=url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    assert "ready" == child.stdout.readline().strip(), child.stderr.read()  # type: ignore[union-attr]
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert -signal.SIGTERM == child.returncode, err
    repo = tasklog.open_repo(url)
    try:
        [(run_id, records)] = by_run(repo, "export").items()
    finally:
        repo.close()
    assert run_id.startswith("export@")
    assert ["run", "terminate"] == [r.action for r in records]
    assert "SIGTERM" in records[-1].message
