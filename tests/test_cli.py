"""The ``tasklog`` command (SPEC §6): every command, on SQLite and CSV (and memory where it
makes sense), through typer's test runner; plus the installed console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_redis_key
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from tasklog import MinimalRecord, MinimalRunRecord, SQLRepo, TaskRunRecord, open_repo
from tasklog.cli import app, format_record, parse_duration, resolve_repo
from tasklog.cli.render import rate_text

BASE = 1_709_553_600.0
"""2024-03-04 12:00:00 UTC."""

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "job.py", line 3, in main\n'
    "    fetch()\n"
    "ValueError: boom"
)

FILE_STORES = ("sqlite", "csv")
STORES = ("sqlite", "csv", "postgresql", "redis")


def _at(offset: float) -> datetime:
    return datetime.fromtimestamp(BASE + offset, tz=timezone.utc)


def _record(
    task: str, action: str, offset: float, run_id: str | None, message: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "task_name": task,
        "action": action,
        "created": BASE + offset,
        "run_id": run_id,
        "message": message,
        **extra,
    }


def _closing(
    task: str, action: str, start: float, end: float, run_id: str, message: str, **extra: Any
) -> dict[str, Any]:
    return _record(
        task,
        action,
        end,
        run_id,
        message,
        start=_at(start),
        end=_at(end),
        runtime=timedelta(seconds=end - start),
        **extra,
    )


HISTORY = [
    _record("alpha", "run", 0, "r1-aaaa", "Run started", start=_at(0)),
    _record("alpha", "log", 1, "r1-aaaa", "working"),
    _closing("alpha", "success", 0, 2, "r1-aaaa", "Run succeeded"),
    _record("alpha", "run", 100, "r2-bbbb", "Run started", start=_at(100)),
    _closing("alpha", "fail", 100, 103.5, "r2-bbbb", "Run failed: ValueError: boom",
             exc_text=TRACEBACK),
    _record("beta", "run", 200, "r3-cccc", "Run started", start=_at(200)),
    _closing("beta", "inaction", 200, 200.5, "r3-cccc", "Run had nothing to do"),
    _record("gamma", "run", 300, "r4-dddd", "Run started", start=_at(300)),
]
"""alpha: a success and a failure; beta: an inaction; gamma: still running."""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty directory, without $TASKLOG_REPO."""
    monkeypatch.delenv("TASKLOG_REPO", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(name="runner")
def _runner() -> CliRunner:
    """typer's test runner."""
    return CliRunner()


def url_of(store: str, tmp_path: Path, name: str = "history") -> str:
    """A repository URL of a file store (or memory) in *tmp_path*."""
    if store == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.db')}"
    if store == "csv":
        return f"csv://{tmp_path / (name + '.csv')}"
    return "memory://"


def write_history(url: str, records: list[dict[str, Any]] | None = None,
                  model: type[BaseModel] = TaskRunRecord) -> None:
    """Store *records* (default :data:`HISTORY`) at *url*."""
    repo = open_repo(url, model=model)
    try:
        repo.add_many(HISTORY if records is None else records)
    finally:
        repo.close()


@pytest.fixture(name="store", params=STORES)
def _store(request: pytest.FixtureRequest) -> str:
    """Each persistent store in turn."""
    return str(request.param)


@pytest.fixture(name="make_url")
def _make_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """A factory ``make_url(store, name)`` of fresh store URLs (PostgreSQL tables and
    Redis keys dropped)."""
    tables: list[str] = []
    keys: list[str] = []

    def make(store: str, name: str = "history") -> str:
        if store == "redis":
            key = f"cli_{uuid.uuid4().hex[:12]}"
            keys.append(key)
            return f"{request.getfixturevalue('redis_url')}?key={key}"
        if store != "postgresql":
            return url_of(store, tmp_path, name)
        table = f"cli_{uuid.uuid4().hex[:12]}"
        tables.append(table)
        return f"{request.getfixturevalue('postgres_url')}?table={table}"

    yield make
    if keys:
        from tasklog.repos.redis_store import RedisRepo

        for key in keys:
            repo: RedisRepo[Any] = RedisRepo(request.getfixturevalue("redis_url"), key=key)
            drop_redis_key(repo)
            repo.close()
    if tables:
        engine = sa.create_engine(request.getfixturevalue("postgres_url"))
        with engine.begin() as conn:
            for table in tables:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


@pytest.fixture(name="url")
def _url(store: str, make_url: Callable[..., str]) -> str:
    """A store of each kind holding :data:`HISTORY`."""
    url = make_url(store)
    write_history(url)
    return url


def run(runner: CliRunner, *args: str) -> Result:
    """Invoke the command with *args*."""
    return runner.invoke(app, list(args))


def run_json(runner: CliRunner, *args: str) -> Any:
    """Invoke the command with *args* and ``--json``; return the parsed document."""
    result = run(runner, *args, "--json")
    assert 0 == result.exit_code, result.output
    return json.loads(result.stdout)


def assert_usage_error(result: Result, *fragments: str) -> None:
    """Exit status 2, nothing on stdout, one line on stderr containing *fragments*."""
    assert 2 == result.exit_code, result.output
    assert "" == result.stdout
    lines = result.stderr.splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith("tasklog: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def line(offset: float, level: str, task: str, message: str) -> str:
    """The SPEC §4 log line of a record created at ``BASE + offset`` (local time)."""
    when = datetime.fromtimestamp(BASE + offset)
    stamp = when.strftime("%Y-%m-%d %H:%M:%S") + f".{when.microsecond // 1000:03d}"
    return f"[{stamp}] [{level}] [{task}] {message}"


# ------------------------------------------------------------------- help


class TestHelp:
    def test_help_names_the_repository_order(self, runner: CliRunner) -> None:
        """``tasklog --help`` says how the repository is chosen, in order."""
        result = run(runner, "--help")
        assert 0 == result.exit_code
        text = " ".join(result.stdout.split())
        order = ["--repo URL", "TASKLOG_REPO", "[tool.tasklog] in ./pyproject.toml",
                 "./tasklog.toml", "sqlite:///tasklog.db"]
        positions = [text.index(part) for part in order]
        assert sorted(positions) == positions

    def test_help_lists_every_command(self, runner: CliRunner) -> None:
        """Every command of §6 is listed."""
        result = run(runner, "--help")
        for command in ("tasks", "runs", "logs", "stats", "errors", "tail", "prune", "export",
                        "copy", "demo"):
            assert f"  {command} " in result.stdout

    def test_version(self, runner: CliRunner) -> None:
        """``--version`` prints the version."""
        result = run(runner, "--version")
        assert 0 == result.exit_code
        assert result.stdout.startswith("tasklog ")

    def test_usage_error_exits_2(self, runner: CliRunner) -> None:
        """An unknown option is typer's usage error: exit status 2."""
        assert 2 == run(runner, "tasks", "--bogus").exit_code


# ------------------------------------------------------------ resolution


class TestRepositoryChoice:
    def test_default_is_sqlite_in_the_current_directory(self, tmp_path: Path) -> None:
        """With nothing configured: sqlite:///tasklog.db."""
        assert ("sqlite:///tasklog.db", "default") == resolve_repo(None, tmp_path)

    def test_order(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--repo, then $TASKLOG_REPO, then pyproject.toml, then tasklog.toml."""
        (tmp_path / "tasklog.toml").write_text('repo = "csv:///from-toml.csv"\n')
        assert "csv:///from-toml.csv" == resolve_repo(None, tmp_path)[0]
        (tmp_path / "pyproject.toml").write_text(
            '[project]\nname = "x"\n[tool.tasklog]\nrepo = "sqlite:///from-pyproject.db"\n'
        )
        assert "sqlite:///from-pyproject.db" == resolve_repo(None, tmp_path)[0]
        monkeypatch.setenv("TASKLOG_REPO", "memory://")
        assert "memory://" == resolve_repo(None, tmp_path)[0]
        assert "sqlite:///option.db" == resolve_repo("sqlite:///option.db", tmp_path)[0]

    def test_pyproject_without_section_falls_through(self, tmp_path: Path) -> None:
        """A pyproject.toml without [tool.tasklog] does not stop the search."""
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
        (tmp_path / "tasklog.toml").write_text('repo = "csv:///t.csv"\n')
        assert "csv:///t.csv" == resolve_repo(None, tmp_path)[0]

    def test_commands_use_the_config_file(self, runner: CliRunner, tmp_path: Path) -> None:
        """A command reads the store named in ./tasklog.toml."""
        url = url_of("csv", tmp_path)
        write_history(url)
        (tmp_path / "tasklog.toml").write_text(f'repo = "{url}"\n')
        assert ["alpha", "beta", "gamma"] == [t["task_name"] for t in run_json(runner, "tasks")]

    def test_commands_use_the_environment(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A command reads the store named by $TASKLOG_REPO."""
        url = url_of("sqlite", tmp_path)
        write_history(url)
        monkeypatch.setenv("TASKLOG_REPO", url)
        assert 3 == len(run_json(runner, "tasks"))

    def test_bad_toml_is_one_line(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unreadable tasklog.toml is a usage error, not a traceback."""
        (tmp_path / "tasklog.toml").write_text("repo = \n")
        assert_usage_error(run(runner, "tasks"), "tasklog.toml")


# --------------------------------------------------------------- reading


class TestTasks:
    def test_json(self, runner: CliRunner, url: str) -> None:
        """Each task with its last action and time, as ISO 8601 with zone."""
        expected = [
            {"task_name": "alpha", "last_action": "fail",
             "last_created": "2024-03-04T12:01:43.500000+00:00"},
            {"task_name": "beta", "last_action": "inaction",
             "last_created": "2024-03-04T12:03:20.500000+00:00"},
            {"task_name": "gamma", "last_action": "run",
             "last_created": "2024-03-04T12:05:00+00:00"},
        ]
        assert expected == run_json(runner, "--repo", url, "tasks")

    def test_table(self, runner: CliRunner, url: str) -> None:
        """A table with a row per task, without colour codes when not a terminal."""
        result = run(runner, "--repo", url, "tasks")
        assert 0 == result.exit_code
        rows = [r for r in result.stdout.splitlines() if "alpha" in r or "beta" in r]
        assert 2 == len(rows)
        assert "fail" in rows[0]
        assert "\x1b[" not in result.stdout

    def test_memory_store_is_empty(self, runner: CliRunner) -> None:
        """memory:// holds nothing in a new process: an empty list."""
        assert [] == run_json(runner, "--repo", "memory://", "tasks")


class TestRuns:
    def test_json_newest_first(self, runner: CliRunner, url: str) -> None:
        """Runs newest first, with start, end, runtime in seconds and outcome."""
        expected = [
            {"run_id": "r2-bbbb", "task_name": "alpha",
             "start": "2024-03-04T12:01:40+00:00", "end": "2024-03-04T12:01:43.500000+00:00",
             "runtime": 3.5, "outcome": "fail"},
            {"run_id": "r1-aaaa", "task_name": "alpha",
             "start": "2024-03-04T12:00:00+00:00", "end": "2024-03-04T12:00:02+00:00",
             "runtime": 2.0, "outcome": "success"},
        ]
        assert expected == run_json(runner, "--repo", url, "runs", "alpha")

    def test_running_run_has_no_outcome(self, runner: CliRunner, url: str) -> None:
        """A run without a closing record: outcome, end and runtime are null."""
        expected = [{"run_id": "r4-dddd", "task_name": "gamma",
                     "start": "2024-03-04T12:05:00+00:00", "end": None, "runtime": None,
                     "outcome": None}]
        assert expected == run_json(runner, "--repo", url, "runs", "gamma")

    def test_limit(self, runner: CliRunner, url: str) -> None:
        """--limit N keeps the newest N runs."""
        assert ["r2-bbbb"] == [
            r["run_id"] for r in run_json(runner, "--repo", url, "runs", "alpha", "--limit", "1")
        ]

    def test_table(self, runner: CliRunner, url: str) -> None:
        """The table shows run id, duration and outcome."""
        result = run(runner, "--repo", url, "runs", "alpha")
        assert 0 == result.exit_code
        row = next(r for r in result.stdout.splitlines() if "r2-bbbb" in r)
        assert "3.500s" in row
        assert "fail" in row

    def test_unknown_task(self, runner: CliRunner, url: str) -> None:
        """An unknown task: one line naming the known tasks, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "runs", "nope"), "'nope'", "alpha")

    def test_bad_limit(self, runner: CliRunner, url: str) -> None:
        """--limit 0 is a bad option value."""
        assert_usage_error(run(runner, "--repo", url, "runs", "alpha", "--limit", "0"),
                           "--limit")


class TestLogs:
    def test_last_run_by_default(self, runner: CliRunner, url: str) -> None:
        """Without run ids: the lines of the task's last run, with the traceback."""
        result = run(runner, "--repo", url, "logs", "alpha")
        assert 0 == result.exit_code, result.output
        expected = [
            line(100, "INFO", "alpha", "Run started"),
            line(103.5, "ERROR", "alpha", "Run failed: ValueError: boom"),
            *TRACEBACK.splitlines(),
        ]
        assert expected == result.stdout.splitlines()

    def test_given_runs(self, runner: CliRunner, url: str) -> None:
        """Run ids (or unique prefixes) select runs, shown in the order given."""
        result = run(runner, "--repo", url, "logs", "alpha", "r1-aaaa", "r2")
        assert 0 == result.exit_code, result.output
        lines = result.stdout.splitlines()
        assert line(0, "INFO", "alpha", "Run started") == lines[0]
        assert line(1, "INFO", "alpha", "working") == lines[1]
        assert line(2, "INFO", "alpha", "Run succeeded") == lines[2]
        assert "" == lines[3]
        assert line(100, "INFO", "alpha", "Run started") == lines[4]

    def test_json(self, runner: CliRunner, url: str) -> None:
        """--json: the run's records as objects (times ISO 8601, runtime in seconds)."""
        records = run_json(runner, "--repo", url, "logs", "alpha", "r1-aaaa")
        assert ["run", "log", "success"] == [r["action"] for r in records]
        assert 2.0 == records[2]["runtime"]
        assert "2024-03-04T12:00:00+00:00" == records[2]["start"]
        assert BASE + 2 == records[2]["created"]

    def test_unknown_run(self, runner: CliRunner, url: str) -> None:
        """An unknown run id: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "logs", "alpha", "zzz"), "'zzz'")

    def test_unknown_task(self, runner: CliRunner, url: str) -> None:
        """An unknown task: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "logs", "nope"), "'nope'")


class TestStats:
    def test_json(self, runner: CliRunner, url: str) -> None:
        """Per-task figures and the total, runtimes in seconds (SPEC §6 shape)."""
        document = run_json(runner, "--repo", url, "stats")
        alpha = {"task_name": "alpha", "runs": 2, "successes": 1, "failures": 1, "other": 0,
                 "success_rate": 0.5, "mean_runtime": 2.75, "p50_runtime": 2.0,
                 "p95_runtime": 3.5, "max_runtime": 3.5}
        gamma = {"task_name": "gamma", "runs": 1, "successes": 0, "failures": 0, "other": 0,
                 "success_rate": None, "mean_runtime": None, "p50_runtime": None,
                 "p95_runtime": None, "max_runtime": None}
        total = {"runs": 4, "successes": 1, "failures": 1, "other": 1,
                 "success_rate": 0.5, "mean_runtime": 2.0, "p50_runtime": 2.0,
                 "p95_runtime": 3.5, "max_runtime": 3.5}
        assert ["alpha", "beta", "gamma"] == [t["task_name"] for t in document["tasks"]]
        assert alpha == document["tasks"][0]
        assert gamma == document["tasks"][2]
        assert total == document["total"]

    def test_task_and_since(self, runner: CliRunner, url: str) -> None:
        """--task keeps one task; --since keeps runs started since then."""
        only = run_json(runner, "--repo", url, "stats", "--task", "beta")
        assert ["beta"] == [t["task_name"] for t in only["tasks"]]
        recent = run_json(runner, "--repo", url, "stats", "--since", "2024-03-04T12:02:00+00:00")
        assert ["beta", "gamma"] == [t["task_name"] for t in recent["tasks"]]
        none = run_json(runner, "--repo", url, "stats", "--since", "1d")
        assert 0 == none["total"]["runs"]

    def test_table(self, runner: CliRunner, url: str) -> None:
        """The table has a row per task and a total row."""
        result = run(runner, "--repo", url, "stats")
        assert 0 == result.exit_code
        alpha = next(r for r in result.stdout.splitlines() if "alpha" in r)
        assert "50.0%" in alpha
        assert any("total" in r for r in result.stdout.splitlines())

    def test_rate_never_rounds_to_all_or_nothing(self) -> None:
        """A success rate shows one decimal, and is not shown as 100 % while a
        run failed (nor 0 % while one succeeded)."""
        assert (["99.6%", "99.9%", "100.0%", "0.1%", "0.0%", "50.0%", ""]
                == [rate_text(r) for r in (1494 / 1500, 9999 / 10000, 1.0, 1 / 10000,
                                          0.0, 0.5, None)])

    def test_bad_since(self, runner: CliRunner, url: str) -> None:
        """--since banana: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "stats", "--since", "banana"),
                           "--since", "banana")

    def test_unknown_task(self, runner: CliRunner, url: str) -> None:
        """--task with an unknown task: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "stats", "--task", "nope"), "'nope'")


