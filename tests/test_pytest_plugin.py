"""The pytest plugin (``task_records``, ``--tasklog-repo``) and tasklog.testing's assertions."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

JOBS = '''
import logging
import tasklog

task_logger = tasklog.get_task_logger("nightly", ignore_warnings=True)
report_logger = tasklog.get_task_logger("report", ignore_warnings=True)


@task_logger.task
def nightly(fail=False):
    tasklog.current_run().info("crunching")
    logging.getLogger("mylib.db").warning("slow query")
    if fail:
        raise ZeroDivisionError("no rows to average")
    return 42


@report_logger.task()
def report():
    return "sent"
'''


@pytest.fixture(name="suite")
def _suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with a jobs module; the plugin comes from the entry point."""
    pytester.makepyfile(jobs=JOBS)
    return pytester


class TestFixture:
    """``task_records``: a fresh in-memory store per test, read back as runs."""

    def test_records_runs_last_run(self, suite: pytest.Pytester) -> None:
        """The fixture sees runs, records, captured lines, and is fresh per test."""
        suite.makepyfile(test_jobs='''
            import jobs
            from tasklog.testing import assert_ran, assert_no_failures

            def test_one(task_records):
                assert 42 == jobs.nightly()
                jobs.report()
                run = task_records.last_run("nightly")
                assert "success" == run.outcome
                assert ["run", "log", "log", "success"] == [r.action for r in run.records()]
                assert "slow query" in run.output()
                assert ["nightly", "report"] == [r.task_name for r in task_records.runs()]
                assert 1 == len(task_records.runs("report"))
                assert 2 == task_records.filter_by(action="success").count()
                assert 6 == len(task_records.records)
                assert_ran("nightly", times=1)
                assert_no_failures()
                task_records.clear()
                assert [] == task_records.records

            def test_two_is_fresh(task_records):
                assert [] == task_records.records
                jobs.report()
                assert ["run", "success"] == [r.action for r in task_records.records]
        ''')
        result = suite.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(passed=2)

    def test_last_run_of_unknown_task(self, suite: pytest.Pytester) -> None:
        """last_run of a task that never ran: an assertion naming the tasks that did."""
        suite.makepyfile(test_jobs='''
            import jobs

            def test_it(task_records):
                jobs.report()
                task_records.last_run("nope")
        ''')
        result = suite.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*Task 'nope' has no run; tasks that ran: [[]'report'[]]*"])

    def test_logger_restored(self, suite: pytest.Pytester) -> None:
        """After the test, the task logger's own handlers and level are back."""
        suite.makepyfile(test_jobs='''
            import logging
            import tasklog

            def test_configured_before(task_records):
                pass

            def test_after():
                handlers = logging.getLogger("tasklog.task").handlers
                assert [] == [h for h in handlers if hasattr(h, "repo")]
        ''')
        suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


