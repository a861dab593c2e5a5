"""The runs read model (``tasklog.history``) on every store: list_runs, get_run,
RunInfo, open/lost runs, crash candidates; and the registry (store_key, prune dry runs)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import RepoFactory, store_url
from pydantic import BaseModel

import tasklog
from tasklog import (
    ConfigError,
    MinimalRecord,
    Repository,
    RunInfo,
    TaskRunRecord,
    get_run,
    list_runs,
    mark_crashed,
    open_repo,
)
from tasklog.history import (
    crash_candidates,
    latest_per_task,
    lost_runs,
    newest_closed,
    open_runs,
    outcome_counts,
    recent_runs,
    run_figures,
)
from tasklog.repos import BACKENDS, backend_for, open_existing, same_store

HOST = socket.gethostname()
NOW = datetime.now(timezone.utc).timestamp()


def add_run(
    repo: Repository[Any],
    task: str,
    start: float,
    outcome: str | None,
    seconds: float = 1.0,
    *,
    run_id: str | None = None,
    **fields: Any,
) -> str:
    """A ``run`` record, a log line, and the closing record unless *outcome* is None."""
    run_id = run_id or uuid.uuid4().hex[:10]
    repo.add_many([
        {"task_name": task, "action": "run", "created": start, "run_id": run_id, **fields},
        {"task_name": task, "action": "log", "created": start + seconds / 2, "run_id": run_id,
         "message": f"working on {run_id}", **fields},
    ])
    if outcome is not None:
        repo.add({"task_name": task, "action": outcome, "created": start + seconds,
                  "run_id": run_id, **fields})
    return run_id


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(name="runs_repo")
def _runs_repo(make_repo: RepoFactory, store: str) -> Repository[Any]:
    return make_repo(store, model=TaskRunRecord)


class TestListRuns:
    """``tasklog.list_runs``: newest start first, filters, pages."""

    def test_newest_first_across_tasks(self, runs_repo: Repository[Any]) -> None:
        """Every task's runs, newest start first, with outcome and runtime."""
        a = add_run(runs_repo, "a", NOW - 300, "success", 2.0)
        b = add_run(runs_repo, "b", NOW - 200, "fail", 3.0)
        c = add_run(runs_repo, "a", NOW - 100, None)
        runs = list_runs(runs_repo)
        assert [c, b, a] == [r.run_id for r in runs]
        assert [None, "fail", "success"] == [r.outcome for r in runs]
        assert [None, timedelta(seconds=3), timedelta(seconds=2)] == [r.runtime for r in runs]
        assert runs[0].end is None
        assert runs[0].running
        assert datetime.fromtimestamp(NOW - 200, timezone.utc) == runs[1].start

    def test_filters(self, runs_repo: Repository[Any]) -> None:
        """task_name (one or several), outcome (incl. running), since/until."""
        ids = {
            "a-ok": add_run(runs_repo, "a", NOW - 3 * 86400, "success"),
            "b-fail": add_run(runs_repo, "b", NOW - 2 * 3600, "fail"),
            "c-open": add_run(runs_repo, "c", NOW - 3600, None),
            "a-crash": add_run(runs_repo, "a", NOW - 60, "crash"),
        }

        def names(**kwargs: Any) -> list[str]:
            found = {v: k for k, v in ids.items()}
            return [found[r.run_id] for r in list_runs(runs_repo, **kwargs)]

        assert ["a-crash", "a-ok"] == names(task_name="a")
        assert ["a-crash", "c-open", "b-fail"] == names(
            task_name=["a", "b", "c"], since=NOW - 86400
        )
        assert ["a-crash", "c-open"] == names(outcome=["running", "crash"])
        assert ["c-open"] == names(outcome="running")
        assert ["b-fail"] == names(outcome="fail")
        assert ["a-crash", "c-open", "b-fail"] == names(since=timedelta(days=1))
        assert ["b-fail", "a-ok"] == names(until=timedelta(minutes=90))
        assert ["c-open"] == names(
            since=datetime.fromtimestamp(NOW - 7200 + 1, timezone.utc), until=NOW - 120
        )
        assert [] == names(task_name="nope")
        assert ["a-crash"] == names(limit=1)

    def test_pages_stay_correct_while_runs_arrive(self, runs_repo: Repository[Any]) -> None:
        """``before=cursor`` continues after the last run shown, even with new runs added."""
        ids = [add_run(runs_repo, f"t{i % 3}", NOW - 1000 + i, "success") for i in range(7)]
        ids.reverse()  # newest first
        first = list_runs(runs_repo, limit=3)
        assert ids[:3] == [r.run_id for r in first]
        add_run(runs_repo, "t0", NOW, "fail")  # a new run arrives between pages
        second = list_runs(runs_repo, limit=3, before=first[-1].cursor)
        third = list_runs(runs_repo, limit=3, before=second[-1].cursor)
        assert ids[3:6] == [r.run_id for r in second]
        assert ids[6:] == [r.run_id for r in third]
        assert [] == list_runs(runs_repo, before=third[-1].cursor)

    def test_pages_with_equal_start_times(self, runs_repo: Repository[Any]) -> None:
        """Runs that started at the same instant are each shown once across pages."""
        ids = {add_run(runs_repo, "t", NOW - 50, "success") for _ in range(5)}
        seen: list[str] = []
        cursor = None
        while True:
            page = list_runs(runs_repo, limit=2, before=cursor)
            if not page:
                break
            seen += [r.run_id for r in page]
            cursor = page[-1].cursor
        assert sorted(ids) == sorted(seen)
        assert 5 == len(seen)

    def test_filtered_pages(self, runs_repo: Repository[Any]) -> None:
        """A filter and a cursor together: every failure once."""
        fails = [add_run(runs_repo, "t", NOW - 500 + i, "fail" if i % 3 else "success")
                 for i in range(12)]
        expected = [r for i, r in enumerate(fails) if i % 3][::-1]
        page1 = list_runs(runs_repo, outcome="fail", limit=5)
        page2 = list_runs(runs_repo, outcome="fail", limit=5, before=page1[-1].cursor)
        assert expected == [r.run_id for r in page1 + page2]

    def test_bad_arguments(self, runs_repo: Repository[Any]) -> None:
        """A bad cursor, limit or time is a ConfigError (a ValueError) naming it."""
        with pytest.raises(ValueError, match="cursor"):
            list_runs(runs_repo, before="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            list_runs(runs_repo, limit=-1)
        with pytest.raises(ValueError, match="since"):
            list_runs(runs_repo, since="yesterday")  # type: ignore[arg-type]

    def test_model_without_run_id(self, make_repo: RepoFactory, store: str) -> None:
        """Records without run_id form no runs: a clear error."""
        repo = make_repo(store, model=MinimalRecord)
        with pytest.raises(ConfigError, match="run_id"):
            list_runs(repo)


class TestRunInfo:
    """``get_run`` and what a RunInfo gives."""

    def test_get_run(self, runs_repo: Repository[Any]) -> None:
        """The run by id, with host and process; None for an unknown id."""
        run_id = add_run(runs_repo, "a", NOW - 10, "fail", 4.0, host=HOST, process=4242)
        run = get_run(runs_repo, run_id)
        assert run is not None
        assert ("a", "fail", timedelta(seconds=4), HOST, 4242) == (
            run.task_name, run.outcome, run.runtime, run.host, run.process
        )
        assert run == list_runs(runs_repo)[0]
        assert get_run(runs_repo, "nope") is None

    def test_records_and_output(self, runs_repo: Repository[Any]) -> None:
        """The run's records in order, and its output as Run.output formats it."""
        run_id = add_run(runs_repo, "a", NOW - 10, "success")
        add_run(runs_repo, "b", NOW - 5, "success")
        run = get_run(runs_repo, run_id)
        assert run is not None
        assert ["run", "log", "success"] == [r.action for r in run.records()]
        lines = run.output().splitlines()
        assert 3 == len(lines)
        assert f"[INFO] [a] working on {run_id}" in lines[1]

    def test_json_and_equality(self, runs_repo: Repository[Any]) -> None:
        """as_json has exactly the CLI's keys; the repository is not part of equality."""
        run_id = add_run(runs_repo, "a", 1000.0, "success", 2.5)
        run = get_run(runs_repo, run_id)
        assert run is not None
        assert {
            "run_id": run_id, "task_name": "a", "start": "1970-01-01T00:16:40+00:00",
            "end": "1970-01-01T00:16:42.500000+00:00", "runtime": 2.5, "outcome": "success",
        } == run.as_json()
        detached = RunInfo(run.run_id, run.task_name, run.start, run.end, run.runtime,
                           run.outcome, run.host, run.process, run.cursor)
        assert detached == run
        assert "repo" not in repr(run)
        with pytest.raises(LookupError):
            detached.records()


class TestOpenAndDeadRuns:
    """Open runs, lost runs (read-only) and crash candidates."""

    def test_open_and_lost(self, runs_repo: Repository[Any]) -> None:
        """Lost = open and its process gone on this host; nothing is written."""
        gone = add_run(runs_repo, "a", NOW - 30, None, host=HOST, process=dead_pid())
        alive = add_run(runs_repo, "a", NOW - 20, None, host=HOST, process=os.getpid())
        add_run(runs_repo, "a", NOW - 10, "success", host=HOST, process=dead_pid())
        count = len(runs_repo)
        assert [gone, alive] == [r.run_id for r in open_runs(runs_repo)]
        assert [gone] == [r.run_id for r in lost_runs(runs_repo)]
        assert count == len(runs_repo)

    def test_stale_after(self, runs_repo: Repository[Any]) -> None:
        """stale_after: the newest record of the run is older than that."""
        quiet = add_run(runs_repo, "a", NOW - 7200, None, 60.0, host="elsewhere")
        busy = add_run(runs_repo, "a", NOW - 7200, None, 60.0, host="elsewhere")
        runs_repo.add({"task_name": "a", "action": "heartbeat", "created": NOW - 10,
                       "run_id": busy, "host": "elsewhere"})
        assert [] == crash_candidates(runs_repo)
        found = crash_candidates(runs_repo, stale_after=timedelta(minutes=30))
        assert [quiet] == [c.run.run_id for c in found]
        assert "nothing was logged since" in found[0].reason
        assert 5 == len(runs_repo)  # candidates write nothing
        assert [quiet] == mark_crashed(runs_repo, stale_after=timedelta(minutes=30))
        run = get_run(runs_repo, quiet)
        assert run is not None
        assert "crash" == run.outcome
        assert timedelta(seconds=30) == run.runtime  # up to its newest record
        assert [] == mark_crashed(runs_repo, stale_after=timedelta(minutes=30))

    def test_older_than_and_gone(self, runs_repo: Repository[Any]) -> None:
        """older_than marks old open runs elsewhere; a gone process needs no age."""
        old = add_run(runs_repo, "a", NOW - 7200, None, host="elsewhere")
        dead = add_run(runs_repo, "b", NOW - 5, None, host=HOST, process=dead_pid())
        add_run(runs_repo, "c", NOW - 7200, None, host=HOST, process=os.getpid())
        assert [old, dead] == mark_crashed(runs_repo, older_than=timedelta(hours=1))

    def test_latest_per_task(self, runs_repo: Repository[Any]) -> None:
        """The newest record of each task, by task name."""
        add_run(runs_repo, "b", NOW - 30, "success")
        add_run(runs_repo, "a", NOW - 20, "fail")
        add_run(runs_repo, "b", NOW - 10, None)
        latest = latest_per_task(runs_repo)
        assert [("a", "fail"), ("b", "log")] == [(r.task_name, r.action) for r in latest]

    def test_recent_runs_of_each_task(self, runs_repo: Repository[Any]) -> None:
        """The newest n runs of each task, as list_runs gives them per task."""
        for i in range(5):
            add_run(runs_repo, "a", NOW - 100 + i, "success" if i % 2 else None)
        add_run(runs_repo, "b", NOW - 50, "fail")
        found = recent_runs(runs_repo, ["a", "b", "none"], 3)
        assert {
            "a": list_runs(runs_repo, task_name="a", limit=3),
            "b": list_runs(runs_repo, task_name="b", limit=3),
            "none": [],
        } == found
        assert [NOW - 96, NOW - 97, NOW - 98] == pytest.approx(
            [r.start.timestamp() for r in found["a"]]
        )
        assert {"a": []} == recent_runs(runs_repo, ["a"], 0)

    def test_outcome_counts_per_bucket(self, runs_repo: Repository[Any]) -> None:
        """Runs counted by the bucket of their start and their outcome."""
        add_run(runs_repo, "a", NOW - 3500, "success")  # before the origin: left out
        add_run(runs_repo, "a", NOW - 3000, "success")
        add_run(runs_repo, "b", NOW - 2990, "fail")
        add_run(runs_repo, "a", NOW - 1000, None)
        add_run(runs_repo, "a", NOW - 999, "inaction")
        origin = NOW - 3000
        assert {0: {"success": 1, "fail": 1}, 2: {"running": 1, "inaction": 1}} == (
            outcome_counts(runs_repo, origin=origin, step=1000)
        )
        assert {0: {"success": 1}, 2: {"running": 1, "inaction": 1}} == (
            outcome_counts(runs_repo, origin=origin, step=1000, task_name="a")
        )

    def test_newest_closed_per_task(self, runs_repo: Repository[Any]) -> None:
        """Per task, the run that ended last (of these outcomes)."""
        early = add_run(runs_repo, "a", NOW - 300, "success", seconds=250)  # ends NOW - 50
        late_start = add_run(runs_repo, "a", NOW - 100, "fail", seconds=10)  # ends NOW - 90
        add_run(runs_repo, "a", NOW - 20, None)
        b = add_run(runs_repo, "b", NOW - 60, "success")
        found = newest_closed(runs_repo, ["a", "b", "c"])
        assert {"a": early, "b": b} == {task: run.run_id for task, run in found.items()}
        failed = newest_closed(runs_repo, ["a", "b"], ["fail", "crash"])
        assert {"a": late_start} == {task: run.run_id for task, run in failed.items()}
        assert found["a"] == get_run(runs_repo, early)

    def test_figures_without_the_total(self, runs_repo: Repository[Any]) -> None:
        """``run_figures(with_total=False)``: the same rows per task; the total keeps
        its counts (its percentiles may be left out)."""
        for i in range(6):
            add_run(runs_repo, "a" if i % 2 else "b", NOW - 300 + i * 10, "success", seconds=i + 1)
        add_run(runs_repo, "b", NOW - 20, "fail", seconds=30)
        for since in (None, NOW - 250):
            full_tasks, full_total = run_figures(runs_repo, since=since)
            tasks, total = run_figures(runs_repo, since=since, with_total=False)
            assert tasks == full_tasks
            assert [r["task_name"] for r in tasks] == ["a", "b"]
            counted = ("runs", "successes", "failures", "other", "finished", "mean_runtime")
            assert {k: total[k] for k in counted} == {k: full_total[k] for k in counted}
            assert full_total["p95_runtime"] == 30.0

    def test_latest_per_task_without_actions(self, make_repo: RepoFactory, store: str) -> None:
        """A record without an action, or a model without the field, is a task's
        newest record all the same."""

        class MaybeAction(BaseModel):
            task_name: str
            action: str | None = None
            created: float

        class NoAction(BaseModel):
            task_name: str
            created: float

        loose = make_repo(store, model=MaybeAction)
        loose.add_many([
            {"task_name": "a", "action": "run", "created": 1.0},
            {"task_name": "a", "action": None, "created": 2.0},
            {"task_name": "b", "action": None, "created": 3.0},
            {"task_name": "b", "action": "log", "created": 4.0},
            {"task_name": "c", "action": "x", "created": 5.0},
        ])
        assert [("a", None, 2.0), ("b", "log", 4.0), ("c", "x", 5.0)] == [
            (r.task_name, r.action, r.created) for r in latest_per_task(loose)
        ]
        bare = make_repo(store, model=NoAction)
        bare.add_many([{"task_name": n, "created": float(i)} for i, n in enumerate("abab")])
        assert [("a", 2.0), ("b", 3.0)] == [
            (r.task_name, r.created) for r in latest_per_task(bare)
        ]


class TestRegistry:
    """One registry opens every URL; store_key names the data however spelled."""

    def test_every_store_from_its_url(
        self, store: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """open_repo and open_existing open the same store, by the same backend."""
        url = store_url(store, tmp_path, request)
        repo = open_repo(url, model=TaskRunRecord)
        try:
            repo.add({"task_name": "a", "action": "run", "created": 1.0, "run_id": "r"})
            assert backend_for(url).name in {b.name for b in BACKENDS}
            if store != "memory":
                again = open_existing(url)
                try:
                    assert same_store(repo, again)
                    assert 1 == len(again)
                finally:
                    again.close()
            assert not same_store(repo, open_repo("memory://"))
        finally:
            if store == "postgresql":
                repo.drop()  # type: ignore[attr-defined]
            repo.close()

    def test_unknown_scheme(self) -> None:
        """An unknown scheme names the ones the registry knows."""
        with pytest.raises(ValueError, match="memory://"):
            open_repo("nope://x")
        with pytest.raises(ValueError, match="not a repository URL"):
            open_repo("just-a-name")

    def test_csv_spellings(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path, an absolute one and a symlink are the same CSV store."""
        monkeypatch.chdir(tmp_path)
        a = open_repo("c.csv")
        b = open_repo(f"csv://{tmp_path / 'c.csv'}")
        (tmp_path / "link.csv").symlink_to(tmp_path / "c.csv")
        c = open_repo(str(tmp_path / "link.csv"))
        assert same_store(a, b)
        assert same_store(a, c)
        assert not same_store(a, open_repo("d.csv"))

    def test_sqlite_spellings(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """sqlite:///c.db, an absolute path and a symlink are the same table; another
        table of the same file is not."""
        monkeypatch.chdir(tmp_path)
        repos = [open_repo("sqlite:///c.db"), open_repo(f"sqlite:///{tmp_path}/c.db")]
        (tmp_path / "l.db").symlink_to(tmp_path / "c.db")
        repos.append(open_repo(f"sqlite:///{tmp_path}/l.db?table=task_log"))
        other = open_repo("sqlite:///c.db?table=other")
        try:
            assert same_store(repos[0], repos[1])
            assert same_store(repos[0], repos[2])
            assert not same_store(repos[0], other)
        finally:
            for repo in [*repos, other]:
                repo.close()

    def test_store_key_is_required(self) -> None:
        """A store that does not say what identifies it cannot be made."""

        class Incomplete(tasklog.MemoryRepo[Any]):
            store_key = tasklog.Repository.store_key  # type: ignore[assignment]

        with pytest.raises(TypeError, match="store_key"):
            Incomplete()

    def test_prune_dry_run(self, runs_repo: Repository[Any]) -> None:
        """prune(dry_run=True) counts what prune deletes, and deletes nothing."""
        for i in range(4):
            add_run(runs_repo, "a", 1000.0 + i * 10, "success")
        add_run(runs_repo, "b", 5000.0, "success")
        before = len(runs_repo)
        would = runs_repo.prune(keep_runs=2, dry_run=True)
        assert 6 == would
        assert before == len(runs_repo)
        assert 6 == runs_repo.prune(older_than=1015.0, dry_run=True)
        assert would == runs_repo.prune(keep_runs=2)
        assert before - would == len(runs_repo)