class TestErrors:
    def test_json(self, runner: CliRunner, url: str) -> None:
        """fail and crash records with their tracebacks."""
        records = run_json(runner, "--repo", url, "errors")
        assert [("alpha", "fail", "r2-bbbb", TRACEBACK)] == [
            (r["task_name"], r["action"], r["run_id"], r["exc_text"]) for r in records
        ]

    def test_text(self, runner: CliRunner, url: str) -> None:
        """The text names the run and prints the log line and the traceback."""
        result = run(runner, "--repo", url, "errors")
        assert 0 == result.exit_code
        expected = [
            "# fail of alpha, run r2-bbbb",
            line(103.5, "ERROR", "alpha", "Run failed: ValueError: boom"),
            *TRACEBACK.splitlines(),
        ]
        assert expected == result.stdout.splitlines()

    def test_bad_limit(self, runner: CliRunner, url: str) -> None:
        """--limit -1: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "errors", "--limit", "-1"), "--limit")


class TestTail:
    def test_json(self, runner: CliRunner, url: str) -> None:
        """The newest N records, oldest first."""
        records = run_json(runner, "--repo", url, "tail", "-n", "3")
        assert [("beta", "run"), ("beta", "inaction"), ("gamma", "run")] == [
            (r["task_name"], r["action"]) for r in records
        ]

    def test_text(self, runner: CliRunner, url: str) -> None:
        """Log lines in the §4 format."""
        result = run(runner, "--repo", url, "tail", "-n", "1")
        assert [line(300, "INFO", "gamma", "Run started")] == result.stdout.splitlines()

    def test_task(self, runner: CliRunner, url: str) -> None:
        """--task keeps one task's records."""
        records = run_json(runner, "--repo", url, "tail", "--task", "beta")
        assert ["run", "inaction"] == [r["action"] for r in records]