class TestAssertions:
    """assert_ran / assert_no_failures: failure messages show output and tracebacks."""

    def test_assert_ran_shows_failed_run(self, suite: pytest.Pytester) -> None:
        """A failed run where success was expected: its lines and traceback are shown."""
        suite.makepyfile(test_jobs='''
            import pytest
            import jobs
            from tasklog.testing import assert_ran

            def test_it(task_records):
                with pytest.raises(ZeroDivisionError):
                    jobs.nightly(fail=True)
                assert_ran("nightly")
        ''')
        result = suite.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            "*Expected at least one run of task 'nightly' with outcome 'success'; "
            "found 0 (1 runs: 1 fail)*",
            "*--- run * of 'nightly': fail",
            "*[[]INFO[]] [[]nightly[]] crunching",
            "*[[]WARNING[]] [[]nightly[]] slow query",
            "*[[]ERROR[]] [[]nightly[]] Run failed after *ZeroDivisionError: no rows to average",
            "Traceback (most recent call last):",
            '*raise ZeroDivisionError("no rows to average")',
            "ZeroDivisionError: no rows to average",
        ])

    def test_assert_ran_times(self, suite: pytest.Pytester) -> None:
        """times= counts the runs with that outcome exactly; outcome=None any outcome."""
        suite.makepyfile(test_jobs='''
            import pytest
            import jobs
            from tasklog.testing import assert_ran

            def test_counts(task_records):
                jobs.nightly()
                jobs.nightly()
                with pytest.raises(ZeroDivisionError):
                    jobs.nightly(fail=True)
                assert 2 == len(assert_ran("nightly", times=2))
                assert_ran("nightly", "fail", times=1)
                assert_ran("nightly", None, times=3)

            def test_wrong_count(task_records):
                jobs.nightly()
                assert_ran("nightly", times=2)

            def test_never_ran(task_records):
                assert_ran("report")
        ''')
        result = suite.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines([
            "*Expected exactly 2 run of task 'nightly' with outcome 'success'; found 1*",
        ])
        result.stdout.fnmatch_lines(["*The task did not run at all.*"])

    def test_assert_no_failures(self, suite: pytest.Pytester) -> None:
        """A failed run among good ones: only the failed run is shown, with its traceback."""
        suite.makepyfile(test_jobs='''
            import pytest
            import jobs
            from tasklog.testing import assert_no_failures

            def test_it(task_records):
                jobs.report()
                with pytest.raises(ZeroDivisionError):
                    jobs.nightly(fail=True)
                assert_no_failures("report")
                assert_no_failures()
        ''')
        result = suite.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            "*1 of 2 runs of the tasks failed.*",
            "*--- run * of 'nightly': fail",
            "ZeroDivisionError: no rows to average",
        ])
        assert "of 'report'" not in result.stdout.str()

    def test_without_fixture_uses_configured_store(self, suite: pytest.Pytester) -> None:
        """Without the fixture, the assertions read the task logger's own store."""
        suite.makepyfile(test_jobs='''
            import tasklog
            import jobs
            from tasklog.testing import assert_ran

            def test_it():
                tasklog.basic_config("memory://", model=tasklog.TaskRunRecord)
                jobs.report()
                assert_ran("report", times=1)
        ''')
        suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


class TestRealStore:
    """``--tasklog-repo URL``: the same fixture on SQLite, PostgreSQL, CSV and Redis."""

    @pytest.mark.parametrize("kind", ["sqlite", "postgresql", "csv", "redis"])
    def test_same_tests_on_a_real_store(
        self, kind: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """The fixture's tests pass on the store; its tables/files are removed afterwards.

        pytest runs in a child process (not pytester, whose snapshot of
        sys.modules would unload the store's drivers imported during the test).
        """
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'runs.db'}"
        elif kind == "postgresql":
            url = request.getfixturevalue("postgres_url")
        elif kind == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            url = f"csv://{tmp_path / 'runs.csv'}"
        project = tmp_path / "project"
        project.mkdir()
        (project / "jobs.py").write_text(JOBS)
        (project / "test_jobs.py").write_text(textwrap.dedent(f'''
            import pytest
            import jobs
            from tasklog.testing import assert_ran

            def test_store(task_records):
                assert {kind!r} in type(task_records.repo).__name__.lower() or \\
                    {kind!r} in repr(task_records.repo).lower()
                jobs.nightly()
                with pytest.raises(ZeroDivisionError):
                    jobs.nightly(fail=True)
                assert_ran("nightly", times=1)
                assert_ran("nightly", "fail", times=1)
                run = task_records.last_run("nightly")
                assert "ZeroDivisionError: no rows to average" in run.output()

            def test_fresh(task_records):
                assert [] == task_records.records
        '''))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
             str(project), "--tasklog-repo", url, str(project / "test_jobs.py")],
            cwd=project, capture_output=True, text=True, check=False,
        )
        assert 0 == result.returncode, result.stdout + result.stderr
        assert "2 passed" in result.stdout
        if kind == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as db:
                tables = [row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]
            assert [] == [t for t in tables if t.startswith("tasklog_test_")]
        if kind == "csv":
            assert [] == list(tmp_path.glob("runs-tasklog_test_*.csv"))


def test_plugin_imports_no_tasklog() -> None:
    """Loading the plugin (as pytest does at start-up) imports no part of tasklog."""
    code = textwrap.dedent('''
        import sys
        import pytest_tasklog
        heavy = [m for m in sys.modules if m == "tasklog" or m.startswith(("tasklog.",
                 "pydantic", "sqlalchemy"))]
        print(heavy)
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "[]" == out.strip()
