"""``stats`` and ``mark_crashed`` on every store, and a crash found after a child is killed."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import STORES, RepoFactory, drop_redis_key

from tasklog import (
    MinimalRecord,
    MinimalRunRecord,
    Repository,
    SQLRepo,
    Stats,
    TaskAdapter,
    TaskRunRecord,
    TaskStats,
    mark_crashed,
    open_repo,
    stats,
)

HOST = socket.gethostname()


def add_run(
    repo: Repository[Any],
    task: str,
    start: float,
    outcome: str | None,
    seconds: float = 0.0,
    *,
    run_id: str | None = None,
    runtime: timedelta | None = None,
    **fields: Any,
) -> str:
    """Add a run's ``run`` record (and its closing record, unless *outcome* is None)."""
    run_id = run_id or uuid.uuid4().hex
    repo.add({"task_name": task, "action": "run", "created": start, "run_id": run_id, **fields})
    if outcome is not None:
        closing = {"task_name": task, "action": outcome, "created": start + seconds,
                   "run_id": run_id, **fields}
        if runtime is not None:
            closing["runtime"] = runtime
        repo.add(closing)
    return run_id


def empty(task_name: str | None = None) -> TaskStats:
    """The figures of no runs at all."""
    return TaskStats(task_name, 0, 0, 0, 0, None, None, None, None, None)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class TestStats:
    """Figures per task and in total."""

    def test_empty(self, repo: Repository[Any]) -> None:
        """No runs: no tasks, a total of zeros and Nones."""
        assert Stats({}, empty()) == stats(repo)

    def test_figures(self, repo: Repository[Any]) -> None:
        """Counts, success rate and nearest-rank runtimes, per task and in total."""
        add_run(repo, "a", 1000.0, "success", 1.0)
        add_run(repo, "a", 1010.0, "fail", 2.0)
        add_run(repo, "a", 1020.0, "crash", 4.0)
        add_run(repo, "a", 1030.0, "inaction", 0.5)
        add_run(repo, "a", 1040.0, "terminate", 8.0)
        add_run(repo, "a", 1050.0, None)  # still running
        add_run(repo, "b", 1060.0, "success", 3.0)
        repo.add({"task_name": "a", "action": "log", "created": 1001.0})  # no run: ignored
        expected = Stats(
            tasks={
                "a": TaskStats("a", 6, 1, 2, 2, 1 / 3, 3.1, 2.0, 8.0, 8.0),  # 1 / (1 + 2)
                "b": TaskStats("b", 1, 1, 0, 0, 1.0, 3.0, 3.0, 3.0, 3.0),
            },
            total=TaskStats(None, 7, 2, 2, 2, 2 / 4, 3.083333, 2.0, 8.0, 8.0),
        )
        assert expected == stats(repo)

    def test_task_name(self, repo: Repository[Any]) -> None:
        """task_name keeps one task; the total covers only it."""
        add_run(repo, "a", 1000.0, "success", 1.0)
        add_run(repo, "b", 1000.0, "fail", 2.0)
        result = stats(repo, task_name="b")
        assert ["b"] == list(result.tasks)
        assert TaskStats(None, 1, 0, 1, 0, 0.0, 2.0, 2.0, 2.0, 2.0) == result.total

    def test_since(self, repo: Repository[Any]) -> None:
        """since (timestamp, datetime or age) keeps runs that started since then."""
        now = time.time()
        add_run(repo, "a", now - 7200, "fail", 1.0)
        add_run(repo, "a", now - 60, "success", 1.0)
        assert 1 == stats(repo, since=now - 3600).total.runs
        assert 1 == stats(repo, since=timedelta(hours=1)).total.runs
        assert 2 == stats(repo, since=datetime.fromtimestamp(now - 9000, timezone.utc)).total.runs
        assert 1.0 == stats(repo, since=timedelta(hours=1)).total.success_rate

    def test_first_closing_record_is_the_outcome(self, repo: Repository[Any]) -> None:
        """A run closed twice (crash, then a late success) counts its first outcome."""
        run_id = add_run(repo, "a", 1000.0, "crash", 5.0)
        repo.add({"task_name": "a", "action": "success", "created": 1009.0, "run_id": run_id})
        assert TaskStats("a", 1, 0, 1, 0, 0.0, 5.0, 5.0, 5.0, 5.0) == stats(repo).tasks["a"]

    def test_closing_without_start_is_not_a_run(self, repo: Repository[Any]) -> None:
        """A closing record whose run record is gone (pruned) is not counted."""
        repo.add({"task_name": "a", "action": "success", "created": 1.0, "run_id": "x"})
        assert Stats({}, empty()) == stats(repo)

    def test_model_without_run_id(self, make_repo: RepoFactory, store: str) -> None:
        """A model without run_id cannot describe runs: ValueError naming the field."""
        repo = make_repo(store, model=MinimalRecord)
        with pytest.raises(ValueError, match="run_id"):
            stats(repo)
        with pytest.raises(ValueError, match="run_id"):
            mark_crashed(repo)

    def test_runtime_field_wins(self, make_repo: RepoFactory, store: str) -> None:
        """The closing record's runtime is used when set, else the created difference."""
        repo = make_repo(store, model=TaskRunRecord)
        add_run(repo, "a", 1000.0, "success", 10.0, runtime=timedelta(seconds=1.5))
        add_run(repo, "a", 2000.0, "success", 4.0)
        assert TaskStats("a", 2, 2, 0, 0, 1.0, 2.75, 1.5, 4.0, 4.0) == stats(repo).tasks["a"]

    def test_from_logged_runs(self, make_repo: RepoFactory, store: str) -> None:
        """Runs logged through a task logger are counted by outcome."""
        repo = make_repo(store, model=TaskRunRecord)
        logger = logging.getLogger(f"tests.stats.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        adapter = TaskAdapter(logger, "job", ignore_warnings=True)
        handler = adapter.set_repo(repo)
        for outcome in ("ok", "ok", "fail"):
            try:
                with adapter.run():
                    if outcome == "fail":
                        raise ValueError(outcome)
            except ValueError:
                pass
        result = stats(repo).tasks["job"]
        handler.close()
        assert (3, 2, 1, 2 / 3) == (
            result.runs, result.successes, result.failures, result.success_rate
        )

    def test_as_json(self, repo: Repository[Any]) -> None:
        """as_json() has the CLI's shape: tasks as a list, total without task_name."""
        add_run(repo, "a", 1000.0, "success", 1.0)
        expected_total = {
            "runs": 1, "successes": 1, "failures": 0, "other": 0, "success_rate": 1.0,
            "mean_runtime": 1.0, "p50_runtime": 1.0, "p95_runtime": 1.0, "max_runtime": 1.0,
        }
        assert {
            "tasks": [{"task_name": "a", **expected_total}],
            "total": expected_total,
        } == stats(repo).as_json()


class TestSameFiguresEverywhere:
    """Every store gives identical figures for the same records."""

    def test_identical(self, make_repo: RepoFactory) -> None:
        """A random history of 300 runs gives the same Stats on memory, CSV, SQLite, PostgreSQL."""
        rng = random.Random(7)
        records: list[dict[str, Any]] = []
        outcomes = ["success"] * 6 + ["fail", "crash", "inaction", "terminate", None]
        for n in range(300):
            task = rng.choice(["backup", "report", "sync"])
            start = 1_700_000_000 + n * 37.123456 + rng.random()
            run_id = f"r{n}"
            records.append({"task_name": task, "action": "run", "created": start,
                            "run_id": run_id})
            records.append({"task_name": task, "action": "log", "created": start + 0.5,
                            "run_id": run_id})
            outcome = rng.choice(outcomes)
            if outcome is not None:
                records.append({"task_name": task, "action": outcome,
                                "created": start + rng.expovariate(0.2), "run_id": run_id})
        results = {}
        for store in STORES:
            repo = make_repo(store)
            repo.add_many(records)
            results[store] = (stats(repo), stats(repo, task_name="sync", since=1_700_005_000))
        assert 300 == results["memory"][0].total.runs
        assert dict.fromkeys(STORES, results["memory"]) == results

    @pytest.mark.parametrize("store", ["sqlite", "postgresql"])
    def test_sql_runs_in_the_database(
        self, make_repo: RepoFactory, store: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On SQLRepo, stats never streams records into Python."""
        repo = make_repo(store)
        assert isinstance(repo, SQLRepo)
        add_run(repo, "a", 1000.0, "success", 2.0)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("select_rows must not be used by stats on SQLRepo")

        monkeypatch.setattr(repo, "select_rows", refuse)
        assert TaskStats("a", 1, 1, 0, 0, 1.0, 2.0, 2.0, 2.0, 2.0) == stats(repo).tasks["a"]


class TestMarkCrashed:
    """mark_crashed logs crash for dead runs, never for live ones, and only once."""

    @pytest.fixture(name="run_repo")
    def _run_repo(self, make_repo: RepoFactory, store: str) -> Repository[Any]:
        """A fresh TaskRunRecord repo of each store."""
        return make_repo(store, model=TaskRunRecord)

    def test_dead_process_is_marked_once(self, run_repo: Repository[Any]) -> None:
        """A run whose process is gone on this host gets one crash record."""
        pid = dead_pid()
        run_id = add_run(run_repo, "a", time.time(), None, host=HOST, process=pid)
        run_repo.add({"task_name": "a", "action": "log", "created": time.time(),
                      "run_id": run_id, "host": HOST, "process": pid})
        assert [run_id] == mark_crashed(run_repo)
        assert [] == mark_crashed(run_repo)
        crash = run_repo.filter_by(action="crash").all()
        assert [(run_id, "a", HOST, pid)] == [
            (c.run_id, c.task_name, c.host, c.process) for c in crash
        ]
        assert f"its process {pid} on {HOST} is gone" in crash[0].message
        assert crash[0].end - crash[0].start == crash[0].runtime
        assert 1 == stats(run_repo).tasks["a"].failures

    def test_live_process_is_never_marked(self, run_repo: Repository[Any]) -> None:
        """A run of a live process on this host is not marked, however old."""
        add_run(run_repo, "a", 1.0, None, host=HOST, process=os.getpid())
        assert [] == mark_crashed(run_repo, older_than=timedelta(0))
        assert 0 == run_repo.filter_by(action="crash").count()

    def test_finished_runs_are_not_marked(self, run_repo: Repository[Any]) -> None:
        """A run with a closing record is not open, even if its process is gone."""
        add_run(run_repo, "a", 1.0, "success", 1.0, host=HOST, process=dead_pid())
        assert [] == mark_crashed(run_repo, older_than=timedelta(0))

    def test_other_host_needs_older_than(self, run_repo: Repository[Any]) -> None:
        """A run on another host is marked only when older than older_than."""
        now = time.time()
        old = add_run(run_repo, "a", now - 7200, None, host="elsewhere", process=1)
        add_run(run_repo, "a", now - 60, None, host="elsewhere", process=1)
        assert [] == mark_crashed(run_repo)
        assert [old] == mark_crashed(run_repo, older_than=timedelta(hours=1))

    def test_model_without_process(self, make_repo: RepoFactory, store: str) -> None:
        """With MinimalRunRecord (no host/process), only older_than can mark a run."""
        repo = make_repo(store, model=MinimalRunRecord)
        run_id = add_run(repo, "a", 1000.0, None)
        assert [] == mark_crashed(repo)
        assert [run_id] == mark_crashed(repo, older_than=2000.0)
        assert ["run", "crash"] == [r.action for r in repo.filter_by(run_id=run_id)]


CHILD = textwrap.dedent(
    """
    import sys, time
    import tasklog

    handler = tasklog.basic_config(sys.argv[1], model="tasklog.TaskRunRecord")
    task_logger = tasklog.get_task_logger(sys.argv[2])
    with task_logger.run() as run:
        run.info("working")
        handler.flush()
        print(run.run_id, flush=True)
        time.sleep(120)
    """
)


@pytest.mark.parametrize("store", ["sqlite", "csv", "redis"])
def test_crash_of_a_killed_child(store: str, tmp_path: Path,
                                 request: pytest.FixtureRequest) -> None:
    """A child killed mid-run is marked crashed; a child still running is not."""
    if store == "redis":
        key = f"crash_{uuid.uuid4().hex[:12]}"
        url = f"{request.getfixturevalue('redis_url')}?key={key}"
    else:
        url = (f"sqlite:///{tmp_path / 'runs.db'}" if store == "sqlite"
               else f"csv://{tmp_path / 'runs.csv'}")
    repo = open_repo(url, model=TaskRunRecord)
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, url, task],
                         stdout=subprocess.PIPE, text=True)
        for task in ("killed", "alive")
    ]
    try:
        assert children[0].stdout is not None
        assert children[1].stdout is not None
        killed_run = children[0].stdout.readline().strip()
        alive_run = children[1].stdout.readline().strip()
        os.kill(children[0].pid, signal.SIGKILL)
        children[0].wait()
        assert [killed_run] == mark_crashed(repo)
        assert [] == mark_crashed(repo)
        assert ["run", "log", "crash"] == [r.action for r in repo.filter_by(run_id=killed_run)]
        assert ["run", "log"] == [r.action for r in repo.filter_by(run_id=alive_run)]
    finally:
        for child in children:
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
        if store == "redis":
            drop_redis_key(repo)
        repo.close()