# --------------------------------------------------------------- writing


class TestPrune:
    def test_dry_run_deletes_nothing(self, runner: CliRunner, url: str) -> None:
        """--dry-run counts what would go and leaves the store alone."""
        result = run(runner, "--repo", url, "prune", "--keep-runs", "1", "--dry-run")
        assert 0 == result.exit_code, result.output
        assert "Would delete 3 record(s)" in result.stdout
        assert 8 == len(run_json(runner, "--repo", url, "tail", "-n", "100"))

    def test_keep_runs(self, runner: CliRunner, url: str) -> None:
        """--keep-runs 1 deletes all but each task's newest run."""
        result = run(runner, "--repo", url, "prune", "--keep-runs", "1")
        assert 0 == result.exit_code, result.output
        assert "Deleted 3 record(s)." == result.stdout.strip()
        assert ["r2-bbbb"] == [r["run_id"] for r in run_json(runner, "--repo", url, "runs",
                                                                "alpha")]

    def test_older_than_and_task(self, runner: CliRunner, url: str) -> None:
        """--older-than takes an ISO time (or an age); --task limits the prune."""
        result = run(runner, "--repo", url, "prune", "--older-than",
                     "2024-03-04T12:04:00+00:00", "--task", "beta")
        assert "Deleted 2 record(s)." == result.stdout.strip()
        assert ["alpha", "gamma"] == [t["task_name"] for t in run_json(runner, "--repo", url,
                                                                         "tasks")]
        result = run(runner, "--repo", url, "prune", "--older-than", "30d", "--dry-run")
        assert "Would delete 6 record(s)" in result.stdout

    def test_bad_older_than(self, runner: CliRunner, url: str) -> None:
        """--older-than banana: one clear line, exit 2, nothing deleted."""
        assert_usage_error(run(runner, "--repo", url, "prune", "--older-than", "banana"),
                           "--older-than", "'banana'")
        assert 8 == len(run_json(runner, "--repo", url, "tail", "-n", "100"))

    def test_nothing_to_do(self, runner: CliRunner, url: str) -> None:
        """Neither --keep-runs nor --older-than: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "prune"), "--keep-runs")

    def test_negative_keep_runs(self, runner: CliRunner, url: str) -> None:
        """--keep-runs -1: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "prune", "--keep-runs", "-1"),
                           "--keep-runs")


class TestExport:
    def test_jsonl_to_stdout(self, runner: CliRunner, url: str) -> None:
        """JSON Lines, one record a line, in insertion order."""
        result = run(runner, "--repo", url, "export")
        assert 0 == result.exit_code
        records = [json.loads(x) for x in result.stdout.splitlines()]
        assert [r["action"] for r in HISTORY] == [r["action"] for r in records]

    def test_csv_file_reads_back(self, runner: CliRunner, url: str, tmp_path: Path) -> None:
        """A CSV export is a store tasklog reads, traceback and all."""
        out = tmp_path / "out.csv"
        result = run(runner, "--repo", url, "export", "--output", str(out))
        assert f"Exported 8 record(s) to {out}." == result.stdout.strip()
        assert run_json(runner, "--repo", url, "errors") == run_json(
            runner, "--repo", str(out), "errors"
        )

    def test_csv_to_stdout(self, runner: CliRunner, url: str) -> None:
        """--format csv: a header of the model's fields, then a row per record."""
        result = run(runner, "--repo", url, "export", "--format", "csv")
        lines = result.stdout.splitlines()
        assert ["task_name", "action", "created"] == lines[0].split(",")[:3]
        assert f"alpha,run,{BASE}" == ",".join(lines[1].split(",")[:3])

    def test_bad_format(self, runner: CliRunner, url: str) -> None:
        """--format xml: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", url, "export", "--format", "xml"), "'xml'")


class TestCopy:
    @pytest.mark.parametrize("target", STORES)
    def test_copy_everything(self, runner: CliRunner, url: str, target: str,
                             make_url: Callable[..., str]) -> None:
        """Every record arrives, in order, and reads back the same."""
        dst = make_url(target, name="copy")
        result = run(runner, "copy", url, dst)
        assert 0 == result.exit_code, result.output
        assert f"Copied 8 record(s) from {url} to {dst}." == result.stdout.strip()
        assert run_json(runner, "--repo", url, "tail", "-n", "100") == run_json(
            runner, "--repo", dst, "tail", "-n", "100"
        )

    def test_copy_many_in_batches(self, runner: CliRunner, store: str, tmp_path: Path,
                                  make_url: Callable[..., str]) -> None:
        """A history larger than one batch is copied whole."""
        src = make_url(store, name="big")
        write_history(src, [_record("t", "log", n, None, f"line {n}") for n in range(2500)],
                      model=MinimalRunRecord)
        dst = url_of("sqlite", tmp_path, name="big-copy")
        assert 0 == run(runner, "copy", src, dst).exit_code
        assert 2500 == len(open_repo(dst))

    def test_copy_appends_to_existing(self, runner: CliRunner, url: str, tmp_path: Path) -> None:
        """Copying twice appends twice (log records are append-only)."""
        dst = url_of("csv", tmp_path, name="twice")
        run(runner, "copy", url, dst)
        run(runner, "copy", url, dst)
        assert 16 == len(run_json(runner, "--repo", dst, "tail", "-n", "100"))

    def test_same_store(self, runner: CliRunner, url: str) -> None:
        """Copying a store onto itself: one line, exit 2."""
        assert_usage_error(run(runner, "copy", url, url), "same store")

    def test_missing_source(self, runner: CliRunner, tmp_path: Path) -> None:
        """A missing source: one line, exit 2, and the target is not created."""
        result = run(runner, "copy", f"sqlite:///{tmp_path / 'none.db'}", str(tmp_path / "x.csv"))
        assert_usage_error(result, "does not exist")
        assert not (tmp_path / "x.csv").exists()


class TestDemo:
    def test_default_repo(self, runner: CliRunner, tmp_path: Path) -> None:
        """``tasklog demo`` writes into ./tasklog.db and shows runs and statistics."""
        result = run(runner, "demo")
        assert 0 == result.exit_code, result.output
        assert (tmp_path / "tasklog.db").is_file()
        assert "Statistics" in result.stdout
        outcomes = {t["task_name"]: t["last_action"] for t in run_json(runner, "tasks")}
        assert {"nightly-report": "success", "fetch-prices": "fail",
                "cleanup-tmp": "inaction"} == outcomes
        errors = run_json(runner, "errors")
        assert errors[0]["exc_text"].startswith("Traceback (most recent call last):")
        assert errors[0]["exc_text"].endswith("ConnectionError: "
                                              "warehouse.example.com: connection refused")

    def test_logs_of_the_failed_run(self, runner: CliRunner) -> None:
        """After the demo, ``logs fetch-prices`` shows the failed run with its traceback."""
        run(runner, "demo")
        result = run(runner, "logs", "fetch-prices")
        assert "[ERROR] [fetch-prices]" in result.stdout
        assert "ConnectionError: warehouse.example.com: connection refused" in result.stdout

    @pytest.mark.parametrize("store", ["csv", "memory"])
    def test_other_stores(self, runner: CliRunner, store: str, tmp_path: Path) -> None:
        """The demo runs on CSV and memory too (memory shows, then forgets)."""
        result = run(runner, "--repo", url_of(store, tmp_path), "demo")
        assert 0 == result.exit_code, result.output
        total = next(r for r in result.stdout.splitlines() if "total" in r)
        assert "5" in total

    def test_into_an_existing_store(self, runner: CliRunner, url: str) -> None:
        """The demo appends to an existing store of another shape."""
        assert 0 == run(runner, "--repo", url, "demo").exit_code
        assert 6 == len(run_json(runner, "--repo", url, "tasks"))


# ---------------------------------------------------------- any model


class Custom(MinimalRunRecord):
    """A user's model with fields of its own."""

    user: int | None = None
    payload: dict[str, Any] | None = None


class TestAnyModel:
    def test_user_model_in_sql(self, runner: CliRunner, tmp_path: Path) -> None:
        """A table of a user's model is read with its own columns and types."""
        repo = SQLRepo(url=f"sqlite:///{tmp_path / 'c.db'}", table="jobs", model=Custom)
        repo.add_many([
            {"task_name": "a", "action": "run", "created": BASE, "run_id": "x", "user": 7,
             "payload": {"k": [1, 2]}},
            {"task_name": "a", "action": "success", "created": BASE + 1, "run_id": "x"},
        ])
        repo.close()
        url = f"sqlite:///{tmp_path / 'c.db'}"
        records = run_json(runner, "--repo", url, "--table", "jobs", "tail")
        assert {"task_name": "a", "action": "run", "created": BASE, "run_id": "x", "user": 7,
                "payload": {"k": [1, 2]}} == records[0]
        runs = run_json(runner, "--repo", f"{url}?table=jobs", "runs", "a")
        assert [("x", 1.0, "success")] == [(r["run_id"], r["runtime"], r["outcome"])
                                           for r in runs]

    def test_hand_written_csv(self, runner: CliRunner, tmp_path: Path) -> None:
        """A minimal hand-written CSV reads; runs need a run_id column (one line, exit 2)."""
        path = tmp_path / "hand.csv"
        path.write_text(f"task_name,action,created,note\nbackup,log,{BASE},hello\n")
        records = run_json(runner, "--repo", str(path), "tail")
        assert [{"task_name": "backup", "action": "log", "created": BASE,
                 "note": "hello"}] == records
        assert_usage_error(run(runner, "--repo", str(path), "runs", "backup"), "run_id")

    def test_store_without_run_id(self, runner: CliRunner, tmp_path: Path) -> None:
        """A MinimalRecord table lists tasks; runs, logs and demo say why they cannot (exit 2)."""
        url = url_of("sqlite", tmp_path)
        write_history(url, [{"task_name": "m", "action": "log", "created": BASE}],
                      model=MinimalRecord)
        assert [{"task_name": "m", "last_action": "log",
                 "last_created": "2024-03-04T12:00:00+00:00"}] == run_json(
            runner, "--repo", url, "tasks")
        for args in (["runs", "m"], ["logs", "m"], ["stats"], ["demo"]):
            assert_usage_error(run(runner, "--repo", url, *args), "run_id")

    def test_not_a_tasklog_table(self, runner: CliRunner, tmp_path: Path) -> None:
        """A table without task_name/action/created: one line, exit 2."""
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'o.db'}")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE other (a INTEGER)"))
        engine.dispose()
        result = run(runner, "--repo", f"sqlite:///{tmp_path / 'o.db'}?table=other", "tasks")
        assert_usage_error(result, "not a tasklog store", "task_name")


# --------------------------------------------------------------- errors


class TestStoreErrors:
    def test_unknown_scheme(self, runner: CliRunner) -> None:
        """An unknown URL scheme: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", "foo://bar", "tasks"), "'foo'")

    def test_not_a_url(self, runner: CliRunner) -> None:
        """Something that is no URL at all: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", "banana", "tasks"), "'banana'")

    def test_unparsable_url(self, runner: CliRunner) -> None:
        """A URL SQLAlchemy cannot parse: one line, exit 2."""
        assert_usage_error(run(runner, "--repo", "postgresql+psycopg://u@h:notaport/db",
                               "tasks"))

    def test_missing_sqlite_file_is_not_created(self, runner: CliRunner, tmp_path: Path) -> None:
        """Reading a database file that does not exist: exit 2, and no file appears."""
        assert_usage_error(run(runner, "tasks"), "tasklog.db", "does not exist")
        assert not (tmp_path / "tasklog.db").exists()

    def test_missing_table(self, runner: CliRunner, tmp_path: Path) -> None:
        """A missing table: one line naming the tables there are, exit 2."""
        url = url_of("sqlite", tmp_path)
        write_history(url)
        assert_usage_error(run(runner, "--repo", url, "--table", "nope", "tasks"),
                           "'nope'", "task_log")

    def test_table_on_csv(self, runner: CliRunner, tmp_path: Path) -> None:
        """--table with a CSV store: one line, exit 2."""
        url = url_of("csv", tmp_path)
        write_history(url)
        assert_usage_error(run(runner, "--repo", url, "--table", "t", "tasks"), "SQL")

    def test_missing_csv(self, runner: CliRunner, tmp_path: Path) -> None:
        """A CSV file that does not exist: one line, exit 2, and it is not created."""
        assert_usage_error(run(runner, "--repo", "gone.csv", "tail"), "gone.csv")
        assert not (tmp_path / "gone.csv").exists()


# ------------------------------------------------------------ helpers


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("90s", 90), ("15m", 900), ("12h", 43200), ("1d", 86400), ("30d", 2592000),
         ("2w", 1209600), ("1h30m", 5400), ("1.5h", 5400)],
    )
    def test_units(self, text: str, seconds: int) -> None:
        """Numbers with s, m, h, d, w (and sums of them)."""
        assert timedelta(seconds=seconds) == parse_duration(text)

    @pytest.mark.parametrize("text", ["banana", "", "10", "d1", "5y"])
    def test_rejects(self, text: str) -> None:
        """Anything else is a ValueError."""
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(text)


def test_format_record_without_level_or_message() -> None:
    """A record without levelname or message shows its action, ERROR for a failure."""
    record = MinimalRunRecord(task_name="t", action="fail", created=BASE)
    assert line(0, "ERROR", "t", "fail") == format_record(record)


# --------------------------------------------------------- subprocesses


def _command() -> list[str]:
    script = Path(sys.executable).with_name("tasklog")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tasklog"]


def test_console_script(tmp_path: Path) -> None:
    """The installed ``tasklog`` script reads a store and prints JSON; errors exit 2."""
    url = url_of("sqlite", tmp_path)
    write_history(url)
    env = {k: v for k, v in os.environ.items() if k != "TASKLOG_REPO"}
    done = subprocess.run([*_command(), "--repo", url, "runs", "alpha", "--json"],
                          capture_output=True, text=True, check=False, env=env)
    assert 0 == done.returncode, done.stderr
    assert ["r2-bbbb", "r1-aaaa"] == [r["run_id"] for r in json.loads(done.stdout)]
    bad = subprocess.run([*_command(), "--repo", "foo://x", "tasks"],
                         capture_output=True, text=True, check=False, env=env)
    assert 2 == bad.returncode
    assert 1 == len(bad.stderr.splitlines())


def test_python_m_tasklog(tmp_path: Path) -> None:
    """``python -m tasklog`` is the same command."""
    done = subprocess.run([sys.executable, "-m", "tasklog", "--help"],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert 0 == done.returncode
    assert "TASKLOG_REPO" in done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_tail_follow_sees_another_process(store: str, make_url: Callable[..., str]) -> None:
    """``tail -f`` prints records another process appends, and Ctrl-C exits 0."""
    url = make_url(store)
    write_history(url)
    env = {**{k: v for k, v in os.environ.items() if k != "TASKLOG_REPO"},
           "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tasklog", "--repo", url, "tail", "-f", "-n", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None
    repo = open_repo(url, model=TaskRunRecord)
    seen: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60  # a guard against hanging, not a timing assertion
        n = 0
        while time.monotonic() < deadline and not any(
            r.get("message", "").startswith("appended") for r in seen
        ):
            ready, _, _ = select.select([child.stdout], [], [], 0.2)
            if ready:
                text = child.stdout.readline()
                if text:
                    seen.append(json.loads(text))
                    continue
            if seen:  # following: append a record from this process
                n += 1
                repo.add({"task_name": "delta", "action": "log", "created": time.time(),
                          "message": f"appended {n}"})
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        repo.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "gamma" == seen[0]["task_name"]
    assert "appended" == seen[1]["message"].split()[0]
    assert 0 == child.returncode, stderr
    assert "Traceback" not in stderr


def test_follower_catches_late_records(tmp_path: Path) -> None:
    """``tail -f`` shows a record stored late with an earlier time, once."""
    from tasklog.cli.reading import Follower as _Follower

    url = url_of("sqlite", tmp_path)
    write_history(url)
    repo = open_repo(url, model=TaskRunRecord)
    follower = _Follower(repo, {})
    assert [] == follower.poll()
    repo.add(_record("late", "log", 295, None, "written late"))
    assert ["written late"] == [r.message for r in follower.poll()]
    assert [] == follower.poll()
    repo.close()


def test_follower_reads_the_redis_change_feed(redis_url: str) -> None:
    """On a store with a change feed (RedisRepo), ``tail -f`` reads what follows its
    cursor, filtered by the task, each record once, without a window of time."""
    from tasklog.cli.reading import Follower as _Follower
    from tasklog.repos.redis_store import RedisRepo

    repo: RedisRepo[Any] = RedisRepo(redis_url, key=f"feed_{uuid.uuid4().hex[:8]}")
    try:
        repo.add(_record("alpha", "run", 100, "r1", "before"))
        follower = _Follower(repo, {"task_name": "alpha"})
        assert follower.feed is not None
        follower.mark([repo.filter_by().last()])
        assert [] == follower.poll()
        repo.add(_record("beta", "run", 10, "r2", "other task"))
        repo.add(_record("alpha", "log", 5, "r1", "old time, new record"))
        assert ["old time, new record"] == [r.message for r in follower.poll()]
        assert [] == follower.poll()
    finally:
        drop_redis_key(repo)
        repo.close()
